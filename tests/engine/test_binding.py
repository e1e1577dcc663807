"""Binding: one definition whose actions are methods of a steps protocol, given per run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from adapters.memory import InMemoryUnitOfWork
from fsm import BindError, DefinitionError, Machine, PersistentMachine, State
from fsm.interop import to_statemachine


@dataclass(frozen=True)
class Captured:
    amount: int


@dataclass(frozen=True)
class Declined:
    reason: str


class PaymentSteps(Protocol):
    """What the payment flow's actions call."""

    def capture(self, context: dict[str, Any]) -> Captured | Declined: ...

    def notify(self, context: dict[str, Any]) -> Captured: ...


payment = Machine(
    "payment",
    steps=PaymentSteps,
    states=[
        State("capturing", initial=True, action=PaymentSteps.capture),
        State("notifying", action=PaymentSteps.notify),
        State("done", final=True),
        State("declined", final=True, failure=True),
    ],
    transitions=[
        ("capturing", Captured, "notifying"),
        ("capturing", Declined, "declined"),
        ("notifying", Captured, "done"),
    ],
)


class Gateway:
    """A scripted collaborator that records its calls."""

    def __init__(self, name: str, declines: bool = False) -> None:
        self.name = name
        self.declines = declines
        self.calls: list[str] = []

    def capture(self, context: dict[str, Any]) -> Captured | Declined:
        self.calls.append(f"{self.name}:capture")
        return Declined("card") if self.declines else Captured(context["amount"])

    def notify(self, context: dict[str, Any]) -> Captured:
        self.calls.append(f"{self.name}:notify")
        return Captured(context["amount"])


class TestBinding:
    def test_each_run_calls_its_own_collaborators(self) -> None:
        """Two runs of one definition, each with its object: each calls only its own."""
        a, b = Gateway("a"), Gateway("b", declines=True)
        first = payment.start({"amount": 5}, steps=a)
        second = payment.start({"amount": 7}, steps=b)
        assert (first.state, second.state) == ("done", "declined")
        assert (a.calls, b.calls) == (["a:capture", "a:notify"], ["b:capture"])
        assert first.machine is second.machine is payment  # coverage and diagrams read it

    def test_missing_methods_are_listed_at_once_when_bound(self) -> None:
        """An object lacking actions is refused before anything runs, naming every one."""

        class Half:
            capture = None  # present but not callable

        with pytest.raises(BindError, match="Half lacks capture, notify") as caught:
            payment.bind(Half())
        assert caught.value.missing == ("capture", "notify")

    def test_a_persistent_machine_checks_once_when_built(self) -> None:
        """PersistentMachine(steps=...) binds at construction: a bad object fails there."""
        with pytest.raises(BindError, match="lacks capture, notify"):
            PersistentMachine(payment, InMemoryUnitOfWork(), steps=object())
        runs = PersistentMachine(payment, InMemoryUnitOfWork(), steps=Gateway("p"))
        assert runs.start({"amount": 3}, run_id="r1").state == "done"

    def test_no_steps_object_is_a_clear_error(self) -> None:
        """A run started without steps says which action and protocol it needs."""
        with pytest.raises(BindError, match="runs capture of PaymentSteps"):
            payment.start({"amount": 1})

    def test_stored_runs_load_without_collaborators(self) -> None:
        """Reading a stored run needs no steps; advancing one that has an action to run does."""
        uow = InMemoryUnitOfWork()
        gateway = Gateway("g")
        PersistentMachine(payment, uow, steps=gateway).start({"amount": 2}, run_id="r1")
        assert PersistentMachine(payment, uow).load("r1").state == "done"
        waiting = payment.restore("r2", "notifying", {"amount": 2})
        with pytest.raises(BindError, match="runs notify"):
            waiting.advance()

    def test_a_binding_is_reused_and_checked_for_its_machine(self) -> None:
        """bind() returns a binding that start() takes as is; another machine's is refused."""
        binding = payment.bind(Gateway("g"))
        assert payment.start({"amount": 1}, steps=binding).state == "done"
        other = Machine("other", steps=PaymentSteps, states=payment.states,
                        transitions=payment.transitions)  # fmt: skip
        with pytest.raises(BindError, match="another machine's"):
            other.start({"amount": 1}, steps=binding)

    def test_the_protocol_methods_are_checked_at_definition_time(self) -> None:
        """The sealed-class check reads the protocol method's annotation: a missing row fails."""
        rows = [r for r in payment.transitions if r.trigger is not Declined]
        with pytest.raises(DefinitionError, match="capture can return Declined"):
            Machine("broken", steps=PaymentSteps, states=payment.states, transitions=rows)

    def test_methods_of_a_parent_protocol_are_steps_too(self) -> None:
        """A protocol that extends another binds the inherited methods as well."""

        class MorePaymentSteps(PaymentSteps, Protocol):
            def audit(self, context: dict[str, Any]) -> Captured: ...

        extended = Machine("extended", steps=MorePaymentSteps, states=payment.states,
                           transitions=payment.transitions)  # fmt: skip
        assert extended.step_names == ("capture", "notify")
        assert extended.start({"amount": 1}, steps=Gateway("g")).state == "done"

    def test_a_plain_function_named_like_a_step_is_not_one(self) -> None:
        """Only the protocol's own method is bound: a same-named function runs as itself."""

        def capture(context: dict[str, Any]) -> Captured:  # not PaymentSteps.capture
            return Captured(-1)

        mixed = Machine(
            "mixed",
            steps=PaymentSteps,
            states=[
                State("capturing", initial=True, action=PaymentSteps.capture),
                State("notifying", action=capture),
                State("done", final=True),
                State("declined", final=True, failure=True),
            ],
            transitions=payment.transitions,
        )
        gateway = Gateway("g")
        run = mixed.start({"amount": 5}, steps=gateway)
        assert (gateway.calls, run.outcome) == (["g:capture"], Captured(-1))

    def test_steps_must_be_a_class(self) -> None:
        """steps= names the protocol, not an instance of it."""
        with pytest.raises(DefinitionError, match="is not a class; give the protocol"):
            Machine("odd", steps=Gateway("g"), states=payment.states,  # type: ignore[arg-type]
                    transitions=payment.transitions)  # fmt: skip

    def test_the_exported_class_runs_the_bound_methods(self) -> None:
        """python-statemachine's twin calls the steps object it is exported with."""
        gateway = Gateway("x")
        exported = to_statemachine(payment, actions=True, steps=gateway)
        exported.create({"amount": 4})
        assert gateway.calls == ["x:capture", "x:notify"]
        with pytest.raises(BindError, match="give steps="):
            to_statemachine(payment, actions=True)


