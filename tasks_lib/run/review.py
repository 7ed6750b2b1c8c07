"""Review tasks (``level: review``): checkpoints that validate main instead of changing it.

As in the manual workflow, a review has no worktree and no merge: it runs the validation
commands on the current base branch in the integration worktree, under the merge lock so no
merge moves main underneath it. An optional reviewer agent may read main and report against
the acceptance criteria of the tasks the review depends on; whatever it changes is thrown
away. Without one, the Summary says that only the validation commands were checked. The node
passes (status completed, with a Summary, committed on main) or fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tasks_lib.agents.base import Agent, Outcome, SessionRequest, SessionResult
from tasks_lib.git import WorkspaceError
from tasks_lib.git.base import change_base, commit_paths
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.edit import update_task_file
from tasks_lib.graph.taskfile import Status, Task
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.develop import count_session, limit_met, wait_for_usage
from tasks_lib.run.isolation import sandbox_for
from tasks_lib.run.node_state import Node, NodeFailed, failure_note
from tasks_lib.run.prompt import build_prompt, fenced
from tasks_lib.run.records import NodeRecord, NodeStatus
from tasks_lib.run.secrets import identity
from tasks_lib.run.usage import UsageGate
from tasks_lib.run.validation import run_validation

REVIEW_ONLY = (
    "\n## Review only\n\nThis is a review checkpoint. Do not change, create or commit any file. "
    "Check the base branch against the acceptance criteria and print one line per criterion: "
    "PASS or FAIL and why.\n"
)


def run_review(
    workspace: Workspace,
    task: Task,
    settings: NodeSettings,
    *,
    reviewer: Agent | None = None,
    attempt: int = 1,
    final_attempt: bool = True,
    on_line: Callable[[str], None] = lambda line: None,
    cancel: threading.Event | None = None,
    mask: Callable[[str], str] = identity,
    usage: UsageGate | None = None,
    warn: Callable[[str], None] | None = None,
    on_wait: Callable[[str | None], None] | None = None,
) -> NodeRecord:
    """Validate main for a review task; record the outcome on main. Always returns a record.

    ``mask`` hides the run's secrets in the reason (validation output may print a key)
    before it is written to the task file on main or leaves the review. A reviewer's session
    that its provider's usage limit ended decides nothing: as a node does
    (``develop.session``), the review waits out the pause (``usage``, ``warn`` and
    ``on_wait`` as for ``run_node``), outside the merge lock so that merges go on meanwhile,
    then reviews main as it is by then.
    """
    ws = workspace
    rec = NodeRecord(
        task_id=task.id,
        name=task.name,
        status=NodeStatus.FAILED,
        agent=reviewer.name if reviewer else "",
    )
    waits = None
    if reviewer is not None:  # what a node's waits need (``develop.wait_for_usage``)
        usage = usage or UsageGate(settings.usage_limit_backoff_s, settings.usage_limit_max_wait_s)
        waits = Node(
            ws=ws, task=task, agent=reviewer, settings=settings, attempt=attempt, record=rec,
            cancel=cancel or threading.Event(), usage=usage, warn=warn or on_line,
            on_wait=on_wait or (lambda reason: None),
        )  # fmt: skip
    try:
        while True:
            if waits is not None:
                wait_for_usage(waits, _provider(waits.agent))
            with ws.merge_lock:
                if settings.push:
                    ws.sync()
                on_main = ws.find_task(task.id, settings.tasks_dir)
                if on_main is None:
                    rec.reason = f"no task file with id {task.id!r} under {settings.tasks_dir}/"
                    break
                if on_main.status is Status.COMPLETED:
                    rec.status, rec.already_done = NodeStatus.COMPLETED, True
                    rec.notes.append(f"already completed on {ws.base}; nothing run")
                    break
                session = _review_locked(
                    ws, on_main, settings, rec, reviewer, attempt, on_line, cancel
                )
                if (
                    waits is not None
                    and session is not None
                    and limit_met(waits, _provider(waits.agent), session)
                ):
                    continue  # the lock released, the wait comes first
                rec.reason = mask(rec.reason)
                if rec.status is NodeStatus.COMPLETED or final_attempt:
                    _record_on_main(ws, on_main, settings, rec, attempt)
                break
    except NodeFailed as e:  # waiting for the reviewer's usage limit: cancelled, or too long
        rec.status, rec.reason, rec.cause = e.status, mask(e.reason), e.cause
    except WorkspaceError as e:
        rec.status, rec.reason = NodeStatus.FAILED, mask(str(e))
    return rec.close_attempt(attempt)


def _provider(agent: Agent) -> str:
    return agent.provider or agent.name


def _review_locked(
    ws: Workspace,
    task: Task,
    settings: NodeSettings,
    rec: NodeRecord,
    reviewer: Agent | None,
    attempt: int,
    on_line: Callable[[str], None],
    cancel: threading.Event | None,
) -> SessionResult | None:
    """Validation of base, then the reviewer's session (returned, when one ran): the verdict
    in ``rec``, unless a usage limit ended the session."""
    head = ws.head()
    result = run_validation(
        settings.validate_commands,
        ws.integration,
        settings.validate_timeout_s,
        on_line,
        cancel,
        sandbox_for(ws, settings.sandbox, ws.integration),
    )
    rec.validate_seconds += result.duration_s
    if not result.ok:
        rec.reason = f"validation of {ws.base} at {head[:10]} failed: {result.output_tail}"
        return None
    report = ""
    session = None
    if reviewer is not None:
        prompt = build_prompt(
            task,
            task_file_rel=task.path.relative_to(ws.integration).as_posix(),
            attempt=attempt,
        )
        try:
            session = reviewer.run(
                SessionRequest(
                    task_id=task.id,
                    worktree=ws.integration,
                    prompt=prompt + _reviewed_criteria(ws, task, settings) + REVIEW_ONLY,
                    timeout_s=settings.agent_timeout_s,
                    idle_timeout_s=settings.idle_timeout_s,
                    on_line=on_line,
                    cancel=cancel or threading.Event(),
                    model=task.model,
                    env=ws.identity_env(),
                    sandbox=sandbox_for(ws, settings.sandbox, ws.integration, writable=False),
                )
            )
        finally:
            ws.reset_to(head)  # the reviewer only reports: drop anything it changed
        count_session(rec, session)
        if session.limit is not None:
            return session
        if session.outcome is not Outcome.SUCCEEDED:
            rec.reason = f"reviewer {session.outcome.value}: {session.reason or session.tail}"
            return session
        report = "\n\nReviewer's report:\n\n" + fenced(session.tail, "text")
    else:
        report = " Checked: tests only; acceptance criteria not checked (no review_agent set)."
    commands = ", ".join(f"`{c}`" for c in settings.validate_commands) or "(no commands set)"
    rec.status = NodeStatus.COMPLETED
    rec.notes.append(
        f"Review passed on {ws.base} at {head[:10]}: {commands} passed "
        f"({result.duration_s:.1f} s).{report}"
    )
    return session


def _reviewed_criteria(ws: Workspace, task: Task, settings: NodeSettings) -> str:
    """The acceptance criteria of the tasks the review depends on, as they are on base: the
    reviewer judges their work, and its own task file rarely repeats what they promised."""
    on_base = {t.id: t for t in ws.load_tasks(settings.tasks_dir).tasks}
    parts = []
    for dep in task.depends_on:
        reviewed = on_base.get(dep)
        criteria = reviewed.section("Acceptance Criteria") if reviewed else None
        if reviewed is not None and criteria:
            parts.append(f"### {dep}: {reviewed.name}\n\n{criteria.strip()}\n")
    if not parts:
        return ""
    return "\n## Acceptance criteria of the reviewed tasks\n\n" + "\n".join(parts)


def _record_on_main(
    ws: Workspace, task: Task, settings: NodeSettings, rec: NodeRecord, attempt: int
) -> None:
    """Completed with its Summary, or failed with the reason under Notes; pushed if asked."""

    def write() -> str | None:
        current = ws.find_task(task.id, settings.tasks_dir) or task
        if rec.status is NodeStatus.COMPLETED:
            changed = update_task_file(current.path, status=Status.COMPLETED, summary=rec.notes[-1])
        else:
            note = failure_note("failed", attempt, rec.reason, by="tgflow review")
            changed = update_task_file(current.path, status=Status.FAILED, note=note)
        if changed:
            status = "completed" if rec.status is NodeStatus.COMPLETED else "failed"
            commit_paths(ws, [current.path], f"chore: update task {task.id} status to {status}")
        return None

    change = change_base(ws, write, push=settings.push, retries=settings.push_retries)
    if change.reason is not None:
        rec.status = NodeStatus.FAILED
        rec.reason = f"could not push the review's result: {change.reason}"
