"""Notifications: a person hears of a failed run, a blocked node and an approval that waits,
without watching the UI or the terminal.

Prefect's own automations do the watching and the sending, on the server (its triggers and
actions services, on in every ``prefect server start``): they outlive any one run, fire for
runs started from the UI or a schedule as well as from a terminal, and a person can pause or
edit them on the UI's Automations page. tgflow only sets them up (``ensure_notifications``,
from ``tgflow server --notify-webhook``): one webhook block and one automation per case,
made again by name each time, so a second start changes nothing and a new URL or wording
replaces the old.

A failed run and a paused flow run are Prefect state changes, which the server turns into
events itself. A blocked node is not: the run goes on with its other nodes, and the run's
own Failed comes only at its end. So the graph flow emits an event for every node record as
it comes in (``node_finished``), ``tgflow.node.<status>`` with the flow run as its resource:
the blocked automation listens for ``tgflow.node.blocked``, and the others are there in the
UI's event feed for automations of one's own.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import Event, ResourceSpecification

from deployments.definitions import FLOW_NAME
from flows.approval import APPROVAL_FLOW
from flows.node_flow import NODE_FLOW
from tasks_lib.run.records import NodeRecord, NodeStatus

BLOCK = "tgflow-notify"  # the webhook block the automations send through
NODE_EVENT = "tgflow.node"  # + ".<status>": a node's record came in to the run
REASON_CHARS = 2000  # a chat message, not the agent's whole output (and events have a size cap)
RUN_FAILED = "tgflow-notify-run-failed"
NODE_BLOCKED = "tgflow-notify-node-blocked"
APPROVAL_WAITS = "tgflow-notify-approval-waits"

# Jinja, rendered by the server with the event and the flow run it names (its state as of the
# event); ``ui_url`` is the run's page in the server's UI.
_STATE_MESSAGE = "{% if flow_run.state.message %}: {{ flow_run.state.message }}{% endif %}"
_LINK = "{{ flow_run|ui_url }}"


def node_finished(record: NodeRecord) -> Event | None:
    """Tell the server a node's record came in (``tgflow.node.<status>``), from the flow run
    it belongs to; the event it sent, None outside a flow run (there is no run to name)."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    run = context.flow_run
    return emit_event(
        event=f"{NODE_EVENT}.{record.status.value}",
        resource={
            "prefect.resource.id": f"prefect.flow-run.{run.id}",
            "prefect.resource.name": run.name,
        },
        related=[
            {
                "prefect.resource.id": f"tgflow.task.{record.task_id}",
                "prefect.resource.role": "task",
                "prefect.resource.name": record.name or record.task_id,
            }
        ],
        payload={
            "task_id": record.task_id,
            "name": record.name,
            "status": record.status.value,
            "reason": record.reason[:REASON_CHARS],
            "cause": record.cause.value if record.cause else None,
        },
    )


def ensure_notifications(webhook_url: str) -> list[str]:
    """The webhook block (``BLOCK``) POSTing to ``webhook_url`` and the automations that send
    through it, on the server this process reports to; the automations' names.

    The URL is kept as one of the block's secrets, not in its plain URL field: a chat
    webhook's URL is its credential, and the UI shows a block's plain fields to anyone. The
    JSON body has ``text`` (subject and body, what Slack and Mattermost show) and both
    apart, for receivers of one's own.
    """
    block_id = CustomWebhookNotificationBlock(
        name=BLOCK,
        url="{{webhook_url}}",
        json_data={"text": "{{subject}}\n{{body}}", "subject": "{{subject}}", "body": "{{body}}"},
        secrets={"webhook_url": webhook_url},
    ).save(BLOCK, overwrite=True)
    assert isinstance(block_id, UUID)  # called from sync code
    automations = [automation(block_id) for automation in (_run_failed, _node_blocked, _approval)]
    with get_client(sync_client=True) as client:
        for wanted in automations:
            found = client.read_automations_by_name(wanted.name)
            if found:
                client.update_automation(found[0].id, wanted)
            else:
                client.create_automation(wanted)
    return [a.name for a in automations]


def _of_flows(*names: str) -> ResourceSpecification:
    """Events about flow runs of these flows (the flow is a related resource of its runs')."""
    return ResourceSpecification(
        {"prefect.resource.role": "flow", "prefect.resource.name": list(names)}
    )


def _on(expect: set[str], **trigger: Any) -> EventTrigger:
    """Each such event of a flow run, on its own, as it comes."""
    return EventTrigger(
        expect=expect,
        match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
        posture=Posture.Reactive,
        threshold=1,
        **trigger,
    )


def _run_failed(block_id: UUID) -> AutomationCore:
    """A tgflow run that ended Failed (a node did not complete, or nothing was run) or
    Crashed (its process or machine died); its node runs on a pool are not told apart: their
    run fails for them."""
    return AutomationCore(
        name=RUN_FAILED,
        description="tell the webhook when a tgflow run ends Failed or Crashed",
        trigger=_on(
            {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related=_of_flows(FLOW_NAME),
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="tgflow run {{ flow_run.name }} {{ flow_run.state.name }}",
                body=f"The tgflow run {{{{ flow_run.name }}}} ended {{{{ flow_run.state.name }}}}"
                f"{_STATE_MESSAGE}\n{_LINK}",
            )
        ],
    )


def _node_blocked(block_id: UUID) -> AutomationCore:
    """A node whose agent said it cannot go on: a person must answer before it can."""
    return AutomationCore(
        name=NODE_BLOCKED,
        description="tell the webhook when a tgflow node is blocked (its agent cannot go on)",
        trigger=_on({f"{NODE_EVENT}.{NodeStatus.BLOCKED.value}"}),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="tgflow: node {{ event.payload.task_id }} is blocked",
                body="Node {{ event.payload.task_id }} of the tgflow run {{ flow_run.name }} "
                f"is blocked: {{{{ event.payload.reason }}}}\n{_LINK}",
            )
        ],
    )


def _approval(block_id: UUID) -> AutomationCore:
    """An approval that waits for a person (``flows.approval``: a flow run of its own that
    pauses), or a tgflow run or node run paused by hand; it waits, its timeout running,
    until someone resumes it from its page."""
    return AutomationCore(
        name=APPROVAL_WAITS,
        description="tell the webhook when a tgflow run or node run waits for approval",
        trigger=_on(
            {"prefect.flow-run.Paused", "prefect.flow-run.Suspended"},
            match_related=_of_flows(APPROVAL_FLOW, FLOW_NAME, NODE_FLOW),
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="tgflow: {{ flow_run.name }} waits for approval",
                body="The tgflow flow run {{ flow_run.name }} is {{ flow_run.state.name }}"
                f"{_STATE_MESSAGE}. Approve (Resume) or reject it on its page: {_LINK}",
            )
        ],
    )
