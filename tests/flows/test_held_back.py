"""A real-shaped repository with one broken task file through the real flow: the rest of the
graph is merged, the broken task and its dependent are held back with their reasons, and the
run ends Failed naming them; ``strict`` refuses the whole graph as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.gitrepos import REAL_SHAPED, git, make_origin, show
from helpers.prefect_fixtures import artifact

from tasks_lib.run.config import RunConfig

pytestmark = pytest.mark.prefect


def _origin(tmp_path: Path) -> Path:
    return make_origin(tmp_path, REAL_SHAPED)


def test_the_good_tasks_are_merged_and_the_broken_ones_held_back(
    prefect_server: str, tmp_path: Path
) -> None:
    from flows.graph_flow import NODES_KEY, tgflow_run

    origin = _origin(tmp_path)
    config = RunConfig(
        origin=str(origin),
        agent="scripted",
        validate_commands=["true"],
        retry_delay_s=0,
        workspace_root=str(tmp_path / "ws"),
    )
    state = tgflow_run(config, return_state=True)
    assert state.is_failed()
    assert state.message.startswith("2 of 6 nodes did not complete (1 failed, 1 skipped)")
    assert state.message.endswith(": broken, after-broken") or state.message.endswith(
        ": after-broken, broken"
    )
    for done in ("api", "docs", "ui"):
        assert show(origin, f"{done}.txt") == done
        assert "status: completed" in show(origin, f"tasks/{done}.md")
    assert "status: pending" in show(origin, "tasks/broken.md")  # its file is left to a person
    table = {row["task"]: row for row in artifact(state.state_details.flow_run_id, NODES_KEY)}
    assert table["broken"]["status"] == "failed"
    assert "tasks/broken.md: invalid risk 'hgh'" in table["broken"]["reason"]
    assert table["after-broken"]["status"] == "skipped"
    assert table["after-broken"]["reason"].startswith("upstream broken held back: ")
    assert table["setup"]["status"] == "already done"


def test_strict_refuses_the_whole_graph(prefect_server: str, tmp_path: Path) -> None:
    from flows.graph_flow import tgflow_run

    origin = _origin(tmp_path)
    before = git(origin, "rev-parse", "main")
    config = RunConfig(
        origin=str(origin),
        agent="scripted",
        validate_commands=["true"],
        strict=True,
        workspace_root=str(tmp_path / "ws"),
    )
    state = tgflow_run(config, return_state=True)
    assert state.is_failed()
    assert state.message.startswith("nothing was run: 1 problem(s) on main")
    assert "tasks/broken.md: invalid risk 'hgh'" in state.message
    assert git(origin, "rev-parse", "main") == before
