"""Integrate: through the merge queue, merge the branch into base with the others waiting,
record their statuses, validate the merged tree, push, and clean up (``merge_queue``; the
next batch is validated ahead meanwhile, ``batch``).

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
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

from tasks_lib.git import worktrees
from tasks_lib.git.base import change_base
from tasks_lib.git.locks import FairLock
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.batch import (
    Ahead,
    Merged,
    Pipeline,
    Validation,
    commit_lines,
    merge_in,
    pipeline,
    record_validation,
    validate_merged,
)
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
from tasks_lib.run.merge_queue import BatchOutcome, MergeQueue, Trial, land_batch
from tasks_lib.run.node_state import Landing, Node, NodeFailed
from tasks_lib.run.prompt import BLOCKED_FILE
from tasks_lib.run.records import Cause, Conflict, NodeStatus

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
    """Merge the batch onto base (each ``--no-ff`` in turn, each task's status committed),
    validate once, bisect on a failure (``land_batch``) and push, in one base transaction.
    The batch validated ahead (``batch.Ahead``) lands as its commits when base is where they
    were made; while the batch's validation runs, what waits goes ahead of it. Every node's
    verdict goes to ``node.landing`` (each node cleans up after itself, outside the lock).
    The caller holds the merge lock."""
    first = batch[0]
    ws, s = first.ws, first.settings
    queue, pipe = merge_queue(ws), pipeline(ws)
    ahead = pipe.take(batch)
    went_ahead: list[Node] = []  # landed as the commits validated ahead (``_reuse``)
    edits = 0
    failed: dict[str, str] = {}  # task id -> why the last trial that held it failed
    outcome: BatchOutcome[Node] = BatchOutcome()

    def going_ahead(on: str) -> AbstractContextManager[None]:
        """While the batch's first validation runs, what waits is validated on top of it (no
        validation to run: nothing to gain)."""
        if not (s.validate_ahead and s.validate_commands):
            return nullcontext()
        return queue.while_validating(pipe.starter(queue, on, s.merge_batch))

    def trial(items: Sequence[Node]) -> Trial[Node]:
        nonlocal ahead
        pre = ws.head()
        if ahead is not None:  # the first trial: the whole batch
            done, ahead = ahead, None
            try:
                reused = _reuse(done, pre, going_ahead, pipe)
            finally:
                pipe.release(done)
            if first.cancel.is_set():
                raise NodeFailed(NodeStatus.CANCELLED, "cancelled during the post-merge validation")
            if reused is not None:
                merged, validation = reused
                ws.reset_to(merged.head)  # a descendant of base: its commits are base's
                went_ahead.extend(merged.merged)
                return _concluded(merged, validation, failed, lambda: None)
        merged = merge_in(list(items), pre)
        if not merged.merged:
            return _concluded(merged, Validation(None, None), failed, lambda: None)
        whole = list(items) == batch
        with going_ahead(merged.head) if whole else nullcontext():
            validation = validate_merged(merged, ws.integration, first.cancel)
        if validation.problem is not None and pipe.drop():
            # It ran beside the validation ahead: two runs of one build on one machine can
            # break each other (a port, a file in /tmp), and a culprit is sent back to its
            # agent. Only a failure seen alone counts.
            record_validation(merged, validation)
            validation = validate_merged(merged, ws.integration, first.cancel)
            validation.again = True
        if first.cancel.is_set():
            raise NodeFailed(NodeStatus.CANCELLED, "cancelled during the post-merge validation")
        return _concluded(merged, validation, failed, lambda: ws.reset_to(pre))

    def edit() -> str | None:
        nonlocal outcome, edits
        edits += 1
        if edits > 1:  # a redo (the origin moved): what went ahead stood on the old base
            pipe.drop()
        for node in batch:  # the verdicts start over
            node.landing = Landing()
        failed.clear()
        went_ahead.clear()
        outcome = land_batch(batch, trial)
        for node in batch:
            if node not in outcome.landed:  # a merge a failed trial made is no more
                node.record.merge_commit = None
        return None if outcome.landed else NOTHING_LANDED

    def with_base() -> list[str]:
        """The landed branches the origin holds go in the push of base: their work is in it."""
        return [f":{node.branch_ref}" for node in outcome.landed if node.backed_up]

    def merged() -> list[str]:
        return [node.branch_ref for node in outcome.landed]

    try:
        began = datetime.now(UTC)
        for node in batch:
            node.record.merge_began = began
            node.record.commits = commit_lines(node)
            node.record.files_changed = ws.files_changed(node.branch_ref)
        change = change_base(
            ws, edit, push=s.push, retries=s.push_retries, also=with_base, drop=merged,
            cheap_redo=not s.validate_commands,  # a merge and a status commit, no validation
        )  # fmt: skip
    finally:
        if ahead is not None:  # never tried (an error came first)
            pipe.release(ahead)
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
        if node in went_ahead:
            rec.validated_ahead = True
            rec.notes.append(
                f"merged and validated ahead of {ws.base}, in a checkout of its own while the "
                "batch before it was validated, on the head that batch left"
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


def _reuse(
    ahead: Ahead,
    pre: str,
    going_ahead: Callable[[str], AbstractContextManager[None]],
    pipe: Pipeline,
) -> tuple[Merged, Validation] | None:
    """The served batch's validation ahead, waited for: what it merged, and how it was
    validated, when it stands on ``pre`` (base now: the batch before it landed whole on the
    head it was made on) and passed; else None, and it stops. A failure there is not trusted
    (it ran beside another validation): the batch is tried on base as if it had not gone
    ahead, and what went ahead of it is dropped (it stood on this failing head)."""
    ahead.ready.wait()
    merged = ahead.merged
    if ahead.on != pre or merged is None or ahead.error is not None:
        return None
    first = ahead.nodes[0]
    if merged.merged:
        with going_ahead(merged.head):
            ahead.verdict(first.cancel)
    if ahead.error is not None or first.cancel.is_set():
        return None
    validation = ahead.validation or Validation(None, None)
    if validation.problem is not None:
        pipe.drop()  # what went ahead of it stood on this failing head
        for node in merged.merged:
            node.record.notes.append(
                f"validated ahead of {first.ws.base} and failed there, beside another "
                "validation: merged and validated again on base"
            )
        return None
    ahead.counted = True  # in the records by the trial's ``_concluded``, not by ``release``
    return merged, validation


def _concluded(
    merged: Merged, validation: Validation, failed: dict[str, str], undo: Callable[[], object]
) -> Trial[Node]:
    """The trial's verdict, in the records: base holds the merged batch when it passed; else
    ``undo`` puts it back."""
    for node in merged.conflicted:
        assert node.landing is not None
        node.landing.conflicts = merged.conflicts[node.task.id]
    if not merged.merged:
        return Trial(True, [], merged.conflicted)
    record_validation(merged, validation)
    if validation.problem is None:
        return Trial(True, merged.merged, merged.conflicted)
    for node in merged.merged:
        failed[node.task.id] = validation.problem
    undo()
    return Trial(False, merged.merged, merged.conflicted)


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
