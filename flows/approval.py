"""Approval in the Prefect UI: a node whose branch waits for a person (``approve_when``) asks
in a flow run of its own, nested in the node's task, that pauses for input: the UI shows it
Paused with the branch, the diff stat and the validation result, and a Resume form (approve
or reject, a note).

A flow run of its own because a pause stops the flow run it is in: the run's, and every node
with it, if a node paused there. Only this small flow run waits; the other nodes go on, and
so does the rest of the graph. It is the same on a node pool, nested in the node's flow run.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from contextvars import ContextVar
from typing import Literal
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from tasks_lib.run.approval import ApprovalRequest, Approver, Verdict

APPROVAL_FLOW = "tgflow-approval"
POLL_S = 2  # how often a paused approval looks for its answer
CANCELLED = "the run was cancelled while this waited"
# The run's cancel event, for the approval flow run nested in the caller's thread (a flow
# parameter must travel through the API; a context variable stays in the process).
_cancel: ContextVar[threading.Event | None] = ContextVar("tgflow_approval_cancel", default=None)


class Approval(RunInput):
    """The Resume form."""

    decision: Literal["approve", "reject"]
    note: str = ""


def describe(request: ApprovalRequest) -> str:
    """The form's description (markdown): what the person decides on."""
    commits = "\n".join(f"- {c}" for c in request.commits) or "- (none)"
    return (
        f"### Merge `{request.branch}` into `{request.base}`?\n\n"
        f"Task **{request.task_id}**: {request.name} — waits for approval ({request.why}).\n\n"
        f"**Validation:** {request.validation}\n\n**Commits:**\n{commits}\n\n"
        f"**Changes:**\n```\n{request.diffstat or '(no change)'}\n```\n\n"
        "Approve to merge it; reject (say why in the note: it goes to the task file) to stop "
        "it blocked, its branch kept."
    )


@flow(name=APPROVAL_FLOW, log_prints=True)
def await_approval(request_text: str, task_id: str, timeout_s: float) -> Verdict:
    """Pause this flow run until a person answers in the UI, or ``timeout_s`` passes."""
    logger = get_run_logger()
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None  # a flow run's body
    logger.warning(
        "%s waits for approval: open this flow run (%s) in the UI and Resume it with approve "
        "or reject",
        task_id, context.flow_run.name,
    )  # fmt: skip
    form = Approval.with_initial_data(description=request_text, decision="approve")
    done = threading.Event()
    cancel = _cancel.get()
    if cancel is not None:
        threading.Thread(
            target=_answer_on_cancel, args=(context.flow_run.id, cancel, done), daemon=True
        ).start()
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=int(timeout_s), poll_interval=POLL_S)
    except FlowPauseTimeout:
        logger.warning("%s: no answer within %g s", task_id, timeout_s)
        return Verdict(approved=False, timed_out=True)
    finally:
        done.set()
    logger.info("%s: %s%s", task_id, answer.decision, f" ({answer.note})" if answer.note else "")
    return Verdict(approved=answer.decision == "approve", note=answer.note)


def _answer_on_cancel(flow_run_id: UUID, cancel: threading.Event, done: threading.Event) -> None:
    """A pause waits only for its answer or its timeout (a day by default): when the run is
    cancelled meanwhile, answer it, so the node's thread ends with the run (the node sees the
    cancel and ends cancelled, not rejected)."""
    while not done.is_set():
        if cancel.wait(POLL_S):
            with suppress(Exception), get_client(sync_client=True) as client:  # answered already
                client.resume_flow_run(
                    flow_run_id, run_input={"decision": "reject", "note": CANCELLED}
                )
            return


def approver(timeout_s: float, cancel: threading.Event | None = None) -> Approver:
    """What a node is given to ask: the approval flow run, nested where it is called; a set
    ``cancel`` ends the wait."""

    def ask(request: ApprovalRequest) -> Verdict:
        token = _cancel.set(cancel)
        try:
            return await_approval.with_options(flow_run_name=f"approve {request.task_id}")(
                describe(request), request.task_id, timeout_s
            )
        finally:
            _cancel.reset(token)

    return ask
