"""One node of the graph, start to finish: develop (worktree → agent → checks) then integrate
(serial merge → validate → status on main → push → cleanup).

The orchestrator decides success, not the agent: the branch must hold new commits, task
files stay untouched, validation passes before and after the merge. Work is never thrown
away: a node that does not finish keeps its branch (backed up on the origin when pushing),
and the next run hands it to the agent again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from tasks_lib.agents.base import Agent, Inbox
from tasks_lib.git import WorkspaceError, worktrees
from tasks_lib.git.base import change_base
from tasks_lib.git.checkpoint import drop_checkpoint
from tasks_lib.git.workspace import Workspace
from tasks_lib.git.worktrees import WIP_PREFIX
from tasks_lib.graph.taskfile import Status, Task
from tasks_lib.run.approval import ApprovalRequest, Approver, approval_rule
from tasks_lib.run.budget import Ledger, task_budget
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.develop import (
    back_up_deferred,
    backup_branch,
    backup_rides_with_base,
    develop,
    prompt_context,
    trailed,
)
from tasks_lib.run.integrate import integrate
from tasks_lib.run.node_state import Node, NodeFailed, failure_note
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus
from tasks_lib.run.secrets import identity
from tasks_lib.run.usage import UsageGate


def run_node(
    workspace: Workspace,
    task: Task,
    agent: Agent,
    settings: NodeSettings,
    *,
    attempt: int = 1,
    previous_failure: str | None = None,
    previous_cause: Cause | None = None,
    dependency_summaries: dict[str, str] | None = None,
    task_paths: Mapping[str, Path] | None = None,
    on_line: Callable[[str], None] | None = None,
    on_changed: Callable[[list[str]], None] | None = None,
    on_slot: Callable[[bool], None] | None = None,
    approve: Approver | None = None,
    cancel: threading.Event | None = None,
    inbox: Inbox | None = None,
    stop_after_develop: bool = False,
    final_attempt: bool = True,
    mask: Callable[[str], str] = identity,
    ledger: Ledger | None = None,
    usage: UsageGate | None = None,
    warn: Callable[[str], None] | None = None,
    on_wait: Callable[[str | None], None] | None = None,
) -> NodeRecord:
    """Develop and integrate one task; always returns a record (git trouble included).

    ``final_attempt``: write a failure to the task file on main (status + ``## Notes``)
    only when no retry follows. ``stop_after_develop`` leaves everything as a crash would.
    ``task_paths`` (id → file relative to the repository, from the run's graph) spares the
    node a parse of the whole tasks folder. ``previous_cause``: why this run's attempt before
    failed; after a conflict the retry is one more conflict round, not a new session.
    ``mask`` hides the run's secrets in the reason and notes before they reach the task file
    on main or leave the node (an agent may print its key). ``on_changed`` hears the files
    the branch changes once the agent has worked (the scheduler keeps others off them);
    ``on_slot(False)`` that the node no longer needs an agent slot (its branch waits in the
    merge queue), ``on_slot(True)`` that it needs one again (a conflict round, a retry).
    ``approve`` asks a person about a branch that passed its validation, before it merges,
    when the task matches ``approve_when``; without it nothing waits.
    ``ledger``: the run's spend so far and its budget, which the task's budget (from
    ``budget_rules`` and its frontmatter) is counted in too; without one, only this
    attempt's sessions count against the task's budget.
    ``usage``: the run's pauses for providers' usage limits, which this node's sessions wait
    out and add to (without one, only this node's own limits pause it); ``warn`` hears why it
    waits (the run's log shows it as a warning; by default it goes to ``on_line``), and
    ``on_wait`` hears it too when the wait begins, then None when the node goes on (the run
    shows the wait as the node's state).
    ``inbox``: where a person's messages to the node's agent sessions arrive (a backend that
    ``takes_messages`` opens it while a session runs).
    """
    budget = task_budget(task, settings.budget_rules)
    node = Node(
        ws=workspace,
        task=task,
        agent=agent,
        settings=settings,
        attempt=attempt,
        record=NodeRecord(
            task_id=task.id,
            name=task.name,
            status=NodeStatus.FAILED,
            agent=agent.name,
            budget=budget,
        ),
        previous_failure=previous_failure,
        final_attempt=final_attempt,
        on_line=on_line or (lambda line: None),
        on_changed=on_changed or (lambda files: None),
        on_slot=on_slot or (lambda held: None),
        cancel=cancel or threading.Event(),
        inbox=inbox or Inbox(),
        task_paths=task_paths,
        budget=budget,
        ledger=ledger or Ledger(),
        usage=usage or UsageGate(settings.usage_limit_backoff_s, settings.usage_limit_max_wait_s),
        warn=warn or on_line or (lambda text: None),
        on_wait=on_wait or (lambda reason: None),
    )
    rec = node.record
    if attempt > 1:  # a retry: its attempt before may have given the slot up to merge
        node.on_slot(True)
    try:
        try:
            _run(node, dependency_summaries, stop_after_develop, previous_cause, approve)
        except NodeFailed as e:
            rec.status, rec.reason, rec.cause = e.status, mask(e.reason), e.cause
            try:  # wind_down writes the reason to the task file on main: masked above
                wind_down(node)
            except (NodeFailed, WorkspaceError) as trouble:  # the failure above still decides
                rec.notes.append(f"could not record the {rec.status.value} status: {trouble}")
    except WorkspaceError as e:
        rec.status, rec.reason, rec.cause = NodeStatus.FAILED, str(e), Cause.GIT
        rec.notes.append("git failed; the task branch (if any) is kept")
        try:  # a branch left to reach the origin with base must get there alone now
            back_up_deferred(node)
        except WorkspaceError as trouble:  # the failure above still decides
            rec.notes.append(f"could not back the branch up on the origin: {trouble}")
    rec.reason, rec.notes = mask(rec.reason), [mask(n) for n in rec.notes]
    return rec.close_attempt(attempt)


def _run(
    node: Node,
    summaries: dict[str, str] | None,
    stop_after_develop: bool,
    previous_cause: Cause | None,
    approve: Approver | None,
) -> None:
    # No lock and no fetch here: the task is read at the settled base (the run fetched at its
    # start, and every merge fetches), and the checkout touches only this task's refs.
    ws, rec = node.ws, node.record
    node.start_base = ws.settled()
    on_main = node.on_base()
    if on_main is None:
        raise NodeFailed(
            NodeStatus.FAILED,
            f"no task file with id {node.task.id!r} under {node.settings.tasks_dir}/ "
            f"on {ws.base} of {ws.origin}",
        )
    if on_main.status == Status.COMPLETED:
        rec.status, rec.already_done = NodeStatus.COMPLETED, True
        rec.notes.append(f"already completed on {ws.base}; nothing run")
        return
    try:
        checkout = worktrees.start_task(ws, node.task.id, node.start_base)
    except worktrees.ForeignBranch as e:
        raise NodeFailed(NodeStatus.FAILED, str(e), Cause.SETUP) from None
    node.worktree = checkout.path
    rec.notes += checkout.notes
    node.context = prompt_context(node, on_main, summaries, checkout.resumed)
    why = approval_rule(node.task, node.settings.approve_when) if approve else None
    node.defer_backup = backup_rides_with_base(node, asks=why is not None)
    # A kept branch goes back to the agent (never merely re-validated: the task file may have
    # been fixed since), its commits and the last failure in the prompt; except the retry of
    # an attempt that only lost a merge race: its work was fine, it only needs merging again.
    develop(node, not (checkout.resumed and previous_cause is Cause.CONFLICT))
    if stop_after_develop:
        back_up_deferred(node)  # a node that stops keeps its work on the origin
        rec.status = NodeStatus.CANCELLED
        rec.reason = "stopped after develop (as if the run were killed); the branch is kept"
        return
    if approve is not None and why is not None:
        _ask(node, approve, why)
    integrate(node)


def _ask(node: Node, approve: Approver, why: str) -> None:
    """Wait for a person's yes before the merge; a no, or none in time, blocks the node (its
    branch kept, the note on base)."""
    ws, rec = node.ws, node.record
    since = node.start_base or ws.settled()
    commits = ws.git(ws.integration, "log", "--format=%h %s", f"{since}..{node.branch_ref}")
    validated = node.settings.validate_commands
    node.on_slot(False)  # a person may take hours: the agents' slot is free meanwhile
    verdict = approve(
        ApprovalRequest(
            task_id=node.task.id,
            name=node.task.name,
            branch=node.branch,
            base=ws.base,
            why=why,
            diffstat=ws.git(ws.integration, "diff", "--stat", f"{since}...{node.branch_ref}"),
            commits=commits.splitlines(),
            validation=(
                f"passed on the branch in {rec.validate_seconds:.1f} s: {'; '.join(validated)}"
                if validated
                else "no validation commands"
            ),
        )
    )
    if node.cancel.is_set():
        raise NodeFailed(NodeStatus.CANCELLED, "cancelled while waiting for approval")
    if verdict.timed_out:
        raise NodeFailed(
            NodeStatus.BLOCKED,
            f"no approval within {node.settings.approval_timeout_s:g} s ({why}); the branch "
            f"{node.branch} is kept for a later run",
        )
    if not verdict.approved:
        said = verdict.note.strip() or "no reason given"
        raise NodeFailed(NodeStatus.BLOCKED, f"rejected before merging ({why}): {said}")
    rec.notes.append(
        f"approved before merging ({why})" + (f": {verdict.note.strip()}" if verdict.note else "")
    )


def wind_down(node: Node) -> None:
    """After a failure: keep the work (WIP commit, branch, origin backup), drop the checkout,
    and record blocked/failed on main when no retry follows (the last attempt, or a failure
    no retry is made for: a spent budget)."""
    ws, rec, wt = node.ws, node.record, node.worktree
    if wt is not None and wt.exists():
        rec.notes += worktrees.save_work(
            ws,
            wt,
            trailed(node, f"{WIP_PREFIX}: unfinished work of {node.task.id} ({rec.status.value})"),
        )
        rec.cleanup["worktree"] = worktrees.remove_worktree(ws, node.task.id)  # its own: no lock
        if ws.commits_ahead(node.branch_ref):
            rec.notes.append(f"kept branch {node.branch}: it holds work not on {ws.base}")
        else:
            rec.cleanup["branch"] = worktrees.delete_branch(ws, node.task.id)
        if rec.cleanup.get("branch") is None:
            # Once the branch is on the origin it holds the checkpointed work, and more.
            backed_up = backup_branch(node)
            if backed_up and not drop_checkpoint(ws, node.task.id, node.checkpoints > 0):
                rec.cleanup["checkpoint"] = False
        elif node.settings.push:  # no branch to keep, but commits the agent left elsewhere
            rec.notes += worktrees.push_rescued(ws, node.task.id)
    if node.context is None:  # failed before reading the task on main: nothing to record there
        return
    if rec.status == NodeStatus.BLOCKED:
        _record_on_main(node, Status.BLOCKED, failure_note("blocked", node.attempt, rec.reason))
    elif (node.final_attempt or not rec.retryable) and rec.status != NodeStatus.CANCELLED:
        _record_on_main(
            node, Status.FAILED, failure_note(rec.status.value, node.attempt, rec.reason)
        )


def _record_on_main(node: Node, status: Status, note: str) -> None:
    """Blocked/failed: the status and reason go to the task file on main, pushed."""
    ws, s = node.ws, node.settings

    def write() -> str | None:
        node.write_task_file(status, note=note)
        return None

    with ws.merge_lock:
        change = change_base(ws, write, push=s.push, retries=s.push_retries)
    if change.reason is not None:
        node.record.notes.append(f"could not push the {status} status: {change.reason}")