class TestBindErrors:
    """Each BindError names the machine, what is missing, and the way out."""

    def test_no_steps_object(self) -> None:
        """bind(None) lists the actions the machine's states run."""
        with pytest.raises(BindError) as caught:
            payment.bind(None)
        assert str(caught.value) == (
            "machine 'payment': its states run capture, notify: give steps=an object that has them"
        )
        assert (caught.value.machine, caught.value.missing) == ("payment", ("capture", "notify"))

    def test_missing_methods(self) -> None:
        """An object lacking methods is named with the protocol they belong to."""

        class Half:
            def capture(self, context: dict[str, Any]) -> Captured | Declined:
                return Captured(1)

        with pytest.raises(BindError) as caught:
            payment.bind(Half())
        assert str(caught.value) == (
            "machine 'payment': Half lacks notify (the PaymentSteps methods its states run); "
            "give an object that has them"
        )
        assert (caught.value.machine, caught.value.missing) == ("payment", ("notify",))

    def test_another_machines_binding(self) -> None:
        """A binding made by another machine is refused by the machine it is given to."""
        other = Machine("other", steps=PaymentSteps, states=payment.states,
                        transitions=payment.transitions)  # fmt: skip
        with pytest.raises(BindError) as caught:
            other.bind(payment.bind(Gateway("g")))
        assert str(caught.value) == "machine 'other': that binding is another machine's"
        assert caught.value.machine == "other"

    def test_a_run_without_steps(self) -> None:
        """A run with no steps object names the state, the method, the protocol and itself."""
        with pytest.raises(BindError) as caught:
            payment.start({"amount": 1}, run_id="r1")
        assert str(caught.value) == (
            "machine 'payment': state 'capturing' runs capture of PaymentSteps, and run r1 was "
            "given no steps: start or restore it with steps=an object that has them"
        )
        assert (caught.value.machine, caught.value.missing) == ("payment", ("capture",))
