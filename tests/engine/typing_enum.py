"""Checked by mypy in test_typing: an Enum-state machine is typed by its Enum."""

import enum
from typing import assert_type

from fsm import Machine, Run, State, Transition


class Light(enum.Enum):
    OFF = "off"
    ON = "on"


lamp = Machine(
    "lamp",
    states=[State(Light.OFF, initial=True), State(Light.ON, final=True)],
    transitions=[(Light.OFF, "switch", Light.ON)],
)
assert_type(lamp, Machine[Light])
run = lamp.start()
assert_type(run, Run[Light])
assert_type(run.state, Light)
assert_type(run.history, list[Transition[Light]])
