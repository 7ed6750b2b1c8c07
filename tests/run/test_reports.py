"""What a run reports about itself: failures said in one meaningful line, the AAR's causes,
quotes and logs, what was left behind, what a review checked, and where the AAR goes."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers.gitrepos import git, make_origin, show, task_md
from helpers.prefect_fixtures import artifact

from tasks_lib.agents.base import Agent, Outcome, SessionRequest, SessionResult
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.aar import write_aar
from tasks_lib.run.config import NodeSettings, RunConfig
from tasks_lib.run.records import Cause, Conflict, NodeRecord, NodeStatus, RunRecord, combine
from tasks_lib.run.review import run_review
from tasks_lib.run.validation import run_validation

T0 = datetime(2026, 11, 3, 10, 0, 0, tzinfo=UTC)
PYTEST_OUTPUT = (
    "collected 2 items\ntests/test_x.py .F\nE       assert 1 == 2\n"
    "FAILED tests/test_x.py::test_x - assert 1 == 2\n1 failed, 1 passed in 0.10s\n"
)
LONG_TAIL = "\n".join(f"output line {i:02}" for i in range(1, 41))


def test_a_failed_command_is_summed_up_by_its_first_meaningful_line(tmp_path: Path) -> None:
    (tmp_path / "out.txt").write_text(PYTEST_OUTPUT)
    result = run_validation(["cat out.txt; exit 1"], tmp_path, 10)
    assert result.summary == "FAILED tests/test_x.py::test_x - assert 1 == 2"
    assert result.output_tail.splitlines()[0] == (
        "`cat out.txt; exit 1` failed (exit code 1): FAILED tests/test_x.py::test_x - assert 1 == 2"
    )
    quiet = run_validation(["echo one; echo last words; exit 2"], tmp_path, 10)
    assert quiet.summary == "last words"  # nothing matches: the last non-empty line


def validation_failure(where: str = "on the branch") -> str:
    return (
        f"validation {where} failed: `pytest -q` failed (exit code 1): FAILED t.py::x\n{LONG_TAIL}"
    )


def attempt(task_id: str, number: int, status: NodeStatus, **kw: Any) -> NodeRecord:
    """One try as the node code leaves it: a fresh record, closed as attempt ``number``."""
    start = T0 + timedelta(seconds=10 * number)
    rec = NodeRecord(task_id=task_id, status=status, started_at=start, **kw)
    return rec.close_attempt(number)


def over_attempts(*tries: NodeRecord) -> NodeRecord:
    record = tries[0]
    for later in tries[1:]:
        record = combine(record.attempts, later)
    return record


def run_of(nodes: list[NodeRecord]) -> RunRecord:
    return RunRecord(
        run_name="r1", origin="/tmp/origin.git", base="main", started_at=T0,
        finished_at=T0 + timedelta(seconds=100), max_parallel=2, nodes=nodes,
    )  # fmt: skip


def test_the_aar_counts_every_attempt_says_why_each_retry_happened_and_quotes_briefly() -> None:
    core = over_attempts(
        attempt(
            "core", 1, NodeStatus.FAILED, cause=Cause.CONFLICT,
            reason="merge into main still conflicts after 1 resolution round(s): lib/a.py",
            conflicts=[Conflict(round=1, files=["lib/a.py"])],
        ),
        attempt("core", 2, NodeStatus.FAILED, cause=Cause.VALIDATION, reason=validation_failure()),
        attempt("core", 3, NodeStatus.COMPLETED, cleanup={"worktree": True, "branch": True}),
    )  # fmt: skip
    core.log_path = "/ws/logs/r1/core.log"
    broken = over_attempts(
        attempt("broken", 1, NodeStatus.FAILED, cause=Cause.AGENT, reason="agent failed: boom"),
        attempt(
            "broken", 2, NodeStatus.FAILED, cause=Cause.VALIDATION, reason=validation_failure()
        ),
    )
    broken.log_path = "/ws/logs/r1/broken.log"
    text = write_aar(run_of([core, broken]))

    assert len(core.attempts) == 3
    assert "core needed 3 attempts and then completed" in text
    assert "attempt 1 failed (conflict race: the base moved while it merged; merge into" in text
    assert (
        "attempt 2 failed (validation; validation on the branch failed: `pytest -q` failed "
        "(exit code 1): FAILED t.py::x)" in text
    )
    assert "attempt 3 completed" in text
    assert "acceptance criteria" not in text  # a race and a test failure are not unclear criteria
    assert (
        "broken failed after 2 attempt(s)" in text
        and "attempt 1 failed (agent failure; agent failed" in text
    )
    assert "output line 01" in text and "output line 02" in text
    assert "output line 03" not in text  # at most 3 lines of a failure, never the whole tail
    assert "/ws/logs/r1/core.log" in text and "/ws/logs/r1/broken.log" in text


def test_a_resumed_stale_branch_is_named_and_a_kept_branch_is_left_behind() -> None:
    old = over_attempts(
        attempt(
            "old", 1, NodeStatus.FAILED, cause=Cause.VALIDATION, reason=validation_failure(),
            notes=[
                "resumed tgflow/old: it already held 2 commit(s) not on main",
                "kept branch tgflow/old: it holds work not on main",
            ],
            cleanup={"worktree": True},
        ),
    )  # fmt: skip
    clean = attempt("clean", 1, NodeStatus.COMPLETED, cleanup={"worktree": True, "branch": True})
    text = write_aar(run_of([old, clean]))
    assert "stale branch" in text and "resumed tgflow/old" in text
    assert "Cleanup left behind: old: branch tgflow/old (it holds work not on main)" in text
    assert "nothing left behind" not in text


REVIEWED = """---
id: core
name: Core
status: completed
---

