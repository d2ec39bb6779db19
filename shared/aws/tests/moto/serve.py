"""Runs moto's server app (the one `moto_server` runs) with requests serialised.

Usage: python serve.py HOST PORT

Why not plain `moto_server`: it serves requests on parallel threads, but moto's
TransactWriteItems snapshots all tables with deepcopy and restores that snapshot when a
condition fails. Under concurrent requests the snapshot crashes ("dictionary changed size
during iteration", HTTP 500) or the restore undoes other clients' committed writes. DynamoDB
itself serialises conflicting writes, so serialising moto's requests is the faithful model;
the clients still interleave their read-check-write rounds, which is what the concurrency
tests exercise. Connections stay threaded (HTTP/1.1 keep-alive works), only the handling of
one request at a time is behind a lock.

Also, moto's TransactWriteItems deep-copies a table once per *item* of the transaction (as
the rollback snapshot), so a 100-item transaction on a 10,000-item table copies a million
items. The patch below makes it copy each table once per transaction: the copies are all
taken before any write is applied, so they are identical and the behaviour is unchanged.
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple



def _copy_tables_once_per_transaction():
    import copy

    import moto.dynamodb.models as models
    from moto.dynamodb.models.table import Table

    if getattr(models, "copy", None) is not copy or not hasattr(models.DynamoDBBackend, "transact_write_items"):
        print("serve.py: moto internals changed; transactions are not sped up", file=sys.stderr)
        return

    class CopyEachTableOnce:
        cache = None

        def deepcopy(self, obj, memo=None):
            if self.cache is not None and isinstance(obj, Table):
                if id(obj) not in self.cache:
                    self.cache[id(obj)] = copy.deepcopy(obj)
                return self.cache[id(obj)]
            return copy.deepcopy(obj, memo)

        def __getattr__(self, name):
            return getattr(copy, name)

    shim = CopyEachTableOnce()
    models.copy = shim
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, *args, **kwargs):
        shim.cache = {}
        try:
            return original(self, *args, **kwargs)
        finally:
            shim.cache = None

    models.DynamoDBBackend.transact_write_items = transact_write_items


_copy_tables_once_per_transaction()
_lock = threading.Lock()
_app = DomainDispatcherApplication(create_backend_app)


def serialised(environ, start_response):
    with _lock:
        # Produce the whole body inside the lock: moto builds it from shared state.
        return [b"".join(_app(environ, start_response))]


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    run_simple(host, port, serialised, threaded=True)
