"""The generic relay (fsm.relay) on a second outbox flow, not the user status one: invoices
sent to customers, three relays at once on SQLite and PostgreSQL, per-customer order kept,
failed attempts retried, a customer nobody can reach dead-lettered, every run settled."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import pytest
from sqlalchemy import Engine

from adapters.sqlalchemy import SqlUnitOfWork
from fsm import Machine, PersistentMachine, State
from fsm.outbox import (
    DeadLettered,
    Delivery,
    OutboxMessage,
    OutboxUnitOfWork,
    Published,
    PublishError,
    PublishFailed,
)
from fsm.persistence import Effect
from fsm.relay import OutboxRelay, RelaySettings


class Invoice(StrEnum):
    ISSUING = "issuing"
    SENDING = "sending"
    SENT = "sent"
    UNDELIVERABLE = "undeliverable"


@dataclass(frozen=True)
class Queued:
    """The invoice is in the outbox."""

    event_id: str


class InvoiceSteps(Protocol):
    def issue(self, context: dict[str, Any]) -> Queued: ...


invoices: Machine[Invoice, InvoiceSteps] = Machine(
    "invoices",
    steps=InvoiceSteps,
    states=[
        State(Invoice.ISSUING, initial=True, action=InvoiceSteps.issue),
        State(Invoice.SENDING),
        State(Invoice.SENT, final=True),
        State(Invoice.UNDELIVERABLE, final=True, failure=True),
    ],
    transitions=[
        (Invoice.ISSUING, Queued, Invoice.SENDING),
        (Invoice.SENDING, Published, Invoice.SENT),
        (Invoice.SENDING, PublishFailed, Invoice.SENDING),
        (Invoice.SENDING, DeadLettered, Invoice.UNDELIVERABLE),
    ],
)


class Issuer:
    """The invoices' collaborator: puts the invoice in the outbox, in the step's transaction."""

    def __init__(self, uow: OutboxUnitOfWork) -> None:
        self.uow = uow

    def issue(self, context: dict[str, Any]) -> Queued:
        event_id = f"invoice-{context['number']}"
        self.uow.outbox.add(
            OutboxMessage(
                event_id,
                "invoices",
                key=context["customer"],
                value=str(context["number"]).encode(),
                run_id=context["run_id"],
            )
        )
        return Queued(event_id)


class InvoiceSettler:
    """The invoices' settle hook: a relay's outcome is sent to the invoice's run."""

    machine = invoices.name

    def __init__(self, uow: OutboxUnitOfWork) -> None:
        self.runs = PersistentMachine(invoices, uow)

    def settle(self, message: OutboxMessage, outcome: Delivery, effect: Effect) -> bool:
        assert message.run_id is not None
        run = self.runs.load(message.run_id)
        if run.finished:
            return False
        run.send(outcome, effect=effect)
        return True

    def finish(self, run_id: str, outcome: Published | DeadLettered) -> None:
        self.runs.send(run_id, outcome)

    def settle_many(self, pairs: Sequence[tuple[OutboxMessage, Delivery]], effect: Effect) -> None:
        self.runs.send_many([(str(m.run_id), outcome) for m, outcome in pairs], effect=effect)


class Mailer:
    """A broker stand-in shared by the relays: fails each invoice's first attempt when its
    number is a multiple of 3, and every attempt for customer 'gone'."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: list[tuple[str, int]] = []
        self.tried: set[str] = set()

    def publish(self, message: OutboxMessage) -> None:
        number = int(message.value)
        with self.lock:
            first = message.event_id not in self.tried
            self.tried.add(message.event_id)
            if message.key == "gone" or (first and number % 3 == 0):
                raise PublishError(f"no answer for invoice {number}")
            self.delivered.append((message.key, number))


CUSTOMERS = ("ada", "bob", "cy", "di")
SETTINGS = RelaySettings(
    batch_size=5,
    lease_seconds=20,
    publish_timeout=5,
    max_attempts=3,
    backoff_initial=0.01,
    backoff_max=0.05,
    idle_interval=0.01,
)


@pytest.fixture
def issued(engine: Engine) -> dict[str, int]:
    """40 invoices over four customers and two for 'gone': run id -> invoice number."""
    uow = SqlUnitOfWork(engine)
    runs = PersistentMachine(invoices, uow, steps=Issuer(uow))
    made: dict[str, int] = {}
    for number in range(1, 43):
        customer = CUSTOMERS[number % 4] if number <= 40 else "gone"
        run_id = f"inv-{number}"
        runs.start({"number": number, "customer": customer, "run_id": run_id}, run_id=run_id)
        made[run_id] = number
    return made


def test_three_relays_deliver_in_order_and_settle_every_run(
    engine: Engine, issued: dict[str, int]
) -> None:
    mailer = Mailer()
    relays = []
    for index in range(3):
        uow = SqlUnitOfWork(engine)
        relays.append(
            OutboxRelay(
                uow,
                mailer,
                settler=InvoiceSettler(uow),
                settings=SETTINGS,
                owner=f"relay-{index}",
            )
        )
    reports = []
    threads = [
        threading.Thread(
            target=lambda r=relay: reports.append(r.run(until_idle=True, max_seconds=60))
        )
        for relay in relays
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert len(reports) == 3

    for customer in CUSTOMERS:
        numbers = [n for key, n in mailer.delivered if key == customer]
        assert numbers == sorted(set(numbers)), f"{customer}: {numbers}"  # order, no repeat
        assert len(numbers) == 10
    runs = PersistentMachine(invoices, SqlUnitOfWork(engine))
    states = {run_id: runs.load(run_id).state for run_id in issued}
    assert [run_id for run_id, state in states.items() if state != Invoice.SENT] == [
        "inv-41",
        "inv-42",
    ]
    assert states["inv-41"] == states["inv-42"] == Invoice.UNDELIVERABLE
    assert sum(r.dead for r in reports) == 2
    assert sum(r.published for r in reports) == 40
    assert sum(r.failed for r in reports) == 13 + 2 * (SETTINGS.max_attempts - 1)
    retried = runs.load("inv-3")
    assert [t.trigger for t in retried.history] == [Queued, PublishFailed, Published]


def test_a_relay_without_a_settle_hook_works_the_outbox_alone(engine: Engine) -> None:
    """Messages with no run: published and marked, nothing else is asked of the relay."""
    uow = SqlUnitOfWork(engine)
    with uow:
        for number in range(1, 4):
            uow.outbox.add(OutboxMessage(f"m{number}", "notes", "k", str(number).encode()))
    mailer = Mailer()
    report = OutboxRelay(uow, mailer, settings=SETTINGS).run(until_idle=True, max_seconds=30)
    assert (report.published, report.failed) == (3, 1)
    assert mailer.delivered == [("k", 1), ("k", 2), ("k", 3)]
    with uow:
        assert uow.outbox.counts() == {"pending": 0, "published": 3, "dead": 0}
