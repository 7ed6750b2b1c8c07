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

from contextlib import nullcontext
from pathlib import Path

from tasks_lib.git import worktrees
from tasks_lib.git.base import change_base, merge
from tasks_lib.git.runner import GitError
from tasks_lib.graph.taskfile import Status
from tasks_lib.run.develop import (
    agent_author,
    backup_branch,
    has_markers,
    prompt,
    read_text,
    refuse_conflict_markers,
    revert_protected_paths,
    session,
    trailed,
    validate,
)
from tasks_lib.run.node_state import Node, NodeFailed
from tasks_lib.run.prompt import BLOCKED_FILE
from tasks_lib.run.records import Cause, Conflict, NodeStatus


def integrate(node: Node) -> None:
    """Merge in turn; a conflict goes back to the agent (the rounds in the module's doc)."""
    ws, rec, rounds = node.ws, node.record, node.settings.conflict_rounds
    with ws.merge_lock:
        if _land(node):
            return
    for round_ in range(1, rounds + 1):
        if round_ < rounds:
            _resolve(node, round_, held=False)
            with ws.merge_lock.priority():
                if _land(node):
                    return
        else:
            with ws.merge_lock.priority():
                _resolve(node, round_, held=True)
                if _land(node):
                    return
    ws.git(node.wt(), "clean", "-fdq")  # validation's leftovers are no work for a retry
    raise NodeFailed(
        NodeStatus.FAILED,
        f"merge into {ws.base} still conflicts after {rounds} resolution round(s): "
        + ", ".join(rec.conflicts[-1].files)
        + f" (the base kept moving); a retry merges {ws.base} into the kept branch again, "
        "or raise conflict_rounds (--conflict-rounds)",
        Cause.CONFLICT,
    )


def _merge_once(node: Node) -> list[str] | None:
    """One merge → validate → status → push. Returns the conflicting files, or None."""
    ws, rec, s = node.ws, node.record, node.settings
    pending: list[str] = []

    def merge_validate_commit() -> str | None:
        rec.commits = _commit_lines(node)
        rec.files_changed = ws.files_changed(node.branch_ref)
        merged = merge(ws, node.task.id, node.task.name, s.merge_strategy, agent_author(node))
        if not merged.merged:
            pending[:] = merged.conflicts
            return "conflicts with " + ", ".join(merged.conflicts)
        try:
            validate(node, ws.integration, f"after merging into {ws.base}")
        except NodeFailed as e:  # change_base puts base back
            e.reason = f"{e.reason}\n({ws.base} reset to {merged.pre_sha[:10]}; nothing pushed)"
            raise
        rec.merge_commit = merged.sha
        node.write_task_file(Status.COMPLETED, summary=_summary(node))
        return None

    change = change_base(ws, merge_validate_commit, push=s.push, retries=s.push_retries)
    if change.reason is None:
        if change.attempts > 1:
            rec.notes.append(
                f"the origin moved during the merge; re-merged and pushed "
                f"(attempt {change.attempts})"
            )
        return None
    if pending:
        rec.conflicts.append(Conflict(round=len(rec.conflicts) + 1, files=list(pending)))
        return list(pending)
    raise NodeFailed(NodeStatus.FAILED, change.reason, Cause.GIT)


def _land(node: Node) -> bool:
    """Merge, validate, push and clean up (the caller holds the lock); False on a conflict."""
    if _merge_once(node) is not None:
        return False
    node.record.cleanup = worktrees.cleanup(node.ws, node.task.id, node.settings.push)
    node.record.status = NodeStatus.COMPLETED
    return True


def _resolve(node: Node, round_: int, *, held: bool) -> None:
    """Merge the newest base into the branch and let the agent resolve what conflicts.
    ``held``: the caller holds the merge lock throughout; else it is taken for the merge
    only (base must not move under `git merge`, which reads a shared ref)."""
    ws, wt, rec = node.ws, node.wt(), node.record
    conflict = rec.conflicts[-1]
    ws.git(wt, "clean", "-fdq")  # what validation left; the agent's work is committed
    with nullcontext() if held else ws.merge_lock:
        ws.refresh(node.settings.push)  # what others pushed since the conflict, too
        base_sha = ws.git(ws.integration, "rev-parse", ws.base_ref())
        merged = _merge_base_into_branch(node, wt, base_sha)
    if merged:
        conflict.resolved = True
        rec.notes.append(f"conflict round {round_}: {ws.base} merged into the branch cleanly")
    else:
        files = ws.git(wt, "diff", "--name-only", "--diff-filter=U").split("\n")
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


def _merge_base_into_branch(node: Node, wt: Path, base_sha: str) -> bool:
    message = trailed(node, f"Merge {node.ws.base} into {node.branch} (resolve conflicts)")
    try:
        node.ws.git(wt, "merge", "--no-edit", "-m", message, base_sha)
    except GitError:
        if not node.ws.in_merge(wt):
            raise
        return False
    worktrees.collect(node.ws, wt)
    return True


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
    ws = node.ws
    out = ws.git(
        ws.integration, "log", "--reverse", "--format=%h %s", node.branch_ref, f"^{ws.base_ref()}"
    )
    return [line for line in out.split("\n") if line]


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
