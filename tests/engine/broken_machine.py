"""A module whose machine is deliberately wrong, for the CLI's `check` tests."""

from fsm import Machine, State

broken = Machine(
    "broken",
    states=[State("a", initial=True), State("b"), State("c", final=True)],
    transitions=[("a", "go", "b"), ("a", "go", "c"), ("c", "back", "a")],
)
