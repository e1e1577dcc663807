"""The campaign's verdict: what the database says happened against what the consumer saw.

Pure functions over plain records, so the judging itself is tested on made-up data
(tests/campaign/test_judge.py) without processes, a database or a broker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from tests.campaign.observer import Sighting

FINAL_STATES = frozenset({"published", "update_failed", "dead_lettered"})
EXPECTED_OUTBOX = {
    "published": "published",
    "dead_lettered": "dead",
    "publish_failed": "pending",
    "status_updated": "pending",
}
"""A run's state -> the status its outbox row must have."""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One outbox row: `id` orders a user's events (the order they committed)."""

    id: int
    event_id: str
    key: str
    status: str
    run_id: str | None
    new_status: str
    published_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of the flow."""

    id: str
    state: str
    event_id: str | None
    """The event its update committed, if any."""


@dataclass
class Verdict:
    """The checks (a) to (e) of the campaign, each as counts and a few examples."""

    committed: int = 0
    published: int = 0
    """Events the database calls published (outbox row or run)."""
    dead: int = 0
    seen_distinct: int = 0
    received: int = 0
    """Messages read, copies included."""
    lost: list[str] = field(default_factory=list)
    """(a) Published per the database, never seen by the consumer."""
    lost_dead: int = 0
    """Dead-lettered events never seen (reported, not lost)."""
    invented: list[str] = field(default_factory=list)
    """(b) Seen, but no outbox row: no committed change produced them."""
    order_violations: list[str] = field(default_factory=list)
    """(c) Within one broker incarnation, a user's event first seen after a later one."""
    stream_order_violations: list[str] = field(default_factory=list)
    """The same over the whole de-duplicated stream (what a continuous audit service sees)."""
    duplicates: int = 0
    """(d) Copies beyond the first of an event, over the whole campaign."""
    duplicates_within_incarnation: int = 0
    foreign: int = 0
    """Messages without an event id, or whose header and value ids differ."""
    runs_by_state: dict[str, int] = field(default_factory=dict)
    non_final: list[str] = field(default_factory=list)
    """(e) Runs not in a final state: 'run state'."""
    disagreements: list[str] = field(default_factory=list)
    """(e) Run state and outbox status that do not match."""
    status_mismatches: list[str] = field(default_factory=list)
    """(e) Users whose status is not their last event's new status."""

    def problems(self) -> list[str]:
        """One line per failed check; empty when the campaign found nothing wrong."""
        checks = [
            ("events lost (published, never seen)", self.lost),
            ("events without a commit", self.invented),
            ("per-user order violations", self.order_violations),
            ("runs not final", self.non_final),
            ("run state / outbox status disagreements", self.disagreements),
            ("users whose status is not their last event's", self.status_mismatches),
        ]
        lines = [
            f"{title}: {len(found)} (e.g. {', '.join(found[:5])})"
            for title, found in checks
            if found
        ]
        if self.foreign:
            lines.append(f"messages without a matching event id: {self.foreign}")
        return lines


def judge(
    outbox: Iterable[OutboxRecord],
    runs: Iterable[RunRecord],
    users: Mapping[int, str],
    initial: Mapping[int, str],
    sightings: Iterable[Sighting],
) -> Verdict:
    """Check loss, invention, per-user order, duplicates and the database's own agreement."""
    verdict = Verdict()
    rows = {row.event_id: row for row in outbox}
    run_list = list(runs)
    seen = list(sightings)
    verdict.committed = len(rows)
    verdict.received = len(seen)
    verdict.foreign = sum(1 for s in seen if not s.event_id or s.id_mismatch)
    seen_ids = {s.event_id for s in seen if s.event_id}
    verdict.seen_distinct = len(seen_ids)
    published = {r.event_id for r in rows.values() if r.status == "published"}
    published |= {r.event_id for r in run_list if r.state == "published" and r.event_id}
    verdict.published = len(published)
    dead = {r.event_id for r in rows.values() if r.status == "dead"}
    verdict.dead = len(dead)

    # (a) and (b)
    verdict.lost = sorted(published - seen_ids, key=lambda e: _order(rows, e))
    verdict.lost_dead = len(dead - seen_ids)
    verdict.invented = sorted(seen_ids - rows.keys())

    # (c) within each incarnation, and over the whole de-duplicated stream
    by_incarnation: dict[int, list[Sighting]] = {}
    for sighting in seen:
        by_incarnation.setdefault(sighting.incarnation, []).append(sighting)
    for incarnation, part in sorted(by_incarnation.items()):
        verdict.order_violations += [
            f"{v} (broker {incarnation})" for v in _order_violations(part, rows)
        ]
    verdict.stream_order_violations = _order_violations(seen, rows)

    # (d)
    copies = Counter(s.event_id for s in seen if s.event_id)
    verdict.duplicates = sum(n - 1 for n in copies.values())
    for part in by_incarnation.values():
        within = Counter(s.event_id for s in part if s.event_id)
        verdict.duplicates_within_incarnation += sum(n - 1 for n in within.values())

    # (e)
    verdict.runs_by_state = dict(sorted(Counter(r.state for r in run_list).items()))
    for run in run_list:
        if run.state not in FINAL_STATES:
            verdict.non_final.append(f"{run.id[:12]} {run.state}")
        expected = EXPECTED_OUTBOX.get(run.state)
        row = rows.get(run.event_id) if run.event_id else None
        if expected is None:
            if row is not None:
                verdict.disagreements.append(f"run {run.id[:12]} {run.state} has an event")
        elif row is None:
            verdict.disagreements.append(f"run {run.id[:12]} {run.state} has no outbox row")
        elif row.status != expected:
            verdict.disagreements.append(f"run {run.id[:12]} {run.state} but outbox {row.status}")
    run_ids = {r.id for r in run_list}
    verdict.disagreements += [
        f"outbox {r.event_id[:12]} has no run" for r in rows.values() if r.run_id not in run_ids
    ]
    last: dict[str, OutboxRecord] = {}
    for row in sorted(rows.values(), key=lambda r: r.id):
        last[row.key] = row
    for user_id, status in sorted(users.items()):
        event = last.get(str(user_id))
        expected_status = event.new_status if event else initial.get(user_id)
        if status != expected_status:
            verdict.status_mismatches.append(
                f"user {user_id} is {status}, its last event says {expected_status}"
            )
    return verdict


def _order(rows: Mapping[str, OutboxRecord], event_id: str) -> int:
    row = rows.get(event_id)
    return row.id if row else -1


def _order_violations(seen: Iterable[Sighting], rows: Mapping[str, OutboxRecord]) -> list[str]:
    """Each event first seen after a later event (higher outbox id) of the same user."""
    latest: dict[str, int] = {}
    first: set[str] = set()
    violations: list[str] = []
    for sighting in seen:
        row = rows.get(sighting.event_id)
        if row is None or sighting.event_id in first:
            continue
        first.add(sighting.event_id)
        newest = latest.get(row.key, -1)
        if row.id < newest:
            violations.append(f"user {row.key}: outbox {row.id} after {newest}")
        latest[row.key] = max(newest, row.id)
    return violations
