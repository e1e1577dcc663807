"""OpenTelemetry stays optional: nothing loads it unless fsm.otel is imported, and runs and
the relay work with it missing altogether."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
{block}
from adapters.memory import FakePublisher
from adapters.sqlalchemy import SqlUnitOfWork, create_engine, init_db
from fsm import PersistentMachine
from fsm.examples import ping
from fsm.outbox import OutboxMessage
from fsm.relay import OutboxRelay

engine = create_engine({url!r})
init_db(engine)
run = PersistentMachine(ping, SqlUnitOfWork(engine)).start().send("start").send("finish")
assert run.finished
uow = SqlUnitOfWork(engine)
with uow:
    uow.outbox.add(OutboxMessage("e-1", "topic", "k", b"{{}}"))
publisher = FakePublisher()
OutboxRelay(uow, publisher).run(until_idle=True)
assert [m.event_id for m in publisher.sent] == ["e-1"]
loaded = sorted(
    name for name, module in sys.modules.items()
    if name.split(".")[0] == "opentelemetry" and module is not None  # None: blocked
)
print("loaded:", loaded)
try:
    import fsm.otel
except ImportError as error:
    print("fsm.otel:", error)
"""


def run_script(tmp_path: Path, *, block: bool) -> str:
    url = f"sqlite:///{tmp_path / 'fsm.sqlite3'}"
    blocking = "sys.modules['opentelemetry'] = None" if block else ""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(block=blocking, url=url)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class TestOptional:
    """The engine, a persistent run and the relay never need opentelemetry."""

    def test_nothing_loaded_unless_enabled(self, tmp_path: Path) -> None:
        """With the API installed, a run and the relay load none of it; fsm.otel does."""
        out = run_script(tmp_path, block=False)
        assert "loaded: []" in out
        assert "fsm.otel:" not in out  # importing it worked

    def test_works_with_the_extra_absent(self, tmp_path: Path) -> None:
        """With opentelemetry missing, the same work passes, and fsm.otel says what to
        install."""
        out = run_script(tmp_path, block=True)
        assert "loaded: []" in out
        assert (
            "fsm.otel: fsm.otel needs the OpenTelemetry API: "
            "pip install 'fsm-orchestrator[otel]'" in out
        )
