"""A task's worktree and branch, from its start (or resumption) to its removal.

Work is never thrown away: a worktree that goes first has its leftovers committed, commits on
a detached HEAD are kept on a branch, and a branch that holds work not on base is resumed by
the next run. Callers hold ``merge_lock`` around what moves shared refs (adding or removing a
worktree, creating, deleting or pushing a branch).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tasks_lib.git.workspace import BRANCH_PREFIX, Workspace

WIP_PREFIX = "tgflow: wip"  # a branch whose tip says this must be developed further


@dataclass
class TaskCheckout:
    path: Path
    branch: str
    resumed: bool  # the branch already held commits that are not on base
    needs_agent: bool  # False only when resuming finished work (tip is not a WIP commit)
    notes: list[str] = field(default_factory=list)


def start_task(ws: Workspace, task_id: str) -> TaskCheckout:
    """A worktree for the task: on its existing branch when that holds work (resume), else on
    a new branch from the current base. The origin's copy counts: the clone is only a cache."""
    branch, path = ws.branch(task_id), ws.worktree_path(task_id)
    notes: list[str] = []
    if path.exists() or _registered(ws, path):
        notes += retire_worktree(ws, path)
    local, remote = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
    has_local, has_remote = ws.ref_exists(local), ws.ref_exists(remote)
    if has_remote and ws.commits_ahead(remote):
        if not has_local:
            ws.git(ws.integration, "branch", "--quiet", "--no-track", branch, remote)
            has_local = True
        elif ws.is_ancestor(local, remote):
            ws.git(ws.integration, "branch", "--quiet", "-f", branch, remote)
        elif not ws.is_ancestor(remote, local):
            notes.append(f"{branch} and origin/{branch} diverged; continuing from the local one")
    if has_local and ws.commits_ahead(local):
        ws.git(ws.integration, "worktree", "add", "--quiet", str(path), branch)
        tip = ws.git(path, "log", "-1", "--format=%s")
        resumed = len(ws.commits_ahead(local))
        notes.append(f"resumed {branch}: it already held {resumed} commit(s) not on {ws.base}")
        return TaskCheckout(path, branch, True, tip.startswith(WIP_PREFIX), notes)
    ws.git(ws.integration, "worktree", "add", "--quiet", "-B", branch, str(path), ws.base_ref())
    return TaskCheckout(path, branch, False, True, notes)


def _registered(ws: Workspace, path: Path) -> bool:
    listing = ws.git(ws.integration, "worktree", "list", "--porcelain")
    return f"worktree {path}" in listing.splitlines()


def commit_all(ws: Workspace, cwd: Path, message: str) -> str | None:
    """Commit everything the worktree holds (the Safe Exit folder is in info/exclude)."""
    ws.git(cwd, "add", "-A")
    if not ws.git(cwd, "diff", "--cached", "--name-only"):
        return None
    ws.git(cwd, "commit", "--quiet", "--no-verify", "-m", message)
    return ws.head(cwd)


def save_work(ws: Workspace, path: Path, message: str) -> list[str]:
    """Before a worktree goes: abort a half-done merge, commit what is left, and keep the
    commits on a branch even when the agent left HEAD detached."""
    notes: list[str] = []
    if ws.in_merge(path):
        ws.git(path, "merge", "--abort", check=False)
        notes.append(f"aborted a half-done merge in {path}")
    sha = commit_all(ws, path, message)
    branch = ws.git(path, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    if sha:
        notes.append(f"saved uncommitted work on {branch or 'a detached HEAD'} as {sha[:10]}")
    if not branch:
        head = ws.head(path)
        if ws.commits_ahead(head):
            rescue = f"{BRANCH_PREFIX}rescued-{path.name}-{head[:8]}"
            ws.git(ws.integration, "branch", "-f", rescue, head)
            notes.append(f"HEAD of {path} was detached; its commits are kept on {rescue}")
    return notes


def retire_worktree(ws: Workspace, path: Path) -> list[str]:
    """Remove a leftover worktree (of an interrupted run), first saving any work in it."""
    notes: list[str] = []
    if (path / ".git").exists():
        notes = save_work(
            ws,
            path,
            f"{WIP_PREFIX}: uncommitted work found in {path.name} after an interrupted run",
        )
    ws.git(ws.integration, "worktree", "remove", "--force", str(path), check=False)
    if path.exists():
        shutil.rmtree(path)
    ws.git(ws.integration, "worktree", "prune")
    notes.append(f"removed stale worktree {path}")
    return notes


def revert_paths(ws: Workspace, cwd: Path, folder: str, message: str) -> list[str]:
    """Undo, in one commit, the branch's changes to files under ``folder``."""
    mb = ws.git(cwd, "merge-base", ws.base_ref(), "HEAD")
    changed = [
        p for p in ws.git(cwd, "diff", "--name-only", mb, "HEAD", "--", folder).split("\n") if p
    ]
    if not changed:
        return []
    for rel in changed:
        if ws.succeeds(cwd, "cat-file", "-e", f"{mb}:{rel}"):
            ws.git(cwd, "checkout", mb, "--", rel)
        else:
            ws.git(cwd, "rm", "--quiet", "-f", "--", rel)
    ws.git(cwd, "commit", "--quiet", "--no-verify", "-m", message)
    return changed


def push_branch(ws: Workspace, task_id: str) -> tuple[bool, str]:
    """Back the task branch up on the origin (the workspace is only a cache)."""
    branch = ws.branch(task_id)
    pushed = ws.push(f"refs/heads/{branch}:refs/heads/{branch}")
    return pushed.status == 0, pushed.output


def delete_branch(ws: Workspace, task_id: str) -> bool:
    return ws.succeeds(ws.integration, "branch", "-D", ws.branch(task_id))


def remove_worktree(ws: Workspace, task_id: str) -> bool:
    path = ws.worktree_path(task_id)
    ws.git(ws.integration, "worktree", "remove", "--force", str(path), check=False)
    ws.git(ws.integration, "worktree", "prune")
    return not path.exists()


def cleanup(ws: Workspace, task_id: str, push: bool = True) -> dict[str, bool]:
    """After a merge: remove the worktree, the local branch and (when pushing: the merge is
    then on the origin too) the remote branch."""
    branch = ws.branch(task_id)
    result = {"worktree": remove_worktree(ws, task_id)}
    if ws.ref_exists(f"refs/heads/{branch}"):
        result["branch"] = delete_branch(ws, task_id)
    if push and ws.ref_exists(f"refs/remotes/origin/{branch}"):
        result["remote_branch"] = ws.push(f":refs/heads/{branch}").status == 0
    return result
