"""Time per transition of this engine against transitions, python-statemachine and a hand-written
dict dispatch, on a two-state ping-pong and a guarded six-state flow, in one process.

Run with `make bench` (or `python benchmarks/transitions_per_second.py`). Every contender does the
same work per event: find the row for (state, event), evaluate its guards in order, move, and (for
this engine and the hand-written dispatch) record the transition in the run's history, a cost
transitions and python-statemachine do not pay. Each contender is first checked to really move.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import timeit
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from typing import Any

import statemachine
import transitions

import fsm

Send = Callable[[str], object]
Contender = tuple[Send, Callable[[], str]]
"""How to send an event to a fresh instance, and how to read its current state's name."""

PING_EVENTS = ("ping", "pong")
FLOW_EVENTS = ("next", "next", "next", "next", "reopen")
FLOW_STATES = ("created", "checked", "authorized", "captured", "settled")


def is_fraud(*_: object) -> bool:
    return False


def amount_ok(*_: object) -> bool:
    return True


# ---------------------------------------------------------------- this engine


def fsm_ping() -> Contender:
    machine = fsm.Machine(
        "ping",
        states=[fsm.State("idle", initial=True), fsm.State("busy"), fsm.State("off", final=True)],
        transitions=[("idle", "ping", "busy"), ("busy", "pong", "idle"), ("busy", "stop", "off")],
    )
    run = machine.start()
    return run.send, lambda: run.state


def fsm_flow() -> Contender:
    rows: list[Any] = []
    for source, target in itertools.pairwise(FLOW_STATES):
        rows.append((source, "next", "rejected", is_fraud))
        rows.append((source, "next", target, amount_ok))
    rows.append(("settled", "reopen", "created", amount_ok))
    states = [fsm.State(name, initial=name == "created") for name in FLOW_STATES]
    machine = fsm.Machine(
        "flow", states=[*states, fsm.State("rejected", final=True)], transitions=rows
    )
    run = machine.start({"amount": 10})
    return run.send, lambda: run.state


# ---------------------------------------------------------------- transitions 0.9.3


def transitions_ping() -> Contender:
    model = transitions.Machine(
        states=["idle", "busy"],
        transitions=[["ping", "idle", "busy"], ["pong", "busy", "idle"]],
        initial="idle",
    )
    return model.trigger, lambda: model.state


def transitions_flow() -> Contender:
    rows: list[dict[str, Any]] = []
    for source, target in itertools.pairwise(FLOW_STATES):
        for dest, condition in (("rejected", is_fraud), (target, amount_ok)):
            rows.append(
                {"trigger": "next", "source": source, "dest": dest, "conditions": condition}
            )
    rows.append(
        {"trigger": "reopen", "source": "settled", "dest": "created", "conditions": amount_ok}
    )
    model = transitions.Machine(
        states=[*FLOW_STATES, "rejected"], transitions=rows, initial="created"
    )
    return model.trigger, lambda: model.state


# ---------------------------------------------------------------- python-statemachine 3.2.2


def statemachine_ping() -> Contender:
    class Ping(statemachine.StateMachine):
        idle = statemachine.State(initial=True)
        busy = statemachine.State()
        ping = idle.to(busy)
        pong = busy.to(idle)

    machine = Ping()
    return machine.send, lambda: machine.current_state_value


def statemachine_flow() -> Contender:
    class Flow(statemachine.StateMachine):
        created = statemachine.State(initial=True)
        checked = statemachine.State()
        authorized = statemachine.State()
        captured = statemachine.State()
        settled = statemachine.State()
        rejected = statemachine.State(final=True)

        next = (
            created.to(rejected, cond=is_fraud)
            | created.to(checked, cond=amount_ok)
            | checked.to(rejected, cond=is_fraud)
            | checked.to(authorized, cond=amount_ok)
            | authorized.to(rejected, cond=is_fraud)
            | authorized.to(captured, cond=amount_ok)
            | captured.to(rejected, cond=is_fraud)
            | captured.to(settled, cond=amount_ok)
        )
        reopen = settled.to(created, cond=amount_ok)

    machine = Flow()
    return machine.send, lambda: machine.current_state_value


