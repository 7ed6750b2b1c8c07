"""A session's work on the origin while the agent works: its commits and its uncommitted files
reach ``refs/tgflow/checkpoint/<slug>`` without touching the agent's repository, and a run on
another machine (another clone of the origin) takes the task up from there."""

from __future__ import annotations

from pathlib import Path

from helpers.gitrepos import git, make_origin
from helpers.workspaces import open_ws

from tasks_lib.git import worktrees
from tasks_lib.git.checkpoint import checkout_head, checkpoint, drop_checkpoint
from tasks_lib.git.workspace import Workspace

ME = ["-c", "user.name=Agent", "-c", "user.email=agent@example.invalid"]


def task_checkout(tmp_path: Path, root: str) -> tuple[Path, Workspace, Path]:
    """An origin, tgflow's clone of it under ``root`` and the checkout of task t there."""
    origin = make_origin(tmp_path, {"README.md": "demo\n", "tasks/.keep": ""})
    ws = open_ws(origin, tmp_path / root)
    return origin, ws, worktrees.start_task(ws, "t").path


def agent_commits(checkout: Path, rel: str, text: str) -> str:
    (checkout / rel).write_text(text)
    git(checkout, "add", "-A")
    git(checkout, *ME, "commit", "-qm", f"agent: {rel}\n\nTgflow-Task: t")
    return git(checkout, "rev-parse", "HEAD")


def test_commits_and_uncommitted_files_reach_the_origin_and_another_machine_resumes(
    tmp_path: Path,
) -> None:
    origin, ws, checkout = task_checkout(tmp_path, "machine-1")
    head = agent_commits(checkout, "done.txt", "committed\n")
    (checkout / "draft.txt").write_text("not committed yet\n")
    (checkout / ".gitattributes").write_text("* filter=evil\n")
    status_before = git(checkout, "status", "--porcelain")
    # The agent's repository says to run a program on every file git hashes: never run by
    # tgflow (the test's own git status below may run it).
    git(checkout, "config", "filter.evil.clean", f"touch {tmp_path / 'ran'}; cat")

    assert checkout_head(checkout) == head
    assert checkpoint(ws, "t", checkout, with_files=False) == head
    assert git(origin, "rev-parse", "refs/tgflow/checkpoint/t") == head
    snapshot = checkpoint(ws, "t", checkout, with_files=True)

    assert snapshot is not None and snapshot != head
    assert git(origin, "show", f"{snapshot}:draft.txt") == "not committed yet"
    assert git(origin, "rev-parse", f"{snapshot}^") == head
    assert "Tgflow-Task: t" in git(origin, "log", "-1", "--format=%B", snapshot)
    assert not (tmp_path / "ran").exists()
    git(checkout, "config", "--unset", "filter.evil.clean")
    assert git(checkout, "status", "--porcelain") == status_before  # index and HEAD untouched
    assert git(checkout, "rev-parse", "HEAD") == head

    # Machine 1 is gone; machine 2 has its own clone of the origin.
    other = open_ws(origin, tmp_path / "machine-2")
    resumed = worktrees.start_task(other, "t")

    assert resumed.resumed
    assert any("from its checkpoint on the origin" in n for n in resumed.notes)
    assert (resumed.path / "done.txt").read_text() == "committed\n"
    assert (resumed.path / "draft.txt").read_text() == "not committed yet\n"

    assert drop_checkpoint(other, "t", pushed=False)  # seen by the fetch: deleted there
    assert git(origin, "for-each-ref", "refs/tgflow/checkpoint/") == ""


def test_a_checkout_in_the_middle_of_a_merge_is_not_checkpointed(tmp_path: Path) -> None:
    origin, ws, checkout = task_checkout(tmp_path, "ws")
    agent_commits(checkout, "a.txt", "a\n")
    git_dir = Path(git(checkout, "rev-parse", "--git-dir"))
    (git_dir / "MERGE_HEAD").write_text(git(checkout, "rev-parse", "HEAD") + "\n")

    assert checkout_head(checkout) is None
    assert checkpoint(ws, "t", checkout, with_files=True) is None
    assert git(origin, "for-each-ref", "refs/tgflow/checkpoint/") == ""


def test_a_checkpoint_behind_the_branch_is_not_taken(tmp_path: Path) -> None:
    _, ws, checkout = task_checkout(tmp_path, "ws")
    agent_commits(checkout, "a.txt", "a\n")
    checkpoint(ws, "t", checkout, with_files=False)
    agent_commits(checkout, "b.txt", "b\n")
    worktrees.collect(ws, checkout)
    worktrees.push_branch(ws, "t")  # the branch, saved later, holds more than the checkpoint
    worktrees.remove_worktree(ws, "t")
    ws.fetch()

    again = worktrees.start_task(ws, "t")

    assert not any("checkpoint" in n for n in again.notes)
    assert (again.path / "b.txt").is_file()


def test_a_head_the_agent_pointed_at_an_endless_file_or_outside_is_not_read(
    tmp_path: Path,
) -> None:
    """While the session runs its git dir is the agent's: HEAD may be a symlink to
    /dev/zero, or name a ref outside the repository; the checkpoint gives up, never hangs."""
    _, ws, checkout = task_checkout(tmp_path, "ws")
    agent_commits(checkout, "a.txt", "a\n")
    git_dir = Path(git(checkout, "rev-parse", "--absolute-git-dir"))
    head = git_dir / "HEAD"
    head.unlink()
    head.symlink_to("/dev/zero")

    assert checkout_head(checkout) is None
    assert checkpoint(ws, "t", checkout, with_files=True) is None

    head.unlink()
    outside = tmp_path / "elsewhere"
    outside.write_text(git(tmp_path / "ws" / "integration", "rev-parse", "HEAD") + "\n")
    head.write_text("ref: refs/../../../elsewhere\n")
    assert checkout_head(checkout) is None
