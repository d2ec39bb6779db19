#!/usr/bin/env python3
"""The peer baseline of the benchmark: the exporter a team would typically write with
simple-salesforce. It reads the records (NDJSON, one object of Contact fields per line),
logs in with the OAuth 2.0 client-credentials flow, and upserts the records sequentially
in sObject Collections calls of 200 (allOrNone false), one call after the other.

simple-salesforce's own client-credentials login builds
https://{domain}.salesforce.com/services/oauth2/token, which cannot point at a local
simulator, so the token is fetched with requests and handed to
Salesforce(instance_url=..., session_id=...), as its docs show for tokens obtained
elsewhere. TLS is verified against the CA in REQUESTS_CA_BUNDLE (set by the harness).

Prints one JSON line with its figures (times from time.perf_counter(), peak RSS from
getrusage). Exit 1 when a record was refused or a call failed.

    export_peer.py --records FILE --login-url https://127.0.0.1:PORT \
        --client-id ID --client-secret SECRET [--limit N]
"""

import argparse
import json
import resource
import sys
import time

import requests
from simple_salesforce import Salesforce


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", required=True, help="NDJSON file of records")
    p.add_argument("--login-url", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--object", default="Contact")
    p.add_argument("--external-id", default="External_Id__c")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--api-version", default="62.0")
    p.add_argument("--limit", type=int, default=None, help="only the first N records")
    args = p.parse_args()

    started = time.perf_counter()
    records = []
    with open(args.records, encoding="utf-8") as f:
        for line in f:
            if args.limit is not None and len(records) >= args.limit:
                break
            line = line.strip()
            if line:
                records.append(json.loads(line))
    read_done = time.perf_counter()

    token = requests.post(
        args.login_url.rstrip("/") + "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": args.client_id,
            "client_secret": args.client_secret,
        },
        timeout=60,
    )
    token.raise_for_status()
    auth = token.json()
    sf = Salesforce(
        instance_url=auth["instance_url"],
        session_id=auth["access_token"],
        version=args.api_version,
    )
    login_done = time.perf_counter()

    path = f"composite/sobjects/{args.object}/{args.external_id}"
    accepted = failed = calls = 0
    codes = {}
    for i in range(0, len(records), args.batch_size):
        chunk = records[i : i + args.batch_size]
        body = {
            "allOrNone": False,
            "records": [{"attributes": {"type": args.object}, **r} for r in chunk],
        }
        results = sf.restful(path, method="PATCH", json=body, timeout=120)
        calls += 1
        for r in results or []:
            if r.get("success"):
                accepted += 1
            else:
                failed += 1
                for e in r.get("errors") or []:
                    code = e.get("statusCode", "UNKNOWN")
                    codes[code] = codes.get(code, 0) + 1
    done = time.perf_counter()

    print(
        json.dumps(
            {
                "records": len(records),
                "accepted": accepted,
                "failed": failed,
                "failed_by_code": codes,
                "api_calls": calls,
                "read_secs": read_done - started,
                "login_secs": login_done - read_done,
                "upsert_secs": done - login_done,
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        ),
        flush=True,
    )
    return 0 if failed == 0 and accepted == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
