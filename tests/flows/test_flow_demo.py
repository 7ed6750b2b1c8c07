"""The embedded demo's graph under the real flow, against a real Prefect server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers.gitrepos import git
from helpers.prefect_fixtures import artifact, run_graph_edges, task_run_logs, task_runs

from tasks_lib.demo import build_demo_origin
from tasks_lib.graph.dag import load_graph
from tasks_lib.graph.taskfile import Status
from tasks_lib.run.config import RunConfig

pytestmark = pytest.mark.prefect


def test_demo_graph_runs_to_completion_and_the_ui_graph_is_the_task_graph(
    prefect_server: str, tmp_path: Path
) -> None:
    from flows.graph_flow import AAR_KEY, NODES_KEY, PROGRESS_KEY, tgflow_run

    origin = build_demo_origin(tmp_path / "demo")
    config = RunConfig(
        origin=str(origin),
        agent="scripted",
        max_parallel=2,
        validate_commands=[f"{sys.executable} -m unittest discover -s tests -q"],
        workspace_root=str(tmp_path / "ws"),
        retry_delay_s=0,
    )
    state = tgflow_run(config, return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id

    checkout = tmp_path / "check"
    git(tmp_path, "clone", "-q", str(origin), str(checkout))
    graph = load_graph(checkout / "tasks").graph
    assert graph is not None
    assert {t.id: t.status for t in graph} == dict.fromkeys(graph.tasks, Status.COMPLETED)
    assert "top_words" in (checkout / "textstats" / "__init__.py").read_text()
    aars = list((checkout / "docs" / "aar").glob("*.md"))
    assert len(aars) == 1 and aars[0].read_text().startswith("# AAR: ")

    runs = task_runs(flow_run_id)
    assert sorted(r.name for r in runs) == sorted(graph.tasks)  # one task run per task
    edges = run_graph_edges(flow_run_id)
    assert edges == {(d, t.id) for t in graph for d in t.depends_on}

    frequency = next(r for r in runs if r.name == "stats/frequency")
    logs = task_run_logs(frequency.id)  # the agent's output, streamed into the node's logs
    lines = [line for record in logs for line in record.splitlines()]  # sent in batches
    assert "scripted: write textstats/frequency.py" in lines
    assert artifact(flow_run_id, PROGRESS_KEY) == 100.0
    table = artifact(flow_run_id, NODES_KEY)
    assert {row["task"]: row["status"] for row in table} == dict.fromkeys(graph.tasks, "completed")
    aar = artifact(flow_run_id, AAR_KEY)
    assert aar == aars[0].read_text()
    # the two statistics edit the same files in parallel: the review names that conflict
    assert "merge conflict" in aar and "CHANGELOG.md" in aar
