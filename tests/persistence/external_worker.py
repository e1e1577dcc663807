"""A worker process for the external-step tests: resume a capture run when told.

    python -m tests.persistence.external_worker URL RUN_ID CALLS SECONDS LEASE [local]

Prints 'ready', waits for a line on stdin, resumes the run, then prints 'done STATE',
'claimed OWNER' or 'conflict'. With 'local', the capture runs as a local action (inside
its step's transaction), for the tests' control.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

from adapters.sqlalchemy import SqlUnitOfWork, create_engine
from fsm import ConcurrencyError, PersistentMachine
from fsm.ports import RunClaimed
from tests.persistence.external_support import Gateway, local_machine, machine


def main(url: str, run_id: str, calls: str, seconds: str, lease: str, *kind: str) -> None:
    engine = create_engine(url)
    uow = SqlUnitOfWork(engine)
    worker = f"worker-{os.getpid()}"
    gateway = Gateway(Path(calls), worker=worker, seconds=float(seconds), uow=uow)
    runs = PersistentMachine(
        local_machine if kind == ("local",) else machine,
        uow,
        steps=gateway,
        worker=worker,
        lease=timedelta(seconds=float(lease)),
    )
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        run = runs.resume(run_id)
    except RunClaimed as error:
        print(f"claimed {error.owner}", flush=True)
    except ConcurrencyError:
        print("conflict", flush=True)
    else:
        print(f"done {run.state}", flush=True)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main(*sys.argv[1:])
