"""Integrate: one node at a time per repository, merge the branch into base, validate the
merged tree, record the status on base, push, and clean up.

Nothing broken is ever pushed: a failed post-merge validation resets base to where it was.
Merges are served in the order nodes became ready (the merge lock is fair).

A conflict goes back to the agent with base merged into its branch, at most
``conflict_rounds`` times, and a file every node touches must not make it lose the race for
ever (others merging into the file while it resolves):

- every round but the last resolves outside the merge lock, so the others go on merging,
  and then merges with priority, ahead of every node merely waiting: it lands unless a node
  merged into the same file during the resolution (the usual case, two nodes in one file,
  costs nobody a wait);
- the last round holds the lock from merging base into the branch through the agent's
  resolution, the validation and the merge, so base cannot move under it (only a push to
  the origin by someone else can). Holding the lock for every round would make every other
  node's merges and branch moves wait for each agent session, which may take minutes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

from tasks_lib.git import worktrees
from tasks_lib.git.base import change_base, merge
from tasks_lib.git.locks import FairLock
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.taskfile import Status
from tasks_lib.run.develop import (
    agent_author,
    back_up_deferred,
    backup_branch,
    has_markers,
    merge_base_into_branch,
    prompt,
    read_text,
    refuse_conflict_markers,
    revert_protected_paths,
    session,
    trailed,
    validate,
)
from tasks_lib.run.isolation import sandbox_for
from tasks_lib.run.merge_queue import BatchOutcome, MergeQueue, Trial, land_batch
from tasks_lib.run.node_state import Landing, Node, NodeFailed
from tasks_lib.run.prompt import BLOCKED_FILE
from tasks_lib.run.records import Cause, Conflict, NodeStatus
from tasks_lib.run.validation import run_validation

_QUEUES: dict[FairLock, MergeQueue[Node]] = {}
_QUEUES_GUARD = threading.Lock()


def merge_queue(ws: Workspace) -> MergeQueue[Node]:
    """The queue in front of the origin's merge lock (one per origin, like the lock)."""
    with _QUEUES_GUARD:
        return _QUEUES.setdefault(ws.merge_lock, MergeQueue(ws.merge_lock))


def integrate(node: Node) -> None:
    """Land through the queue; a conflict goes back to the agent (the rounds in the module's
    doc), its branch then landing alone."""
    ws, rec, rounds = node.ws, node.record, node.settings.conflict_rounds
    node.on_slot(False)  # waiting to merge needs no agent: another node may start meanwhile
    merge_queue(ws).land(node, node.settings.merge_batch, serve, before_wait=back_up_deferred)
    if _landed(node):
        return _clean_up(node)
    back_up_deferred(node)  # a conflict: resolving it takes a session
    for round_ in range(1, rounds + 1):
        node.on_slot(True)
        if round_ < rounds:
            _resolve(node, round_, held=False)
            node.on_slot(False)
            with ws.merge_lock.priority():
                serve([node])
        else:
            with ws.merge_lock.priority():
                _resolve(node, round_, held=True)
                node.on_slot(False)
                serve([node])
        if _landed(node):
            return _clean_up(node)
    ws.git(node.wt(), "clean", "-fdq")  # validation's leftovers are no work for a retry
    raise NodeFailed(
        NodeStatus.FAILED,
        f"merge into {ws.base} still conflicts after {rounds} resolution round(s): "
        + ", ".join(rec.conflicts[-1].files)
        + f" (the base kept moving); a retry merges {ws.base} into the kept branch again, "
        "or raise conflict_rounds (--conflict-rounds)",
        Cause.CONFLICT,
    )


def _clean_up(node: Node) -> None:
    """Landed: the checkout, the local and the remote branch go (the task's own: no lock)."""
    node.record.cleanup = worktrees.cleanup(
        node.ws, node.task.id, node.settings.push, checkpointed=node.checkpoints > 0
    )
    landing = node.landing
    if landing is not None and landing.local_deleted:  # with base, in ``serve``
        node.record.cleanup["branch"] = True
    if landing is not None and landing.branch_deleted:
        node.record.cleanup["remote_branch"] = True
    node.record.status = NodeStatus.COMPLETED


def _landed(node: Node) -> bool:
    """The queue's verdict on the node: True when it landed, False on a conflict (recorded
    for the next round); a failure is raised."""
    landing = node.landing
    if landing is None:
        raise RuntimeError(f"{node.task.id}: the merge queue did not serve the branch")
    if landing.failure is not None:
        raise landing.failure
    if not landing.landed:
        rec = node.record
        rec.conflicts.append(Conflict(round=len(rec.conflicts) + 1, files=list(landing.conflicts)))
    return landing.landed


