"""Every change of the base branch, made one way: ``change_base``.

Base is shared with the origin and with whoever else pushes there, so a change of it (a merge,
a status update, the after-action review) is a transaction: stand on the current base, edit,
push; when the origin moved meanwhile, redo the edit on its new base (bounded, never forced);
on any failure put base back, so nothing half-done is ever left or pushed. Callers hold
``merge_lock``. Base never moves backwards unseen: when the origin's base lost what this run
pushed (an agent can reach the origin and force it), nothing more is merged onto it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from tasks_lib.git import BaseRewound
from tasks_lib.git.runner import GitError
from tasks_lib.git.workspace import SETTLED_REF, TASK_TRAILER, Workspace


@dataclass
class MergeResult:
    merged: bool
    pre_sha: str
    sha: str | None = None
    conflicts: list[str] = field(default_factory=list)
    tree: str | None = None  # the merge commit's tree (read with ``sha``, by the reader)


@dataclass
class BaseChange:
    """How ``change_base`` ended: ``reason`` is None when base holds the edit (and the origin
    too, when pushing); ``attempts`` counts the edits (more than one: the origin moved)."""

    reason: str | None
    attempts: int = 1
    with_base: list[str] = field(default_factory=list)  # the ``also`` refspecs pushed with it
    dropped: list[str] = field(default_factory=list)  # the ``drop`` refs deleted with its push
    settled: bool = False  # base was pushed, and settled with its tracking ref


def change_base(
    ws: Workspace,
    edit: Callable[[], str | None],
    *,
    push: bool,
    retries: int,
    also: Callable[[], list[str]] | None = None,
    drop: Callable[[], list[str]] | None = None,
    cheap_redo: bool = False,
) -> BaseChange:
    """Refresh, run ``edit()`` (it commits on base; returns a failure reason or None), push
    when asked with ``edit`` as the redo on a moved origin. On a failure, or an exception
    (re-raised), base goes back to origin's base when pushing, else to the pre-edit commit.
    An edit that commits nothing pushes nothing.

    ``also()``, asked after each edit: refspecs to push in the same push as base, atomically
    (e.g. deleting the branches merged: one push where there would be one more per branch).
    A push of them all that fails, whatever for, is not judged: base is pushed alone, exactly
    as without them, and they are not in ``with_base`` (the caller pushes them itself).
    ``drop()``, asked with it: local refs that go once base is pushed, in the transaction that
    records the push (the branches merged: their work is on base; a command less each). They
    stay when base is not pushed; ``dropped`` names those that went.

    ``cheap_redo``: ``edit`` costs little to do again (a merge with no validation to run).
    When the origin's base is, as far as this process can know, the commit it pushed there
    last (no other process takes turns on the merge lock), the fetch before the edit is
    skipped (and so is the reset of the worktree, when it is still as the last such edit left
    it: ``Workspace.stand_on``): the push leases base at the commit the edit stood on, so an
    origin that moved meanwhile (someone pushed, or forced it back) refuses it, and the edit
    is redone on the fetched base like after any rejected push, which costs no more than the
    fetch saved."""
    pre = ws.stand_on(_tracking(ws)) if push and cheap_redo and _known(ws) else ws.refresh(push)
    fallback = f"refs/remotes/origin/{ws.base}" if push else pre
    try:
        if push:
            _refuse_rewound(ws, pre)
        change = BaseChange(edit())
        if change.reason is None and push:
            head = ws.head()
            if head != pre:
                change = _push_base(ws, edit, retries, head, pre, also or list, drop or list)
    except BaseException:
        ws.reset_to(fallback)
        ws.settle()
        raise
    if change.reason is not None:
        ws.reset_to(fallback)
    elif cheap_redo:  # a merge and a status commit: nothing else is left in the worktree
        ws.mark_clean()
    if not change.settled:
        ws.settle()
    return change


def merge(
    ws: Workspace,
    task_id: str,
    name: str,
    strategy: Literal["merge", "squash"] = "merge",
    author: tuple[str, str] | None = None,
    at: str | None = None,
    cwd: Path | None = None,
) -> MergeResult:
    """Land the task branch on base; a conflict is aborted, never left.

    ``merge``: a ``--no-ff`` merge commit by tgflow, the agent's commits kept beneath it.
    ``squash``: one commit with the branch's whole change, authored by ``author`` (the agent,
    whose work it is) and committed by tgflow, with the task trailer: the history of base
    reads one commit per task. ``at``: HEAD's commit, when the caller knows it (it holds the
    merge lock, so nothing else moves HEAD). ``cwd``: a detached checkout of tgflow's clone
    to merge in instead of the integration worktree (a batch validated ahead of base)."""
    where = cwd or ws.integration
    pre, branch = at or ws.head(where), ws.branch(task_id)
    try:
        if strategy == "merge":
            message = f"Merge task {task_id}: {name}"
            ws.git(where, "merge", "--no-ff", "--no-edit", "-m", message, branch)
        else:
            ws.git(where, "merge", "--squash", branch)
            by = ["--author", f"{author[0]} <{author[1]}>"] if author else []
            ws.git(
                where, "commit", "--quiet", "--no-verify", "--allow-empty", *by,
                "-m", f"Task {task_id}: {name}", "--trailer", f"{TASK_TRAILER}: {task_id}",
            )  # fmt: skip
    except GitError:
        conflicts = ws.paths(where, "diff", "--name-only", "--diff-filter=U")
        if ws.in_merge(where):
            ws.git(where, "merge", "--abort")
        if where == ws.integration:
            ws.reset_to(pre)
        else:
            ws.git(where, "reset", "--quiet", "--hard", pre)
        if not conflicts:
            raise
        return MergeResult(merged=False, pre_sha=pre, conflicts=conflicts)
    sha = ws.head(where)
    return MergeResult(merged=True, pre_sha=pre, sha=sha, tree=ws.tree_of(sha))


def commit_paths(ws: Workspace, paths: list[Path], message: str, cwd: Path | None = None) -> None:
    """Commit these files of the integration worktree on base (status updates), or of ``cwd``
    (see ``merge``). The commit is not read here: ``change_base`` reads HEAD once after the
    whole edit. Only a file HEAD does not have yet is added first (``commit -- paths`` takes
    the others as they are). Each name is literal: as a pattern, ``[id].md`` would also take
    ``i.md``."""
    where = cwd or ws.integration
    rel = [str(p.relative_to(where)) if p.is_absolute() else str(p) for p in paths]
    head = "HEAD" if where == ws.integration else ws.head(where)
    new = [r for r in rel if not ws.exists_at(head, r)]
    if new:
        ws.git(where, "--literal-pathspecs", "add", "--", *new)
    ws.git(where, "--literal-pathspecs", "commit", "--quiet", "-m", message, "--", *rel)


def _known(ws: Workspace) -> bool:
    """The origin's base is the commit this process pushed there last, as far as it can know:
    no other process pushes through the merge lock, and nothing was fetched since."""
    pushed = ws.pushed_to_base()
    return not ws.merge_lock.shared and bool(pushed) and ws.commit_of(_tracking(ws)) == pushed[-1]


def _tracking(ws: Workspace) -> str:
    return f"refs/remotes/origin/{ws.base}"


def _push_base(
    ws: Workspace,
    redo: Callable[[], str | None],
    retries: int,
    head: str,
    on: str,
    also: Callable[[], list[str]],
    drop: Callable[[], list[str]],
) -> BaseChange:
    """Push base, at ``head`` (the commit the integration worktree, on base, stands on; made
    on ``on``, origin's base as last seen), with ``also()`` (see ``change_base``). A rejected
    push (origin moved) means: fetch, stand on origin/base (refused when it lost what this
    run pushed), ``redo()`` our work there (re-merge, re-validate, re-commit; it returns a
    failure reason or None), push again. Bounded; never forced: base is leased at ``on``."""
    for attempt in range(1, retries + 2):
        base, extra, dropped = f"{head}:{ws.base_ref()}", also(), drop()
        settled: dict[str, str | None] = {SETTLED_REF: head, **dict.fromkeys(dropped)}
        lease = {ws.base_ref(): on}
        pushed = ws.push(base, *extra, with_refs=settled, lease=lease)
        if pushed.status != 0 and extra:  # atomic: nothing landed; base alone decides
            pushed, extra = ws.push(base, with_refs=settled, lease=lease), []
        if pushed.status == 0:
            ws.remember_pushed(head)
            return BaseChange(None, attempt, extra, dropped, settled=True)
        if not _rejected(pushed.output):
            said = pushed.remote_message or pushed.output.replace("\n", "; ")
            return BaseChange(f"push of {ws.base} to {ws.origin} refused: {said}", attempt)
        if attempt > retries:
            break
        on = ws.sync()
        _refuse_rewound(ws, on)
        reason = redo()
        if reason is not None:
            return BaseChange(reason, attempt)
        head = ws.head()
    return BaseChange(
        f"push of {ws.base} rejected {retries + 1} times (the origin keeps moving)", retries + 1
    )


def _rejected(push_output: str) -> bool:
    return any(w in push_output for w in ("[rejected]", "non-fast-forward", "fetch first"))


def _refuse_rewound(ws: Workspace, at: str) -> None:
    """Raise ``BaseRewound`` when origin's base (just fetched; ``at``, its commit) no longer
    holds the last commit this run pushed there. The lost commits stay reachable from
    ``refs/tgflow/lost/<UTC>``, in the clone and on the origin; nothing is forced back, a
    person decides. No git is asked when it is still that commit (as when only this run
    pushes)."""
    pushed = ws.pushed_to_base()
    remote = f"refs/remotes/origin/{ws.base}"
    if not pushed or pushed[-1] == at or ws.is_ancestor(pushed[-1], remote):
        return
    last = pushed[-1]
    lost = ws.git(ws.integration, "log", "--first-parent", "--format=%h %s", last, f"^{remote}")
    names = lost.split("\n")
    shown = "; ".join(names[:5]) + (f"; and {len(names) - 5} more" if len(names) > 5 else "")
    kept = ws.git(ws.integration, "for-each-ref", "--format=%(refname)", "--points-at", last,
                  "refs/tgflow/lost/").split("\n")[0]  # fmt: skip
    ref = kept or f"refs/tgflow/lost/{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    ws.git(ws.integration, "update-ref", ref, last)
    pushed_backup = ws.push(f"{last}:{ref}")
    where = (
        "on the origin" if pushed_backup.status == 0 else f"only in tgflow's clone {ws.integration}"
    )
    raise BaseRewound(
        f"{ws.base} on {ws.origin} was moved back (forced) and lost {len(names)} commit(s) this "
        f"run pushed: {shown}; they are kept {where} as {ref}. Put them back with "
        f"`git fetch {ws.origin} {ref} && git merge FETCH_HEAD` and push {ws.base}, then run "
        "again (tgflow merges nothing onto a rewound base)."
    )
