"""Retries, failures, a conflict, and running again: one small graph through the real flow.

Tasks (scripted agent; every script first appends its id to a session log outside the repo,
so the log counts agent sessions):
  flaky         fails on attempt 1, then appends to SHARED.md        (scope: system)
  solid         sleeps, then appends to SHARED.md in parallel       (scope: system)
  broken        always fails until its task file is fixed
  after-broken  depends on broken
  later         always fails until its task file is fixed
flaky and solid have the highest priority, so they start together and meet in SHARED.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.gitrepos import git, make_origin, push_change, show
from helpers.prefect_fixtures import artifact, session_log, task_runs

from tasks_lib.run.config import RunConfig

pytestmark = pytest.mark.prefect

REPO = Path(__file__).resolve().parents[2]
LOG_VAR = "TGFLOW_TEST_SESSION_LOG"


def task_file(
    task_id: str, steps: list[dict], depends_on: list[str] | None = None, **meta: str
) -> str:
    front = {"id": task_id, "name": f"Task {task_id}", "status": "pending", **meta}
    if depends_on:
        front["depends_on"] = depends_on
    script = yaml.safe_dump([{"run": f'echo {task_id} >> "${LOG_VAR}"'}, *steps], sort_keys=False)
    return (
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n## Description\n\n"
        f"```tgflow-script\n{script}```\n\n## Acceptance Criteria\n\n- [ ] done\n"
    )


def write(path: str, text: str) -> dict:
    return {"write": {"path": path, "content": text}}


FILES = {
    "SHARED.md": "# shared\n",
    "tasks/flaky.md": task_file(
        "flaky",
        [{"fail_attempts": 1}, {"append": {"path": "SHARED.md", "text": "flaky was here\n"}}],
        scope="system",
    ),
    "tasks/solid.md": task_file(
        "solid",
        [{"sleep": 2.5}, {"append": {"path": "SHARED.md", "text": "solid was here\n"}}],
        scope="system",
    ),
    "tasks/broken.md": task_file("broken", [{"fail": "the broken step"}]),
    "tasks/after-broken.md": task_file(
        "after-broken", [write("after.txt", "after\n")], depends_on=["broken"], scope="single"
    ),
    "tasks/later.md": task_file("later", [{"fail": "the later step"}], scope="single"),
}


def fix(origin: Path, tmp: Path, task_id: str, step: str) -> None:
    """Someone fixes the task's script on main (its status stays failed)."""
    rel = f"tasks/{task_id}.md"
    text = show(origin, rel).replace(
        f"- fail: {step}", f"- write:\n    path: {task_id}.txt\n    content: fixed\n"
    )
    push_change(origin, tmp, rel, text + "\n", f"fix {task_id}")


@pytest.fixture
def session_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "sessions.log"
    monkeypatch.setenv(LOG_VAR, str(path))
    return path