## Description

Core work.

## Acceptance Criteria

- [ ] core prints hello in French
"""

REVIEW = """---
id: check
name: Check core
status: pending
level: review
depends_on: [core]
---

## Description

Check what core did.
"""


class Capture(Agent):
    name = "capture"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def run(self, request: SessionRequest) -> SessionResult:
        self.prompts.append(request.prompt)
        return SessionResult(Outcome.SUCCEEDED, log=["PASS core prints hello in French"])


def reviewed_origin(tmp_path: Path) -> tuple[Workspace, Path]:
    origin = make_origin(tmp_path, {"tasks/core.md": REVIEWED, "tasks/check.md": REVIEW})
    return Workspace.open(str(origin), tmp_path / "ws"), origin


def test_a_reviewer_gets_the_acceptance_criteria_of_the_tasks_it_reviews(tmp_path: Path) -> None:
    ws, origin = reviewed_origin(tmp_path)
    task = ws.find_task("check")
    assert task is not None
    reviewer = Capture()
    record = run_review(ws, task, NodeSettings(validate_commands=["true"]), reviewer=reviewer)
    assert record.status is NodeStatus.COMPLETED, record.reason
    assert "core prints hello in French" in reviewer.prompts[0]
    assert "acceptance criteria not checked" not in show(origin, "tasks/check.md")


def test_a_review_without_a_reviewer_says_it_checked_the_tests_only(tmp_path: Path) -> None:
    ws, origin = reviewed_origin(tmp_path)
    task = ws.find_task("check")
    assert task is not None
    record = run_review(ws, task, NodeSettings(validate_commands=["true"]))
    assert record.status is NodeStatus.COMPLETED
    assert "tests only; acceptance criteria not checked" in show(origin, "tasks/check.md")


RUN: dict[str, Any] = {"agent": "scripted", "validate_commands": ["true"]}


def WRITE(path: str) -> dict:
    return {"write": {"path": path, "content": "ok\n"}}


@pytest.mark.prefect
def test_a_run_where_nothing_ran_commits_no_aar(prefect_server: str, tmp_path: Path) -> None:
    from flows.graph_flow import AAR_KEY, tgflow_run

    origin = make_origin(tmp_path, {"tasks/done.md": task_md("done", status="completed")})
    before = git(origin, "rev-parse", "main")
    state = tgflow_run(
        RunConfig(origin=str(origin), workspace_root=str(tmp_path / "ws"), **RUN),
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert git(origin, "rev-parse", "main") == before
    assert artifact(state.state_details.flow_run_id, AAR_KEY).startswith("# AAR: ")


@pytest.mark.prefect
def test_aar_commit_off_commits_nothing_but_the_artifact_and_the_log_exist(
    prefect_server: str, tmp_path: Path
) -> None:
    from flows.graph_flow import AAR_KEY, tgflow_run

    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=[WRITE("a.txt")])})
    config = RunConfig(
        origin=str(origin), workspace_root=str(tmp_path / "ws"), aar_commit=False,
        agent="scripted", validate_commands=["echo checking a"],
    )  # fmt: skip
    state = tgflow_run(config, return_state=True)
    assert state.is_completed(), state.message
    assert show(origin, "a.txt") == "ok"
    assert "docs" not in git(origin, "ls-tree", "--name-only", "main").split()
    aar = artifact(state.state_details.flow_run_id, AAR_KEY)
    logs = list((tmp_path / "ws" / "logs").glob("*/a.log"))
    assert len(logs) == 1 and "checking a" in logs[0].read_text()
    assert f"Node logs: {logs[0].parent}/" in aar


@pytest.mark.prefect
def test_a_committed_aar_is_kept_out_of_release_archives(
    prefect_server: str, tmp_path: Path
) -> None:
    from flows.graph_flow import tgflow_run

    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=[WRITE("a.txt")])})
    config = RunConfig(
        origin=str(origin), workspace_root=str(tmp_path / "ws"), aar_dir="reviews", **RUN
    )
    state = tgflow_run(config, return_state=True)
    assert state.is_completed(), state.message
    assert "reviews export-ignore" in show(origin, ".gitattributes").splitlines()
    listed = git(origin, "ls-tree", "--name-only", "main", "reviews/").split()
    assert len(listed) == 2 and {Path(f).suffix for f in listed} == {".md", ".json"}
    archive = tmp_path / "release.tar"
    git(origin, "archive", "-o", str(archive), "main")
    with tarfile.open(fileobj=io.BytesIO(archive.read_bytes())) as tar:
        names = tar.getnames()
    assert "a.txt" in names and not any(n.startswith("reviews") for n in names)
