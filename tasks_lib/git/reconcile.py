"""The start of a run: the clone put in order after whatever the last run left (a crash, a
kill, a run without push), without losing any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from tasks_lib.git.workspace import BRANCH_PREFIX, Workspace
from tasks_lib.git.worktrees import drop_if_deleted_on_origin, made_by_tgflow, retire_worktree

UNPUSHED_PREFIX = "tgflow-unpushed/"


@dataclass
class ReconcileReport:
    removed_worktrees: list[str] = field(default_factory=list)
    saved_work: list[str] = field(default_factory=list)  # branches that got a WIP commit
    resumable: dict[str, int] = field(default_factory=dict)  # branch → commits not on base
    deleted_branches: list[str] = field(default_factory=list)
    # branch → the ref in the clone keeping it: a person deleted it on the origin
    dropped: dict[str, str] = field(default_factory=dict)
    kept_unpushed: str | None = None  # branch holding merges an earlier --no-push run left
    foreign: list[str] = field(default_factory=list)  # named like task branches, not tgflow's


def reconcile(ws: Workspace, push: bool = True) -> ReconcileReport:
    """No stale checkouts, task branches sorted into resumable (work not on base: never
    deleted), merged (deleted), foreign (a person's, named like tgflow's: never touched) and
    dropped (deleted on the origin by a person: kept aside in
    the clone, never resumed or pushed back). Callers hold ``merge_lock``.

    A pushing run stands on origin's base; merges an earlier ``--no-push`` run left on our
    local base are kept on a ``tgflow-unpushed/…`` branch first, never dropped. A run without
    push goes on from the local base, so it sees its own earlier merges, and never touches
    the origin's branches.
    """
    report = ReconcileReport()
    ws.fetch()
    if push:
        unpushed = ws.git(
            ws.integration, "rev-list", ws.base_ref(), f"^refs/remotes/origin/{ws.base}"
        ).split()
        if unpushed:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            report.kept_unpushed = f"{UNPUSHED_PREFIX}{stamp}-{unpushed[0][:8]}"
            ws.git(ws.integration, "branch", report.kept_unpushed, ws.base_ref())
        ws.sync()
    else:
        ws.reset_to(ws.base_ref())
    if ws.worktrees_dir.is_dir():
        for path in sorted(ws.worktrees_dir.iterdir()):
            notes = retire_worktree(ws, path)
            report.removed_worktrees.append(path.name)
            report.saved_work += [n for n in notes if not n.startswith("removed")]
    # After the checkouts are gone: they borrowed the clone's objects.
    ws.git(ws.integration, "-c", "gc.auto=6700", "gc", "--auto", "--quiet")
    for name in _refs(ws, f"refs/heads/{BRANCH_PREFIX}"):
        ref = drop_if_deleted_on_origin(ws, name)
        if ref:
            report.dropped[name] = ref
    local = _refs(ws, f"refs/heads/{BRANCH_PREFIX}")
    remote = _refs(ws, f"refs/remotes/origin/{BRANCH_PREFIX}")
    for name in sorted(set(local) | set(remote)):
        if name in remote and not made_by_tgflow(ws, remote[name]):
            report.foreign.append(name)  # a person's branch named like a task's: theirs
            continue
        ahead = max(
            (len(ws.commits_ahead(r)) for r in (local.get(name), remote.get(name)) if r),
            default=0,
        )
        if ahead:
            report.resumable[name] = ahead
            continue
        if name in local:
            ws.git(ws.integration, "branch", "-D", name)
        if name in remote and push:
            ws.push(f":refs/heads/{name}")
        if name in local or push:
            report.deleted_branches.append(name)
    return report


def _refs(ws: Workspace, prefix: str) -> dict[str, str]:
    """Branch name → full ref, for the refs under ``prefix``."""
    out = ws.git(ws.integration, "for-each-ref", "--format=%(refname)", prefix)
    short = prefix.rsplit(BRANCH_PREFIX, 1)[0]
    return {r[len(short) :]: r for r in out.split("\n") if r}
