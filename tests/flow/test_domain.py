"""The user lifecycle, the update payload and the event schema."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fsm.errors import InvalidEvent
from userstatus.domain import (
    InvalidPayload,
    UpdateUserStatusPayload,
    UserStatus,
    allowed_changes,
    can_change,
    changes_into,
    lifecycle,
)
from userstatus.events import TOPIC, EventDecodeError, UserStatusChanged

S = UserStatus


class TestLifecycle:
    def test_closed_is_final(self) -> None:
        """A closed user can go nowhere."""
        assert lifecycle.state(S.CLOSED).final
        assert allowed_changes(S.CLOSED) == ()

    def test_allowed_changes(self) -> None:
        """Suspension and reinstatement are allowed, reopening a closed account is not."""
        assert can_change(S.ACTIVE, S.SUSPENDED)
        assert can_change(S.SUSPENDED, S.ACTIVE)
        assert can_change(S.PENDING_VERIFICATION, S.ACTIVE)
        assert not can_change(S.CLOSED, S.ACTIVE)
        assert not can_change(S.PENDING_VERIFICATION, S.SUSPENDED)

    @pytest.mark.parametrize("new", list(S))
    def test_changes_into_are_the_statuses_the_machine_moves_from(self, new: UserStatus) -> None:
        """What the repository's one-statement change is allowed from (changes_into) is
        exactly where the lifecycle machine, fired, moves to `new`."""
        moves = []
        for old in S:
            try:
                lifecycle.restore("user", old).send(new)
            except InvalidEvent:
                continue
            moves.append(old.value)
        assert changes_into(new) == tuple(moves)

    def test_same_status_is_not_a_change(self) -> None:
        """Asking for the status a user already has is refused (it would announce nothing)."""
        assert not any(can_change(s, s) for s in S)


class TestPayload:
    def test_valid_payload(self) -> None:
        """A positive id and a UserStatus make a payload."""
        payload = UpdateUserStatusPayload(7, S.ACTIVE)
        assert (payload.user_id, payload.new_status) == (7, S.ACTIVE)

    @pytest.mark.parametrize("user_id", [0, -1, "7", 1.5, True, None, 2**63, 2**64 + 1])
    def test_bad_user_id(self, user_id: object) -> None:
        """A user id that is not a positive 64-bit int is refused, naming the value."""
        with pytest.raises(InvalidPayload, match=r"user_id must be a positive 64-bit integer "):
            UpdateUserStatusPayload(user_id, S.ACTIVE)  # type: ignore[arg-type]

    def test_largest_user_id(self) -> None:
        """2**63 - 1, the largest BIGINT, is a valid id."""
        assert UpdateUserStatusPayload(2**63 - 1, S.ACTIVE).user_id == 2**63 - 1

    def test_huge_user_id_is_one_short_line(self) -> None:
        """An id too long to print in full is described by its size, not dumped."""
        with pytest.raises(InvalidPayload) as caught:
            UpdateUserStatusPayload(10**5000, S.ACTIVE)
        assert "16610-bit integer" in str(caught.value)
        assert len(str(caught.value)) < 200

    def test_bad_status(self) -> None:
        """A status outside UserStatus is refused, listing the allowed ones on one line."""
        with pytest.raises(InvalidPayload) as caught:
            UpdateUserStatusPayload(1, "frozen")  # type: ignore[arg-type]
        message = str(caught.value)
        assert "\n" not in message
        assert "pending_verification, active, suspended, closed" in message
        assert "'frozen'" in message

    def test_parse_loose_input(self) -> None:
        """Text ids and status names or values are accepted by parse()."""
        assert UpdateUserStatusPayload.parse("12", "SUSPENDED") == UpdateUserStatusPayload(
            12, S.SUSPENDED
        )
        with pytest.raises(InvalidPayload):
            UpdateUserStatusPayload.parse("x", "active")

    @pytest.mark.parametrize("text", ["\u00b2", "9" * 5000, "9223372036854775808"])
    def test_parse_refuses_odd_digits(self, text: str) -> None:
        """Digits int() cannot read, or too many of them, are InvalidPayload, not ValueError."""
        with pytest.raises(InvalidPayload, match="user_id must be a positive 64-bit integer"):
            UpdateUserStatusPayload.parse(text, "active")


class TestEventSchema:
    def event(self) -> UserStatusChanged:
        return UserStatusChanged(
            "e1", 42, S.ACTIVE, S.SUSPENDED, datetime(2026, 1, 1, tzinfo=UTC), run_id="r1"
        )

    def test_message_shape(self) -> None:
        """Key is the user id, headers carry event id and type, the topic is UserUpdateTopic."""
        message = self.event().to_message()
        assert message.topic == TOPIC == "UserUpdateTopic"
        assert message.key == "42"
        headers = dict(message.headers)
        assert headers["event_id"] == b"e1"
        assert headers["event_type"] == b"UserStatusChanged"
        assert message.run_id == "r1"

    def test_round_trip(self) -> None:
        """Encoding then decoding gives the same event; the JSON names its schema version."""
        event = self.event()
        assert UserStatusChanged.decode(event.encode()) == event
        assert b'"schema_version":1' in event.encode()

    def test_unknown_version_is_refused(self) -> None:
        """A consumer refuses a schema version it does not know."""
        data = self.event().to_json() | {"schema_version": 99}
        with pytest.raises(EventDecodeError, match="schema_version 99"):
            UserStatusChanged.from_json(data)