def serve(batch: list[Node]) -> None:
    """Merge the batch onto base (each ``--no-ff`` in turn), validate once, bisect on a
    failure (``land_batch``), record each task completed on base and push, in one base
    transaction. Every node's verdict goes to ``node.landing`` (each node cleans up after
    itself, outside the lock). The caller holds the merge lock."""
    first = batch[0]
    ws, s = first.ws, first.settings
    began = datetime.now(UTC)
    for node in batch:
        node.record.merge_began = began
        node.record.commits = _commit_lines(node)
        node.record.files_changed = ws.files_changed(node.branch_ref)
    merged_as: dict[str, str] = {}
    failed: dict[str, str] = {}  # task id -> why the last trial that held it failed
    outcome: BatchOutcome[Node] = BatchOutcome()

    def trial(items: Sequence[Node]) -> Trial[Node]:
        pre = ws.head()
        head, tree = pre, None  # where base stands as the merges go (a conflict stays put)
        merged: list[Node] = []
        conflicted: list[Node] = []
        for node in items:
            done = merge(
                ws, node.task.id, node.task.name, s.merge_strategy, agent_author(node), at=head
            )
            if done.merged and done.sha is not None:
                merged.append(node)
                merged_as[node.task.id] = done.sha
                head, tree = done.sha, done.tree
            else:
                conflicted.append(node)
                assert node.landing is not None
                node.landing.conflicts = done.conflicts
        if not merged:
            return Trial(True, [], conflicted)
        problem = _validate_merged(merged, pre, tree)
        if problem is None:
            return Trial(True, merged, conflicted)
        for node in merged:
            failed[node.task.id] = problem
        ws.reset_to(pre)
        return Trial(False, merged, conflicted)

    def edit() -> str | None:
        nonlocal outcome
        for node in batch:  # again on a redo (the origin moved): the verdicts start over
            node.landing = Landing()
        merged_as.clear()
        failed.clear()
        outcome = land_batch(batch, trial)
        for node in outcome.landed:
            node.record.merge_commit = merged_as[node.task.id]
            node.write_task_file(Status.COMPLETED, summary=_summary(node))
        return None if outcome.landed else NOTHING_LANDED

    def with_base() -> list[str]:
        """The landed branches the origin holds go in the push of base: their work is in it."""
        return [f":{node.branch_ref}" for node in outcome.landed if node.backed_up]

    def merged() -> list[str]:
        return [node.branch_ref for node in outcome.landed]

    try:
        change = change_base(
            ws, edit, push=s.push, retries=s.push_retries, also=with_base, drop=merged,
            cheap_redo=not s.validate_commands,  # a merge and a status commit, no validation
        )  # fmt: skip
    finally:
        ended = datetime.now(UTC)
        for node in batch:
            node.record.merge_ended = ended
    pushed = change.reason is None
    for node in outcome.culprits:
        assert node.landing is not None
        node.landing.failure = NodeFailed(
            NodeStatus.FAILED, failed[node.task.id] + _bisected(node, batch), Cause.VALIDATION
        )
    for node in outcome.landed:
        assert node.landing is not None
        if not pushed:
            node.landing.failure = NodeFailed(NodeStatus.FAILED, str(change.reason), Cause.GIT)
            continue
        rec = node.record
        if change.attempts > 1:
            rec.notes.append(
                "the origin moved during the merge; re-merged and pushed "
                f"(attempt {change.attempts})"
            )
        node.landing.branch_deleted = f":{node.branch_ref}" in change.with_base
        node.landing.local_deleted = node.branch_ref in change.dropped
        others = [n.task.id for n in outcome.landed if n is not node]
        rec.merged_with = others
        if others:
            rec.notes.append(
                f"merged in a batch with {', '.join(others)}, validated together "
                f"({outcome.trials} validation(s) for {len(batch)} branch(es))"
            )
        node.landing.landed = True


NOTHING_LANDED = "nothing of the batch landed"


def _validate_merged(merged: list[Node], pre: str, tree: str | None) -> str | None:
    """The merged tree's validation, once for the batch; None when it passes. Skipped when
    one branch merged and the tree (``tree``, base's now) is the one its own validation
    passed (base had not moved since it was merged into the branch): the same files, the
    same commands."""
    first = merged[0]
    ws, s = first.ws, first.settings
    tree = tree if len(merged) == 1 else None
    if tree is not None and first.validated_tree == tree:
        first.record.validation_skipped = True
        first.record.notes.append(
            "post-merge validation skipped: the merged tree is the one validated on the branch "
            f"({tree[:10]}; {ws.base} had not moved since it was merged into the branch)"
        )
        return None

    def on_line(line: str) -> None:
        for node in merged:
            node.on_line(line)

    result = run_validation(
        s.validate_commands,
        ws.integration,
        s.validate_timeout_s,
        on_line,
        first.cancel,
        sandbox_for(ws, s.sandbox, ws.integration),
    )
    for node in merged:  # one run for all: each carries its share, so totals stay true
        node.record.validate_seconds += result.duration_s / len(merged)
    if first.cancel.is_set():
        raise NodeFailed(NodeStatus.CANCELLED, "cancelled during the post-merge validation")
    if result.ok:
        return None
    return (
        f"validation after merging into {ws.base} failed: {result.output_tail}\n"
        f"({ws.base} reset to {pre[:10]}; nothing pushed)"
    )


