#!/usr/bin/env bash
# Contract test of the settings API: serves the router locally (the same code as the
# Lambda function, on an in-memory store seeded with a halted job and ExportErrors items)
# and runs schemathesis against openapi.yaml. Fails on any 5xx, any response that breaks
# the schema, and any undocumented status code or content type.
# One worker: CPython 3.11 can fail parsing source concurrently ("AST constructor
# recursion depth mismatch"), which schemathesis' generator does from several threads.
#
#   SCHEMATHESIS_MAX_EXAMPLES=N   examples per operation and phase (default 50)
#   SCHEMATHESIS_SEED=N           random seed (default: fixed, so runs are reproducible)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

schemathesis_version="4.32.5"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null || true)" != "schemathesis, version $schemathesis_version" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

cargo build --quiet --locked -p crm-export-api --bin crm-export-api-local
server_bin="${CARGO_TARGET_DIR:-$root/target}/debug/crm-export-api-local"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A fresh secret per run; the token it signs lives only as long as the server.
CRM_EXPORT_API_JWT_SECRET="$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
export CRM_EXPORT_API_JWT_SECRET
# Port 0: the server picks a free loopback port and prints it.
"$server_bin" --port 0 --print-token --other-tenant globex >"$work/server.out" 2>"$work/server.log" &
server_pid=$!

url="" token=""
for _ in $(seq 1 100); do
  url="$(sed -n 's/^CRM_EXPORT_API_URL=//p' "$work/server.out")"
  token="$(sed -n 's/^CRM_EXPORT_API_TOKEN=//p' "$work/server.out")"
  if [ -n "$url" ] && [ -n "$token" ]; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the local API server exited:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$url" ] || [ -z "$token" ]; then
  echo "the local API server did not come up in 10 s" >&2
  cat "$work/server.log" >&2
  exit 1
fi
echo "local API at $url"

status=0
"$venv/bin/schemathesis" --no-color run "$here/openapi.yaml" \
  --url "$url" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,ignored_auth \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --seed "${SCHEMATHESIS_SEED:-20260301}" \
  --workers 1 \
  --request-timeout 10 \
  --generation-database none \
  || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 50 lines)" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
