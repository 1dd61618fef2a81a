"""Run ``epm-spark ARGS`` in this process with a fault at one table's Delta commit (for test_faults.py).

    python tests/fault_child.py TABLE FAULT -- [GLOBAL OPTIONS] VERB ARGS

FAULT is one of:

* ``pause``: print ``FAULT pause TABLE`` when the job is about to commit TABLE (its Parquet
  files are written, the commit is not) and wait there, for the parent to SIGKILL it;
* ``kill:SECONDS``: SIGKILL this process SECONDS after the commit of TABLE has started
  (0 lands before delta-rs writes the log entry, larger values during or after it);
* ``barrier:DIR``: create ``DIR/ready-<pid>`` with the snapshot the commit is based on already
  loaded, then wait for ``DIR/go``, so two processes commit to TABLE at the same moment;
* ``gate:DIR``: the same, before the commit looks at the table at all (two first writes race
  to create it).

Only the commit entry points are wrapped; the job itself is the real CLI code.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path


def _at_commit(uri: str, table: str, fault: str) -> None:
    if Path(uri).name != table:
        return
    kind, _, arg = fault.partition(":")
    if kind == "pause":
        print(f"FAULT pause {table}", flush=True)
        time.sleep(3600)
    elif kind == "kill":
        delay = float(arg)
        print(f"FAULT kill {table} after {delay} s", flush=True)
        if delay <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
    elif kind in ("barrier", "gate"):
        folder = Path(arg)
        (folder / f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 300
        while not (folder / "go").exists():
            if time.monotonic() > deadline:
                raise SystemExit("barrier: no go within 300 s")
            time.sleep(0.005)
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def install(table: str, fault: str) -> None:
    import deltalake
    import deltalake.transaction as transaction

    from epm_spark.io import delta

    if fault.startswith("gate:"):
        commit = delta._commit

        def gated_commit(uri, *args, **kwargs):
            _at_commit(uri, table, fault)
            return commit(uri, *args, **kwargs)

        delta._commit = gated_commit
        return

    create, write = transaction.create_table_with_add_actions, deltalake.DeltaTable.create_write_transaction

    def create_table_with_add_actions(table_uri, *args, **kwargs):
        _at_commit(table_uri, table, fault)
        return create(table_uri, *args, **kwargs)

    def create_write_transaction(self, *args, **kwargs):
        _at_commit(self.table_uri, table, fault)
        return write(self, *args, **kwargs)

    transaction.create_table_with_add_actions = create_table_with_add_actions
    deltalake.DeltaTable.create_write_transaction = create_write_transaction


if __name__ == "__main__":
    table, fault, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: fault_child.py TABLE FAULT -- ARGS"
    install(table, fault)
    from epm_spark.cli import main

    sys.exit(main(argv))
