"""The fault campaign, CI-sized: SQLite and PostgreSQL at once, each with its own broker."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.campaign.campaign import CampaignReport, fresh_database, run_campaign

pytestmark = pytest.mark.campaign

SECONDS = float(os.environ.get("FSM_CAMPAIGN_SECONDS", "25"))
"""Chaos time per database; the relays' 20 s lease bounds the drain after it."""
SEED = int(os.environ.get("FSM_CAMPAIGN_SEED", "20261202"))


@pytest.fixture(scope="module")
def reports(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, CampaignReport | BaseException]]:
    """Both campaigns, run at the same time (the drain waits out leases: half the wall time)."""
    urls: dict[str, str | None] = {"sqlite": None}
    try:
        urls["postgresql"] = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception as skipped:
        urls["postgresql"] = None
        reason: BaseException | None = skipped
    else:
        reason = None
    results: dict[str, CampaignReport | BaseException] = {}
    with ExitStack() as stack:
        threads = []
        for kind, server in urls.items():
            if kind == "postgresql" and server is None:
                continue
            folder = tmp_path_factory.mktemp(f"campaign-{kind}")
            db_url = stack.enter_context(fresh_database(server, folder))
            threads.append(
                threading.Thread(target=_run, args=(kind, db_url, folder, results), name=kind)
            )
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SECONDS + 300)
            if thread.is_alive():
                results[thread.name] = TimeoutError(f"the {thread.name} campaign did not end")
    if reason is not None:
        results["postgresql"] = reason
    yield results


def _run(kind: str, db_url: str, folder: Path, results: dict[str, object]) -> None:
    try:
        results[kind] = run_campaign(db_url, SECONDS, SEED, workdir=folder)
    except BaseException as error:  # reported by the test of this database
        results[kind] = error


def verdict(results: dict[str, CampaignReport | BaseException], kind: str) -> CampaignReport:
    result = results[kind]
    if isinstance(result, pytest.skip.Exception):
        pytest.skip(str(result))
    if isinstance(result, BaseException):
        raise result
    print(result.format())  # the figures, shown with -s or on failure
    return result


class TestCampaign:
    @pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
    def test_nothing_lost_invented_or_reordered(
        self, reports: dict[str, CampaignReport | BaseException], kind: str
    ) -> None:
        """Under kills, broker restarts and dropped connections every published event
        arrives, in per-user order, and every run ends final and agreeing with the outbox."""
        report = verdict(reports, kind)
        assert report.problems() == [], report.format()
        assert report.broker_restarts > 0 and sum(report.kills.values()) > 0
