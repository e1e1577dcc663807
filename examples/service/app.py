"""The example service's endpoints: the reference flow's async orchestrator, one per request."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.kafka.config import KafkaConfig
from adapters.sqlalchemy import create_engine, init_db
from examples.service.lag import LoopLag
from fsm.errors import FSMError
from fsm.labels import state_label, trigger_label
from fsm.persistence import AsyncPersistentRun
from fsm.ports import ConcurrencyError, RunClaimed, RunNotFound
from fsm.relay import RelaySettings
from fsm.retry import RetryPolicy
from userstatus.app import AsyncFlowApp
from userstatus.domain import InvalidPayload, UpdateUserStatusPayload
from userstatus.flow import FlowState
from userstatus.orchestrator import (
    IdempotencyConflict,
    RunNotSettled,
    UpdateAborted,
    key_run_id,
)
from userstatus.sql import FLOW_TABLES, FlowSqlUnitOfWork

log = logging.getLogger(__name__)

EVENTS = ("resume",)
"""What POST /runs/{id}/events may send: `resume` takes a run's pending step (a publish
left by a process that stopped)."""
UPDATE_FIELDS = ("new_status", "idempotency_key")


class Refused(Exception):
    """A request answered with `status` and a one-line `message`; nothing was written."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(
    db_url: str,
    kafka: KafkaConfig,
    *,
    retry: RetryPolicy | None = None,
    seed_users: int = 0,
    lag_interval: float = 0.01,
    relay: RelaySettings | None = None,
) -> Starlette:
    """The service on `db_url` (its tables created on start, users 1..`seed_users` added
    as active when missing) and the brokers of `kafka`; with `relay`, an outbox relay
    runs as a task beside the requests (AsyncOutboxRelay), stopped on shutdown."""
    lag = LoopLag(lag_interval)
    flow: list[AsyncFlowApp] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        prepare_database(db_url, seed_users)
        flow.append(
            AsyncFlowApp.connect(
                db_url, kafka, retry=retry or RetryPolicy(), relay_settings=relay or RelaySettings()
            )
        )
        await flow[0].start()  # the producer now, not during the first requests
        # What startup made (modules, tables, statements, the producer) lives as long as the
        # process: frozen, it is out of the collector's sight, so the first full collection
        # does not scan its ~100k objects in the middle of the first requests (a 70-140 ms
        # pause of the loop); collected here, before serving.
        gc.collect()
        gc.freeze()
        relaying = flow[0].relay() if relay else None
        task = asyncio.create_task(relaying.run()) if relaying else None
        lag.start()
        try:
            yield
        finally:
            await lag.stop()
            if relaying and task:
                relaying.stop()  # the event in hand finishes, the rest of its batch goes back
                await task
            await flow[0].close()
            gc.unfreeze()

    async def update_status(request: Request) -> Response:
        body = await _body(request, UPDATE_FIELDS)
        try:
            payload = UpdateUserStatusPayload.parse(
                request.path_params["user_id"], body.get("new_status")
            )
        except InvalidPayload as error:
            raise Refused(422, str(error)) from error
        key = body.get("idempotency_key")
        if key is not None:
            try:
                key_run_id(key)
            except ValueError as error:
                raise Refused(422, f"idempotency_key: {error}") from error
        run = await flow[0].orchestrator().perform(payload, idempotency_key=key)
        return _json(_run(run))

    async def get_run(request: Request) -> Response:
        run = await flow[0].orchestrator().runs.load(request.path_params["run_id"])
        return _json(_run(run) | {"history": _history(run)})

    async def send_event(request: Request) -> Response:
        body = await _body(request, ("event",))
        event = body.get("event")
        if event not in EVENTS:
            raise Refused(422, f"event must be one of {', '.join(EVENTS)}; got {event!r:.60}")
        run = await flow[0].orchestrator().runs.resume(request.path_params["run_id"])
        return _json(_run(run) | {"history": _history(run)})

    async def loop_lag(request: Request) -> Response:
        """The event loop's worst lag since the last call (a ticker task measures it)."""
        return _json(lag.reset())

    routes = [
        Route("/users/{user_id}/status", _answered(update_status), methods=["POST"]),
        Route("/runs/{run_id}", _answered(get_run), methods=["GET"]),
        Route("/runs/{run_id}/events", _answered(send_event), methods=["POST"]),
        Route("/lag", loop_lag, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def prepare_database(db_url: str, seed_users: int) -> None:
    """Create the engine's and the flow's tables the database lacks; add the missing users
    of 1..`seed_users`, active."""
    engine = create_engine(db_url)
    try:
        init_db(engine, extra=FLOW_TABLES)
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            for user_id in range(uow.users.highest_id() + 1, seed_users + 1):
                uow.users.create(user_id, "active")
    finally:
        engine.dispose()


def _answered(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
    """`endpoint` with the flow's refusals as one-line answers: 404, 409, 422 or 503."""

    async def answered(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Refused as error:
            return _error(error.status, str(error))
        except RunNotFound as error:
            return _error(404, str(error))
        except (IdempotencyConflict, RunNotSettled, ConcurrencyError, RunClaimed) as error:
            return _error(409, str(error))
        except UpdateAborted as error:
            return _error(503, f"{error}; nothing was written, send the request again")
        except FSMError as error:  # a stored run this definition cannot read, say
            log.error("%s %s: %s", request.method, request.url.path, error)
            return _error(409, str(error))

    return answered


async def _body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Refused(422, f"body: not JSON ({error})") from error
    if not isinstance(body, dict):
        raise Refused(422, f"body: must be a JSON object with {', '.join(allowed)}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Refused(422, f"unknown field {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return body


def _run(run: AsyncPersistentRun[FlowState]) -> dict[str, Any]:
    event = run.context.get("event")
    return {
        "run_id": run.id,
        "state": state_label(run.state),
        "user_id": run.context.get("user_id"),
        "new_status": run.context.get("new_status"),
        "event_id": event.get("event_id") if isinstance(event, dict) else None,
        "outcome": _plain(run.outcome),
    }


def _history(run: AsyncPersistentRun[FlowState]) -> list[dict[str, Any]]:
    return [
        {
            "source": state_label(step.source),
            "trigger": trigger_label(step.trigger),
            "target": state_label(step.target),
            "outcome": _plain(step.outcome),
        }
        for step in run.history
    ]


def _plain(outcome: object) -> object:
    if dataclasses.is_dataclass(outcome) and not isinstance(outcome, type):
        return dataclasses.asdict(outcome)
    return None if outcome is None else str(outcome)


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body, default=str), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message.splitlines()[0] if message else ""}, status)
