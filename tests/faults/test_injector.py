"""The fault injector: it counts, fires once, rolls back when transient, commits a lost ack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, Table, func, insert, select
from sqlalchemy.exc import OperationalError

from adapters.sqlalchemy import create_engine
from tests.faults.injector import Fault, FaultInjector

probe_metadata = MetaData()
probe = Table("fault_probe", probe_metadata, Column("id", Integer, primary_key=True))


@pytest.fixture
def probe_engine(db_url: str) -> Iterator[Engine]:
    """An engine made as the adapters make theirs, with one table of its own."""
    engine = create_engine(db_url)
    probe_metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def injector(probe_engine: Engine) -> Iterator[FaultInjector]:
    """An injector on the probe engine, detached afterwards."""
    attached = FaultInjector(probe_engine)
    yield attached
    attached.detach()


def stored(db_url: str) -> list[int]:
    """The probe rows, read by an engine of its own (another process would see the same)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(probe.c.id).order_by(probe.c.id)).scalars())
    finally:
        engine.dispose()


def write(engine: Engine, *ids: int) -> None:
    """One transaction inserting `ids`, one statement each."""
    with engine.begin() as connection:
        for row_id in ids:
            connection.execute(insert(probe).values(id=row_id))


def driver_connection(connection: Connection) -> object:
    """The driver's own connection under a SQLAlchemy one."""
    return connection.connection.dbapi_connection


class TestFault:
    """A Fault names one statement or commit and how it breaks."""

    def test_names_read_as_case_ids(self) -> None:
        """str() gives the point, the number and the kind, as test ids spell them."""
        assert str(Fault("stmt", 7)) == "stmt-7-transient"
        assert str(Fault("commit", 2, "lost-ack")) == "commit-2-lost-ack"

    @pytest.mark.parametrize(
        ("point", "number", "kind", "message"),
        [
            ("stmt", 1, "lost-ack", "a lost acknowledgement is a commit's fault"),
            ("stmt", 0, "transient", "number must be a positive integer, got 0"),
            ("row", 1, "transient", "point must be 'stmt' or 'commit', got 'row'"),
            ("commit", 1, "slow", "kind must be 'transient' or 'lost-ack', got 'slow'"),
        ],
    )
    def test_refuses_what_it_cannot_do(
        self, point: str, number: int, kind: str, message: str
    ) -> None:
        """A fault that means nothing is refused with the reason."""
        with pytest.raises(ValueError, match=message):
            Fault(point, number, kind)  # type: ignore[arg-type]


class TestCounting:
    """Unarmed, the injector only counts."""

    def test_counts_statements_and_commits(
        self, probe_engine: Engine, injector: FaultInjector
    ) -> None:
        """Two inserts in one transaction: two statements (plus SQLite's BEGIN), one commit."""
        write(probe_engine, 1, 2)
        inserts = [s for s in injector.statements if not s.startswith("BEGIN")]
        assert [s.split()[0] for s in inserts] == ["INSERT", "INSERT"]
        assert injector.commits == 1
        assert injector.fired is None

    def test_arming_counts_from_zero(self, probe_engine: Engine, injector: FaultInjector) -> None:
        """arm() forgets what came before, so numbers count from the armed moment."""
        write(probe_engine, 1)
        injector.arm(Fault("commit", 5))
        assert (injector.statements, injector.commits) == ([], 0)

    def test_a_fault_past_the_end_never_fires(
        self, probe_engine: Engine, injector: FaultInjector, db_url: str
    ) -> None:
        """Armed beyond what runs, nothing breaks and `fired` stays None."""
        injector.arm(Fault("stmt", 99))
        write(probe_engine, 1)
        assert injector.fired is None
        assert stored(db_url) == [1]


class TestTransientStatement:
    """A transient fault at a statement: the transaction is lost, the connection dropped."""

    def test_rolls_back_and_drops_the_connection(
        self, probe_engine: Engine, injector: FaultInjector, db_url: str
    ) -> None:
        """The second insert fails as a lost connection; the first one is not stored."""
        write(probe_engine, 1)
        statements = [s for s in injector.statements if not s.startswith("BEGIN")]
        second = len(injector.statements) - len(statements) + 2  # SQLite's BEGIN counts too
        injector.arm(Fault("stmt", second))
        with pytest.raises(OperationalError) as caught, probe_engine.begin() as connection:
            broken = driver_connection(connection)
            connection.execute(insert(probe).values(id=2))
            connection.execute(insert(probe).values(id=3))
        assert caught.value.connection_invalidated
        assert "injected fault: the connection was lost (statement" in str(caught.value)
        assert injector.fired is not None and "INSERT INTO fault_probe" in injector.fired
        assert stored(db_url) == [1]
        with probe_engine.connect() as connection:
            assert driver_connection(connection) is not broken  # the pool did not reuse it

    def test_fires_once(self, probe_engine: Engine, injector: FaultInjector, db_url: str) -> None:
        """After firing it is disarmed: the same transaction run again commits."""
        injector.arm(Fault("stmt", 1))
        with pytest.raises(OperationalError):
            write(probe_engine, 1)
        write(probe_engine, 1)
        assert stored(db_url) == [1]


class TestCommitFaults:
    """At a commit: a transient fault loses the transaction, a lost ack keeps it."""

    def test_transient_commit_rolls_back(
        self, probe_engine: Engine, injector: FaultInjector, db_url: str
    ) -> None:
        """The commit never reaches the database: nothing of the transaction is stored."""
        injector.arm(Fault("commit", 1))
        with pytest.raises(OperationalError) as caught:
            write(probe_engine, 1, 2)
        assert caught.value.connection_invalidated
        assert injector.fired == "commit 1 (transient)"
        assert stored(db_url) == []
        write(probe_engine, 3)
        assert stored(db_url) == [3]

    def test_lost_acknowledgement_really_commits(
        self, probe_engine: Engine, injector: FaultInjector, db_url: str
    ) -> None:
        """The caller sees the commit fail, yet another connection finds the rows stored."""
        injector.arm(Fault("commit", 1, "lost-ack"))
        with pytest.raises(OperationalError) as caught, probe_engine.begin() as connection:
            broken = driver_connection(connection)
            connection.execute(insert(probe).values(id=1))
            connection.execute(insert(probe).values(id=2))
        assert caught.value.connection_invalidated
        assert injector.fired == "commit 1 (lost-ack)"
        assert stored(db_url) == [1, 2]
        with probe_engine.connect() as connection:
            assert driver_connection(connection) is not broken
            count = connection.execute(select(func.count()).select_from(probe)).scalar_one()
        assert count == 2

    def test_second_commit_is_the_one_broken(
        self, probe_engine: Engine, injector: FaultInjector, db_url: str
    ) -> None:
        """Commits are numbered: the first goes through, the second is lost."""
        injector.arm(Fault("commit", 2))
        write(probe_engine, 1)
        with pytest.raises(OperationalError):
            write(probe_engine, 2)
        assert stored(db_url) == [1]
        assert injector.commits == 2