def _bisected(node: Node, batch: list[Node]) -> str:
    if len(batch) == 1:
        return ""
    others = ", ".join(n.task.id for n in batch if n is not node)
    return (
        f"\n(merged in a batch with {others}; bisecting found that this branch fails the "
        "validation on a base that passes it, the others were merged)"
    )


def _resolve(node: Node, round_: int, *, held: bool) -> None:
    """Merge the newest base into the branch and let the agent resolve what conflicts.
    ``held``: the caller holds the merge lock throughout; else it is taken for the merge
    only (base must not move under `git merge`, which reads a shared ref)."""
    ws, wt, rec = node.ws, node.wt(), node.record
    conflict = rec.conflicts[-1]
    ws.git(wt, "clean", "-fdq")  # what validation left; the agent's work is committed
    with nullcontext() if held else ws.merge_lock:
        ws.refresh(node.settings.push)  # what others pushed since the conflict, too
        base_sha = ws.commit(ws.base_ref())
        merged = merge_base_into_branch(node, wt, base_sha, " (resolve conflicts)")
    if merged:
        conflict.resolved = True
        rec.notes.append(f"conflict round {round_}: {ws.base} merged into the branch cleanly")
    else:
        files = ws.paths(wt, "diff", "--name-only", "--diff-filter=U")
        conflict.files = files
        (wt / BLOCKED_FILE).unlink(missing_ok=True)
        session(node, prompt(node, conflict_files=files))  # on failure wind_down aborts
        _conclude_merge(node, wt, files, base_sha)
        conflict.resolved = True
    revert_protected_paths(node)
    if not held:  # held: landing next deletes the branch, or a failure backs it up then
        backup_branch(node)
    refuse_conflict_markers(node)
    validate(node, wt, "on the task branch after resolving conflicts")


def _conclude_merge(node: Node, wt: Path, files: list[str], base_sha: str) -> None:
    """The agent must leave no conflict markers; we commit a merge it resolved but left.
    ``base_sha`` is the base commit merged in (base itself may move during the session)."""
    ws, rec = node.ws, node.record
    marked = [f for f in files if (wt / f).is_file() and has_markers(read_text(wt / f))]
    if marked:
        if ws.in_merge(wt):
            ws.git(wt, "merge", "--abort")
        raise NodeFailed(
            NodeStatus.FAILED,
            "the agent left conflict markers in " + ", ".join(marked) + "; merge aborted",
            Cause.AGENT,
        )
    if ws.in_merge(wt):
        ws.git(wt, "add", "-A")
        ws.git(wt, "commit", "--quiet", "--no-edit", "--no-verify")
        worktrees.collect(ws, wt)
        rec.notes.append("committed the merge the agent resolved but left open")
    elif not ws.is_ancestor(base_sha, node.branch_ref):
        raise NodeFailed(
            NodeStatus.FAILED,
            f"the agent abandoned the merge of {ws.base} into the branch",
            Cause.AGENT,
        )
    else:
        leftovers = trailed(node, f"tgflow: commit uncommitted work of {node.task.id}")
        if worktrees.commit_all(ws, wt, leftovers, agent_author(node)):
            rec.notes.append("committed work the agent left uncommitted")


def _commit_lines(node: Node) -> list[str]:
    return [
        f"{sha[:10]} {subject}" for sha, subject in node.ws.commits_beyond_base(node.branch_ref)
    ]


def _summary(node: Node) -> str:
    rec = node.record
    commits = "\n".join(f"- {c}" for c in rec.commits) or "- (none)"
    files = "\n".join(f"- `{f}`" for f in rec.files_changed) or "- (none)"
    merged = rec.merge_commit[:10] if rec.merge_commit else "?"
    return (
        f"Merged into {node.ws.base} by tgflow as {merged} (agent {rec.agent}, attempt "
        f"{node.attempt}, {rec.sessions} session(s)).\n\n"
        f"Commits:\n{commits}\n\nFiles changed:\n{files}"
    )