@pytest.mark.serial
def test_retry_failure_skip_rerun_and_flow_run_retry(
    prefect_server: str, tmp_path: Path, session_file: Path
) -> None:
    from flows.graph_flow import AAR_KEY, NODES_KEY, tgflow_run

    origin = make_origin(tmp_path, FILES)
    config = RunConfig(
        origin=str(origin),
        agent="scripted",
        validate_commands=["true"],
        max_parallel=2,
        retries=1,
        retry_delay_s=0,
        workspace_root=str(tmp_path / "ws"),
        sandbox="none",  # the scripts log each session to a file outside their checkout
    )

    # --- run 1: flaky retried and merged, broken failed, after-broken skipped ------------
    state = tgflow_run(config, return_state=True)
    assert state.is_failed()
    assert state.message.startswith("3 of 5 nodes did not complete (2 failed, 1 skipped)")
    run1 = state.state_details.flow_run_id
    sessions = session_log(session_file)
    assert sorted(sessions) == ["broken", "broken", "flaky", "flaky", "later", "later", "solid"]
    table = {row["task"]: row for row in artifact(run1, NODES_KEY)}
    assert table["flaky"]["status"] == "completed" and table["flaky"]["attempts"] == 2
    assert table["broken"]["status"] == "failed" and table["broken"]["attempts"] == 2
    assert table["after-broken"]["status"] == "skipped"
    assert table["solid"]["conflicts"] == "SHARED.md"
    shared = show(origin, "SHARED.md").splitlines()  # the conflict was resolved keeping both
    assert sorted(shared) == ["# shared", "flaky was here", "solid was here"]

    aar = artifact(run1, AAR_KEY)
    aar_files = git(origin, "ls-tree", "--name-only", "main", "docs/aar/").split()
    reviews = [f for f in aar_files if f.endswith(".md")]
    assert len(reviews) == 1 and show(origin, reviews[0]) == aar.strip()
    history = json.loads(show(origin, reviews[0].removesuffix(".md") + ".json"))
    assert {n["task_id"]: n["status"] for n in history["nodes"]}["broken"] == "failed"
    assert "solid hit a merge conflict (round 1) in SHARED.md" in aar
    assert "flaky and solid changed SHARED.md at the same time" in aar
    assert "flaky needed 2 attempts and then completed: attempt 1 failed" in aar
    assert "broken failed after 2 attempt(s): agent failed" in aar
    assert "Skipped after-broken: upstream broken failed" in aar

    # --- the Prefect flow-run retry, after fixing broken: only broken and after-broken ---
    fix(origin, tmp_path, "broken", "the broken step")
    session_file.unlink()
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_LOCAL_STORAGE_PATH": _storage_path(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "retry", str(run1),
         "--entrypoint", "flows/graph_flow.py:tgflow_run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "finished with state: FAILED" in done.stdout + done.stderr, done.stdout + done.stderr
    assert sorted(session_log(session_file)) == ["after-broken", "broken", "later", "later"]
    latest = {r.name: r.state_name for r in sorted(task_runs(run1), key=lambda r: r.created)}
    assert latest["flaky"] == latest["solid"] == "Cached"  # persisted results, not re-run

    # --- a new run after fixing later: only later runs ------------------------------------
    fix(origin, tmp_path, "later", "the later step")
    session_file.unlink()
    state = tgflow_run(config, return_state=True)
    assert state.is_completed(), state.message
    assert session_log(session_file) == ["later"]
    table = {
        row["task"]: row["status"] for row in artifact(state.state_details.flow_run_id, NODES_KEY)
    }
    assert table == {
        "broken": "already done", "after-broken": "already done", "flaky": "already done",
        "solid": "already done", "later": "completed",
    }  # fmt: skip


def _storage_path() -> str:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    return str(PREFECT_LOCAL_STORAGE_PATH.value())


def test_only_transient_failures_are_retried() -> None:
    from prefect.states import Failed

    from flows.graph_flow import retry_transient
    from flows.run_context import NodeFailed
    from tasks_lib.run.records import NodeRecord, NodeStatus

    def failed(status: NodeStatus, retryable: bool | None = None) -> Failed:
        record = NodeRecord(task_id="x", status=status)
        return Failed(data=NodeFailed(record, status.retryable if retryable is None else retryable))

    for status in (NodeStatus.FAILED, NodeStatus.STALLED, NodeStatus.TIMED_OUT):
        assert retry_transient(None, None, failed(status))  # type: ignore[arg-type]
    assert not retry_transient(None, None, failed(NodeStatus.BLOCKED))  # type: ignore[arg-type]
    bad_input = failed(NodeStatus.FAILED, retryable=False)  # e.g. an unknown agent in the task
    assert not retry_transient(None, None, bad_input)  # type: ignore[arg-type]
    assert not retry_transient(None, None, Failed(data=RuntimeError("crash")))  # type: ignore[arg-type]


def test_bad_input_inside_the_flow_fails_the_run_with_a_message_not_a_crash(
    prefect_server: str, tmp_path: Path
) -> None:
    """A run from the UI has no pre-flight: a task file that became invalid on main, or an
    unknown ``only`` id, ends the flow run Failed with the problem in repository paths."""
    from flows.graph_flow import tgflow_run

    origin = make_origin(
        tmp_path,
        {"tasks/a.md": task_file("a", []), "tasks/b.md": "---\nid: b\nstatus: bogus\n---\n"},
    )
    config = RunConfig(
        origin=str(origin), agent="scripted", validate_commands=["true"],
        workspace_root=str(tmp_path / "ws"), strict=True,  # refuse the graph, not just b
    )  # fmt: skip
    state = tgflow_run(config, return_state=True)
    assert state.is_failed()
    assert not state.message.startswith("Flow run encountered an exception"), state.message
    assert "nothing was run" in state.message and "\ntasks/b.md: " in state.message
    assert str(tmp_path / "ws") not in state.message

    push_change(origin, tmp_path, "tasks/b.md", task_file("b", []), "fix b")
    state = tgflow_run(config.model_copy(update={"only": ["nosuch"]}), return_state=True)
    assert state.is_failed()
    assert not state.message.startswith("Flow run encountered an exception"), state.message
    assert "only nosuch: no such task id on main (known: a, b)" in state.message
