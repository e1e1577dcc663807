"""The campaign's judge on made-up records: it finds what it is meant to find."""

from __future__ import annotations

from tests.campaign.campaign import CampaignSettings, plan
from tests.campaign.judge import OutboxRecord, RunRecord, judge
from tests.campaign.observer import Sighting


def row(
    id: int, event: str, key: str, status: str = "published", to: str = "active"
) -> OutboxRecord:
    return OutboxRecord(id, event, key, status, f"run-{event}", to)


def run(event: str, state: str = "published") -> RunRecord:
    return RunRecord(f"run-{event}", state, event)


def seen(*events: tuple[str, str], incarnation: int = 1) -> list[Sighting]:
    return [
        Sighting(n, incarnation, 0, n, key, event, "", id_mismatch=False)
        for n, (event, key) in enumerate(events)
    ]


OUTBOX = [row(1, "a", "1", to="suspended"), row(2, "b", "2"), row(3, "c", "1")]
RUNS = [run("a"), run("b"), run("c")]
USERS = {1: "active", 2: "active"}


class TestJudge:
    def test_a_clean_campaign_has_no_problems(self) -> None:
        """Every published event seen once, in order, runs final: nothing to report."""
        verdict = judge(OUTBOX, RUNS, USERS, {}, seen(("a", "1"), ("b", "2"), ("c", "1")))
        assert verdict.problems() == []
        assert (verdict.published, verdict.seen_distinct, verdict.duplicates) == (3, 3, 0)

    def test_a_published_event_never_seen_is_lost(self) -> None:
        """The database says published, the consumer never saw it: lost."""
        verdict = judge(OUTBOX, RUNS, USERS, {}, seen(("a", "1"), ("c", "1")))
        assert verdict.lost == ["b"]

    def test_an_event_without_an_outbox_row_was_invented(self) -> None:
        """A message no committed change produced is reported."""
        sightings = seen(("a", "1"), ("b", "2"), ("c", "1"), ("x", "3"))
        assert judge(OUTBOX, RUNS, USERS, {}, sightings).invented == ["x"]

    def test_a_later_event_first_within_a_broker_is_an_order_violation(self) -> None:
        """Within one broker, user 1's second event seen before its first is a violation."""
        verdict = judge(OUTBOX, RUNS, USERS, {}, seen(("c", "1"), ("a", "1"), ("b", "2")))
        assert verdict.order_violations == ["user 1: outbox 1 after 3 (broker 1)"]

    def test_a_resend_on_a_new_broker_is_a_duplicate_not_a_violation(self) -> None:
        """An old event again on the next broker counts as a duplicate, in order there."""
        first = seen(("a", "1"), ("b", "2"), ("c", "1"))
        again = seen(("c", "1"), incarnation=2)
        verdict = judge(OUTBOX, RUNS, USERS, {}, first + again)
        assert (verdict.duplicates, verdict.duplicates_within_incarnation) == (1, 0)
        assert verdict.order_violations == []

    def test_runs_and_outbox_must_agree_and_end_final(self) -> None:
        """A run left publish_failed with its event published is reported twice over."""
        runs = [run("a"), run("b", "publish_failed"), run("c")]
        verdict = judge(OUTBOX, runs, USERS, {}, seen(("a", "1"), ("b", "2"), ("c", "1")))
        assert len(verdict.non_final) == 1
        assert verdict.disagreements == ["run run-b publish_failed but outbox published"]

    def test_a_users_status_must_be_its_last_events(self) -> None:
        """User 1's last event says active; a stored suspended is a mismatch."""
        users = {1: "suspended", 2: "active"}
        verdict = judge(OUTBOX, RUNS, users, {}, seen(("a", "1"), ("b", "2"), ("c", "1")))
        assert verdict.status_mismatches == ["user 1 is suspended, its last event says active"]


class TestPlan:
    def test_the_schedule_is_a_function_of_the_seed(self) -> None:
        """The same seed plans the same faults; another seed plans others."""
        settings = CampaignSettings()
        assert plan(60, 7, settings, postgres=True) == plan(60, 7, settings, postgres=True)
        assert plan(60, 7, settings, postgres=True) != plan(60, 8, settings, postgres=True)

    def test_sqlite_plans_no_connection_drops(self) -> None:
        """Dropping connections is a PostgreSQL fault only."""
        faults = plan(300, 1, CampaignSettings(), postgres=False)
        assert faults and all(f.kind != "drop_connections" for f in faults)
