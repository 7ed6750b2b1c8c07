"""Task branches set aside: their commits kept under ``refs/tgflow/…``, outside ``refs/heads``,
where no run resumes, pushes or deletes them. Nothing here deletes a commit.

Two reasons to set a branch aside: ``tgflow reset`` (and a run's ``reset`` setting) starts a
task afresh from base, keeping the old branch as a backup on the origin; and a branch the user
deleted on the origin stays deleted, tgflow's copy kept in its own clone only. Callers hold
``merge_lock``, and no worktree may be on the branch (reconcile retires them first).
"""

from __future__ import annotations

from datetime import UTC, datetime

from tasks_lib.git import WorkspaceError
from tasks_lib.git.workspace import BRANCH_PREFIX, Workspace

BACKUP_REFS = "refs/tgflow/backup/"  # on the origin (and in the clone): reset branches
DROPPED_REFS = "refs/tgflow/dropped/"  # in the clone only: branches deleted on the origin


def _aside_ref(prefix: str, branch: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{prefix}{branch.removeprefix(BRANCH_PREFIX)}/{stamp}"


def set_aside_locally(ws: Workspace, branch: str) -> str:
    """Keep the local branch's commits under a dropped ref and delete the branch; the ref."""
    ref = _aside_ref(DROPPED_REFS, branch)
    ws.git(ws.integration, "update-ref", ref, f"refs/heads/{branch}")
    with ws.writing_config():  # git drops the branch's section of the config with it
        ws.git(ws.integration, "branch", "--quiet", "-D", branch)
    return ref


def move_aside(ws: Workspace, task_id: str) -> str | None:
    """The task's kept branch becomes a backup ref on the origin (pushed first), then the
    branch is deleted on the origin and in the clone; the backup ref, or None without a branch.

    The backup holds the tip that contains the other (as ``start_task`` would resume it);
    when the clone's and the origin's copies diverged, the origin's is kept too (``-origin``).
    """
    branch = ws.branch(task_id)
    local, remote = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
    local_sha = ws.commit_of(local)
    remote_sha = ws.commit_of(remote)
    if local_sha is None and remote_sha is None:
        return None
    ref = _aside_ref(BACKUP_REFS, branch)
    keep: dict[str, str] = {}
    if local_sha and remote_sha and ws.is_ancestor(local_sha, remote_sha):
        keep[ref] = remote_sha
    elif local_sha:
        keep[ref] = local_sha
        if remote_sha and not ws.is_ancestor(remote_sha, local_sha):
            keep[f"{ref}-origin"] = remote_sha
    elif remote_sha:
        keep[ref] = remote_sha
    for name, sha in keep.items():
        pushed = ws.push(f"{sha}:{name}")
        if pushed.status != 0:
            raise WorkspaceError(
                f"could not back {branch} up as {name} on {ws.origin}: {pushed.output.strip()}; "
                "nothing was deleted. Check that you may push there, then run again."
            )
        ws.git(ws.integration, "update-ref", name, sha)
    if remote_sha:
        deleted = ws.push(f":refs/heads/{branch}")
        if deleted.status != 0:
            raise WorkspaceError(
                f"backed {branch} up as {ref} but could not delete it on {ws.origin}: "
                f"{deleted.output.strip()}. Delete the branch there by hand, or run again."
            )
    if local_sha:
        ws.git(ws.integration, "branch", "--quiet", "-D", branch)
    return ref


def reset_tasks(ws: Workspace, task_ids: list[str]) -> list[str]:
    """``move_aside`` for each task, after reconcile (``tgflow reset``, a run's ``reset``
    setting); one line per task saying what happened."""
    lines = []
    for task_id in task_ids:
        ref = move_aside(ws, task_id)
        lines.append(
            f"{task_id}: {ws.branch(task_id)} moved aside to {ref} on {ws.origin}; "
            f"it starts afresh from {ws.base}"
            if ref
            else f"{task_id}: no kept branch ({ws.branch(task_id)}); nothing to reset"
        )
    return lines
