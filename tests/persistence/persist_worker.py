"""A separate process for the concurrency tests: load a run, wait for the word, advance it."""

from __future__ import annotations

import sys

from adapters.sqlalchemy import create_engine
from fsm import ConcurrencyError
from tests.persistence.persist_support import persistent


def main(url: str, run_id: str, how: str) -> None:
    """Print 'loaded', wait for a line on stdin, then 'won V' or 'conflict RUN EXPECTED FOUND'."""
    engine = create_engine(url)
    run = persistent(engine).load(run_id)
    print("loaded", flush=True)
    sys.stdin.readline()
    try:
        if how == "send":
            run.send("go")
        else:
            run.advance()
    except ConcurrencyError as error:
        print(f"conflict {error.run_id} {error.expected} {error.found}", flush=True)
    else:
        print(f"won {run.version}", flush=True)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main(*sys.argv[1:4])
