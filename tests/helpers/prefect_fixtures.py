"""The real Prefect server the flow tests run against, started once per session.

Loaded from conftest.py; Prefect is imported only when a test asks for ``prefect_server``,
so the rest of the suite does not pay for it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A temporary Prefect server (SQLite) with heartbeats off and results in a temp dir."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings({PREFECT_SERVER_ANALYTICS_ENABLED: False}),  # no telemetry calls
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings(
            {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: storage}
        ),
    ):
        yield str(PREFECT_API_URL.value())


def _client_call(fn: Any) -> Any:
    from prefect.client.orchestration import get_client

    async def go() -> Any:
        async with get_client() as client:
            return await fn(client)

    return asyncio.run(go())


def task_runs(flow_run_id: UUID) -> list[Any]:
    """The flow run's task runs as the API reports them."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return _client_call(
        lambda c: c.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    )


def run_graph_edges(flow_run_id: UUID) -> set[tuple[str, str]]:
    """(upstream name, downstream name) edges of the run graph the UI draws (graph-v2)."""

    async def read(client: Any) -> Any:
        response = await client._client.get(f"/flow_runs/{flow_run_id}/graph-v2")
        response.raise_for_status()
        return response.json()

    nodes = [node for _, node in _client_call(read)["nodes"]]  # [[id, node], ...]
    names = {n["id"]: n["label"] for n in nodes}
    return {(names[p["id"]], n["label"]) for n in nodes for p in n["parents"] if p["id"] in names}


def artifact(flow_run_id: UUID, key: str) -> Any:
    """The latest artifact with this key created by this flow run (table data is decoded)."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    found = _client_call(
        lambda c: c.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    )
    assert found, f"no artifact {key!r} for flow run {flow_run_id}"
    data = found[-1].data
    return json.loads(data) if isinstance(data, str) and data.startswith("[") else data


def task_run_logs(task_run_id: UUID, timeout_s: float = 15.0) -> list[str]:
    """The ended task run's log messages on the server. Logs arrive in batches, so a first
    answer may hold only part of them: poll until the engine's last line ("Finished in state
    ...") is there."""
    import time

    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    deadline = time.monotonic() + timeout_s
    while True:
        logs = _client_call(
            lambda c: c.read_logs(
                log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id]))
            )
        )
        messages = [log.message for log in logs]
        if any(m.startswith("Finished in state") for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


def task_run_states(task_run_id: UUID, timeout_s: float = 15.0) -> list[Any]:
    """The task run's states, oldest first, once its last is final (the server records a
    task run's states from the engine's events, in batches: poll briefly)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        states = _client_call(lambda c: c.read_task_run_states(task_run_id))
        states.sort(key=lambda s: s.timestamp)
        if (states and states[-1].is_final()) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def flow_run(state: Any) -> Any:
    """The flow run that ended in ``state``, as the API reports it."""
    return _client_call(lambda c: c.read_flow_run(state.state_details.flow_run_id))


def flow_run_states(flow_run_id: UUID) -> list[Any]:
    """The flow run's states, oldest first."""
    states = _client_call(lambda c: c.read_flow_run_states(flow_run_id))
    return sorted(states, key=lambda s: s.timestamp)


def session_log(path: Path) -> list[str]:
    """Lines the test tasks' scripts appended: one per agent session that ran them."""
    return path.read_text().split() if path.exists() else []
