"""The user domain: statuses, the user lifecycle machine and the validated update payload."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum

from fsm.definition import Machine, State
from fsm.errors import FSMError


class UserStatus(StrEnum):
    """The statuses a user of the payments service goes through."""

    PENDING_VERIFICATION = "pending_verification"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


_S = UserStatus

lifecycle: Machine[UserStatus] = Machine(
    "user_lifecycle",
    states=[
        State(_S.PENDING_VERIFICATION, initial=True, description="signed up, identity unchecked"),
        State(_S.ACTIVE, description="may send and receive payments"),
        State(_S.SUSPENDED, description="frozen by risk or compliance"),
        State(_S.CLOSED, final=True, description="account closed for good"),
    ],
    # The trigger of each row is the requested status itself: a change is allowed exactly
    # when the table has a row for it.
    transitions=[
        (_S.PENDING_VERIFICATION, _S.ACTIVE, _S.ACTIVE),
        (_S.PENDING_VERIFICATION, _S.CLOSED, _S.CLOSED),
        (_S.ACTIVE, _S.SUSPENDED, _S.SUSPENDED),
        (_S.ACTIVE, _S.CLOSED, _S.CLOSED),
        (_S.SUSPENDED, _S.ACTIVE, _S.ACTIVE),
        (_S.SUSPENDED, _S.CLOSED, _S.CLOSED),
    ],
)
"""Which status changes a user may go through; `closed` is final."""


def allowed_changes(current: UserStatus) -> tuple[UserStatus, ...]:
    """The statuses a user in `current` may move to, in table order."""
    return tuple(row.target for row in lifecycle.rows_from(current))


def can_change(current: UserStatus, new: UserStatus) -> bool:
    """True when the lifecycle has a row from `current` to `new`."""
    return any(row.trigger == new for row in lifecycle.rows_from(current))


@functools.cache
def changes_into(new: UserStatus) -> tuple[str, ...]:
    """The stored names of the statuses the lifecycle allows a change to `new` from."""
    return tuple(status.value for status in UserStatus if can_change(status, new))


MAX_USER_ID = 2**63 - 1
"""User ids are positive 64-bit signed integers: the users table keeps them as BIGINT."""


class InvalidPayload(FSMError, ValueError):
    """An update request that is refused before anything is written."""


@dataclass(frozen=True, slots=True)
class UpdateUserStatusPayload:
    """A request to move user `user_id` to `new_status`; checked on construction."""

    user_id: int
    new_status: UserStatus

    def __post_init__(self) -> None:
        user_id: object = self.user_id
        if isinstance(user_id, bool) or not isinstance(user_id, int):
            raise InvalidPayload(_bad_user_id(repr(user_id)))
        if not 0 < user_id <= MAX_USER_ID:
            # repr() of a huge int is huge (and refused beyond 4300 digits): give its size.
            big = user_id.bit_length() > 64
            raise InvalidPayload(
                _bad_user_id(f"a {user_id.bit_length()}-bit integer" if big else repr(user_id))
            )
        if not isinstance(self.new_status, UserStatus):
            raise InvalidPayload(_bad_status(self.new_status))

    @classmethod
    def parse(cls, user_id: object, new_status: object) -> UpdateUserStatusPayload:
        """Build a payload from loose input (JSON, CLI): ints as text, statuses by value or name."""
        text_id = user_id.strip() if isinstance(user_id, str) else ""
        # ASCII only: str.isdigit() also accepts digits like '²' that int() cannot read.
        if text_id.isascii() and text_id.isdigit():
            if len(text_id) > 20:  # more digits than any 64-bit id; int() might refuse them
                raise InvalidPayload(_bad_user_id(f"a {len(text_id)}-digit number"))
            user_id = int(text_id)
        status: object = new_status
        if isinstance(new_status, str) and not isinstance(new_status, UserStatus):
            text = new_status.strip().lower()
            status = next((s for s in UserStatus if text in (s.value, s.name.lower())), new_status)
        return cls(user_id, status)  # type: ignore[arg-type]  # checked in __post_init__


def _bad_user_id(shown: str) -> str:
    return f"user_id must be a positive 64-bit integer (1 to {MAX_USER_ID}), got {shown}"


def _bad_status(value: object) -> str:
    allowed = ", ".join(s.value for s in UserStatus)
    return f"new_status must be one of {allowed}; got {value!r}"
