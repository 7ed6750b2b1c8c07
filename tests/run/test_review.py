"""Review tasks validate main as a checkpoint: no worktree, no merge, a verdict on main."""

from __future__ import annotations

from pathlib import Path

from helpers.gitrepos import git, log, make_origin, push_change, show

from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.records import NodeStatus
from tasks_lib.run.review import run_review

REVIEW = """---
id: check
name: Release check
status: pending
level: review
---

## Description

Everything merged and green.
"""


def review(origin: Path, tmp_path: Path, command: str):
    ws = Workspace.open(str(origin), tmp_path / "ws")
    task = ws.find_task("check")
    assert task is not None
    settings = NodeSettings(validate_commands=[command])
    return ws, run_review(ws, task, settings)


def test_a_passing_review_completes_on_main_without_a_merge(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"tasks/check.md": REVIEW, "ok.txt": "yes\n"})
    ws, record = review(origin, tmp_path, "grep -q yes ok.txt")
    assert record.status is NodeStatus.COMPLETED
    assert log(origin)[:2] == ["chore: update task check status to completed", "initial"]
    text = show(origin, "tasks/check.md")
    assert "status: completed" in text and "Review passed on main" in text
    assert not ws.worktrees_dir.exists() or not any(ws.worktrees_dir.iterdir())
    assert git(origin, "branch", "--list", "tgflow/*") == ""


def test_a_failing_review_fails_with_the_output_in_the_notes(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"tasks/check.md": REVIEW, "ok.txt": "no\n"})
    _, record = review(origin, tmp_path, "echo checking; grep -q yes ok.txt")
    assert record.status is NodeStatus.FAILED
    assert record.reason.startswith("validation of main at ")
    text = show(origin, "tasks/check.md")
    assert "status: failed" in text and "**failed** (tgflow review, attempt 1" in text
    assert "checking" in text  # the command's output, for whoever fixes it


def test_a_review_already_completed_on_main_runs_nothing(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"tasks/check.md": REVIEW, "ok.txt": "no\n"})
    push_change(origin, tmp_path, "tasks/check.md", REVIEW.replace("pending", "completed"), "done")
    _, record = review(origin, tmp_path, "false")
    assert record.status is NodeStatus.COMPLETED and record.already_done
    assert git(origin, "log", "-1", "--format=%s", "main") == "done"


def test_output_holding_a_code_fence_stays_inside_the_notes(tmp_path: Path) -> None:
    from tasks_lib.graph.taskfile import parse_task

    origin = make_origin(tmp_path, {"tasks/check.md": REVIEW})
    command = "printf 'first\\n```\\n## Injected\\nafter the heading\\n'; false"
    _, record = review(origin, tmp_path, command)
    assert record.status is NodeStatus.FAILED
    task, problems, _ = parse_task(show(origin, "tasks/check.md"), Path("tasks/check.md"))
    assert task is not None, problems
    assert "after the heading" in (task.section("Notes") or "")
    assert task.section("Injected") is None