# ---------------------------------------------------------------- hand-written dict dispatch


class HandRun:
    """The floor: a dict of dicts, guards tried in order, the move recorded in a list."""

    __slots__ = ("context", "history", "state", "table")

    def __init__(
        self, table: Mapping[str, Mapping[str, Sequence[tuple[str, Any]]]], state: str
    ) -> None:
        self.table = table
        self.state = state
        self.context = {"amount": 10}
        self.history: list[tuple[str, str, str]] = []

    def send(self, event: str) -> None:
        for target, guard in self.table[self.state][event]:
            if guard is None or guard(self):
                self.history.append((self.state, event, target))
                self.state = target
                return
        raise ValueError(f"no row for {event!r} from {self.state!r}")


def hand_ping() -> Contender:
    table = {"idle": {"ping": [("busy", None)]}, "busy": {"pong": [("idle", None)]}}
    run = HandRun(table, "idle")
    return run.send, lambda: run.state


def hand_flow() -> Contender:
    table: dict[str, dict[str, list[tuple[str, Any]]]] = {s: {} for s in FLOW_STATES}
    for source, target in itertools.pairwise(FLOW_STATES):
        table[source]["next"] = [("rejected", is_fraud), (target, amount_ok)]
    table["settled"]["reopen"] = [("created", amount_ok)]
    run = HandRun(table, "created")
    return run.send, lambda: run.state


# ---------------------------------------------------------------- measuring

CONTENDERS: dict[str, tuple[Callable[[], Contender], Callable[[], Contender]]] = {
    "fsm (this project)": (fsm_ping, fsm_flow),
    "hand-written dict dispatch": (hand_ping, hand_flow),
    f"transitions {version('transitions')}": (transitions_ping, transitions_flow),
    f"python-statemachine {version('python-statemachine')}": (statemachine_ping, statemachine_flow),
}


def per_transition(
    make: Callable[[], Contender], events: Sequence[str], path: Sequence[str], total: int
) -> float:
    """Best-of-five microseconds per transition, each timing on a fresh instance."""
    rounds = total // len(events)
    send, state = make()
    for event, expected in zip(events, path, strict=True):  # every contender really moves
        send(event)
        assert state() == expected, (make.__name__, event, state(), expected)

    def once() -> float:
        send, _ = make()

        def drive() -> None:
            for _ in range(rounds):
                for event in events:
                    send(event)

        return timeit.timeit(drive, number=1)

    return min(once() for _ in range(5)) / (rounds * len(events)) * 1e6


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{model}, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=100_000, help="per timing (default 1e5)")
    args = parser.parse_args()
    # The slow peers get fewer transitions per timing so the whole run stays short.
    scale = {"python-statemachine": 20, "transitions": 5}
    results: dict[str, tuple[float, float]] = {}
    for name, (ping, flow) in CONTENDERS.items():
        total = args.transitions // next((v for k, v in scale.items() if name.startswith(k)), 1)
        results[name] = (
            per_transition(ping, PING_EVENTS, ("busy", "idle"), total),
            per_transition(flow, FLOW_EVENTS, (*FLOW_STATES[1:], "created"), total),
        )
    ours = results["fsm (this project)"]
    print(f"machine: {machine_description()}")
    print()
    print(
        "| engine | ping-pong (us/transition) | ratio to fsm "
        "| guarded 6-state flow (us/transition) | ratio to fsm |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, (ping_us, flow_us) in results.items():
        print(
            f"| {name} | {ping_us:.3f} | {ping_us / ours[0]:.2f}x "
            f"| {flow_us:.3f} | {flow_us / ours[1]:.2f}x |"
        )


if __name__ == "__main__":
    main()
