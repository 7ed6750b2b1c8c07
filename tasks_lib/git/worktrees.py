"""A task's worktree and branch, from its start (or resumption) to its removal.

Work is never thrown away: a worktree that goes first has its leftovers committed, commits on
a detached HEAD are kept on a branch, and a branch that holds work not on base is resumed by
the next run (which always hands it to the agent again). A branch the user deleted on the
origin stays deleted: tgflow keeps its copy aside (``backup``), never resumes or pushes it.
Callers hold ``merge_lock`` around what moves shared refs (adding or removing a worktree,
creating, deleting or pushing a branch).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks_lib.git.backup import set_aside_locally
from tasks_lib.git.workspace import BRANCH_PREFIX, Workspace

WIP_PREFIX = "tgflow: wip"  # unfinished work tgflow committed for the agent
# branch.<name>.<this> in the clone's config: a commit of the branch the origin held (tgflow
# pushed it or took the branch from there). Deleting the branch drops the key with it.
PUBLISHED_KEY = "tgflowpublished"


@dataclass
class TaskCheckout:
    path: Path
    branch: str
    resumed: bool  # the branch already held commits that are not on base
    notes: list[str] = field(default_factory=list)


def start_task(ws: Workspace, task_id: str) -> TaskCheckout:
    """A worktree for the task: on its existing branch when that holds work (resume), else on
    a new branch from the current base. The origin's copy counts: the clone is only a cache,
    so a branch deleted there is set aside, not resumed."""
    branch, path = ws.branch(task_id), ws.worktree_path(task_id)
    notes: list[str] = []
    if path.exists() or _registered(ws, path):
        notes += retire_worktree(ws, path)
    local, remote = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
    dropped = drop_if_deleted_on_origin(ws, branch)
    if dropped:
        notes.append(
            f"{branch} was deleted on the origin: not resumed, its commits kept in tgflow's "
            f"clone as {dropped}; starting afresh from {ws.base}"
        )
    has_local, has_remote = ws.ref_exists(local), ws.ref_exists(remote)
    if has_remote and ws.commits_ahead(remote):
        if not has_local:
            ws.git(ws.integration, "branch", "--quiet", "--no-track", branch, remote)
            has_local = True
        elif ws.is_ancestor(local, remote):
            ws.git(ws.integration, "branch", "--quiet", "-f", branch, remote)
        elif not ws.is_ancestor(remote, local):
            notes.append(f"{branch} and origin/{branch} diverged; continuing from the local one")
        if ws.is_ancestor(remote, local):
            _mark_published(ws, branch, remote)
    if has_local and ws.commits_ahead(local):
        ws.git(ws.integration, "worktree", "add", "--quiet", str(path), branch)
        resumed = len(ws.commits_ahead(local))
        notes.append(f"resumed {branch}: it already held {resumed} commit(s) not on {ws.base}")
        return TaskCheckout(path, branch, True, notes)
    ws.git(ws.integration, "worktree", "add", "--quiet", "-B", branch, str(path), ws.base_ref())
    return TaskCheckout(path, branch, False, notes)


def _mark_published(ws: Workspace, branch: str, ref: str) -> None:
    sha = ws.git(ws.integration, "rev-parse", ref)
    ws.git(ws.integration, "config", f"branch.{branch}.{PUBLISHED_KEY}", sha)


def drop_if_deleted_on_origin(ws: Workspace, branch: str) -> str | None:
    """A local branch whose work the origin held and whose origin copy is gone was deleted
    there by a person: set it aside (the ref is returned) so that no run resumes or pushes
    it back. A branch the origin never had (never pushed) is not touched."""
    local = f"refs/heads/{branch}"
    if not ws.ref_exists(local) or ws.ref_exists(f"refs/remotes/origin/{branch}"):
        return None
    key = f"branch.{branch}.{PUBLISHED_KEY}"
    published = ws.git(ws.integration, "config", "--get", key, check=False)
    if not published or published not in ws.commits_ahead(local):
        return None  # never on the origin, or a stale key of an earlier, merged branch
    return set_aside_locally(ws, branch)


def _registered(ws: Workspace, path: Path) -> bool:
    listing = ws.git(ws.integration, "worktree", "list", "--porcelain")
    return f"worktree {path}" in listing.splitlines()


def commit_all(
    ws: Workspace, cwd: Path, message: str, author: tuple[str, str] | None = None
) -> str | None:
    """Commit everything the worktree holds (the Safe Exit folder is in info/exclude).
    ``author``: whose work it is, when not tgflow's (tgflow is the committer either way)."""
    ws.git(cwd, "add", "-A")
    if not ws.git(cwd, "diff", "--cached", "--name-only"):
        return None
    by = ["--author", f"{author[0]} <{author[1]}>"] if author else []
    ws.git(cwd, "commit", "--quiet", "--no-verify", *by, "-m", message)
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


def revert_paths(ws: Workspace, cwd: Path, pathspecs: Sequence[str], message: str) -> list[str]:
    """Undo, in one commit, the branch's changes (since it left base) to the files these git
    pathspecs match (a folder, a file); returns those files."""
    mb = ws.git(cwd, "merge-base", ws.base_ref(), "HEAD")
    diff = ws.git(cwd, "diff", "--no-renames", "--name-only", mb, "HEAD", "--", *pathspecs)
    changed = [p for p in diff.split("\n") if p]
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
    if pushed.status == 0:
        _mark_published(ws, branch, f"refs/heads/{branch}")
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
