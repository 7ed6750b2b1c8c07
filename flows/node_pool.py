"""Nodes on a work pool (``node_pool``): the run's side. The run stays the scheduler (its node
tasks, edges and limits are the same); each node task starts the node as a flow run of the
node deployment (``flows.node_flow``), which a worker on any machine picks up, and waits for
its end.

Why ``run_deployment`` from the node task, and not a task run on a remote task worker: a
flow run per node is what Prefect's workers already place, cancel and mark Crashed, it shows
nested in the node task of the run's graph (upstream edges and all), and only it can pause
alone (approval, later). The node's record comes back as its final state's message.

A machine that dies leaves its node run Running forever in a self-hosted Prefect: nothing but
heartbeats says it is gone. So node runs heart-beat every HEARTBEAT_S (set in the
deployment's job variables), and an automation scoped to the node deployment marks one
silent for SILENCE_S Crashed; the node task then starts the node again, on whichever worker
takes it, and the new run resumes from the branch's checkpoint on the origin
(``git/checkpoint``), at most RESTARTS times. A cancelled run cancels its node runs itself
(``cancel``) instead of waiting for the server's clean-up of orphans (70-95 s measured).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.automations import Automation
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import TERMINAL_STATES, FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.input import read_flow_run_input
from prefect.states import Cancelling
from pydantic import ValidationError

from deployments.definitions import tgflow_root
from flows.node_flow import NODE_FLOW, RECORD_KEY
from flows.usage_wait import WAITING
from tasks_lib.run.aar import LOST
from tasks_lib.run.records import NodeRecord, NodeStatus

HEARTBEAT_S = 30  # Prefect's least heartbeat interval
SILENCE_S = 90  # a node run silent this long has lost its machine or process
RESTARTS = 2  # a node whose run crashed starts again at most this many times
POLL_S = 2.0
CANCEL_WAIT_S = 60.0  # for a cancelled node run's worker to stop it
UNTAKEN_S = 60.0  # a node run no worker took for this long is said in the run's log


def node_deployment(pool: str) -> str:
    return f"{NODE_FLOW}/{pool}"


def deploy_nodes(pool: str) -> UUID:
    """The node deployment on ``pool`` (the pool made when missing) and its crash watch.

    Deployed from this tgflow's folder: a worker runs the node flow from the same path on its
    own machine, so tgflow must be installed there too (docs/distributed.md)."""
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):
                client.create_work_pool(
                    WorkPoolCreate(
                        name=pool,
                        type="process",
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                    )
                )
    entrypoint = "flows/node_flow.py:tgflow_node"
    source = flow.from_source(source=str(tgflow_root()), entrypoint=entrypoint)
    assert not inspect.isawaitable(source)  # called from sync code
    deployment_id = source.deploy(
        name=pool,
        work_pool_name=pool,
        job_variables={"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}},
        description="One node of a tgflow run (started by the run; not for starting by hand).",
        print_next_steps=False,
        ignore_warnings=True,
    )
    assert isinstance(deployment_id, UUID)  # called from sync code
    _watch_for_crashes(deployment_id)
    return deployment_id


def _watch_for_crashes(deployment_id: UUID) -> None:
    """The automation that marks a node run Crashed when its heartbeats stop (made once)."""
    name = f"tgflow-node-crashed-{deployment_id}"
    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(name):
            return
    ends = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
    Automation(
        name=name,
        description="A tgflow node run whose heartbeats stopped lost its machine: Crashed, so "
        "the run starts it again elsewhere.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *ends},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.id": [f"prefect.deployment.{deployment_id}"]}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=SILENCE_S),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {SILENCE_S} s: its machine or process is gone",
            )
        ],
    ).create()


def run_on_pool(
    pool: str,
    task_id: str,
    attempt: int,
    parameters: dict[str, Any],
    cancel: threading.Event,
    on_wait: Callable[[str | None], None],
) -> NodeRecord:
    """Start the node on the pool and wait for the record of this ``attempt``; a crashed node
    run starts again. ``on_wait`` hears the node run's usage-limit waits (``usage_wait``), so
    the node's task run in the run's graph shows them too."""
    notes: list[str] = []
    restart = 0
    while True:
        child = run_deployment(
            node_deployment(pool),
            parameters=parameters,
            flow_run_name=task_id if not restart else f"{task_id} (restart {restart})",
            as_subflow=True,
            timeout=0,
        )
        assert isinstance(child, FlowRun)  # called from sync code
        state = _wait(pool, child.id, cancel, on_wait)
        if state.type is not StateType.CRASHED or restart == RESTARTS or cancel.is_set():
            return _with_notes(_record(task_id, attempt, child, state), notes)
        notes.append(
            f"{LOST}{child.name} crashed ({state.message}); started again, from its "
            "checkpoint on the origin"
        )
        restart += 1


def _wait(
    pool: str, flow_run_id: UUID, cancel: threading.Event, on_wait: Callable[[str | None], None]
) -> Any:
    """The node run's final state; cancelled when ``cancel`` is set (the run was). A node
    run no worker takes is said once in the run's log: nothing else would tell. Its
    usage-limit waits (a state named ``WAITING``) go to ``on_wait`` as they begin and end."""
    asked = shown = None
    waiting_since, told = time.monotonic(), False
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.type in TERMINAL_STATES:
                if shown is not None:  # it ended waiting (crashed?): a restart runs again
                    on_wait(None)
                return state
            waits = state.message if state is not None and state.name == WAITING else None
            if waits != shown:
                on_wait(waits)
                shown = waits
            if state is not None and state.type is not StateType.SCHEDULED:
                waiting_since = time.monotonic()
            elif not told and time.monotonic() - waiting_since > UNTAKEN_S:
                told = True
                get_run_logger().warning(
                    "no worker has taken node run %s for %.0f s: is one polling the pool? "
                    "(`prefect worker start --pool %s`, docs/distributed.md)",
                    flow_run_id, UNTAKEN_S, pool,
                )  # fmt: skip
            if cancel.is_set() and asked is None:
                asked = time.monotonic()
                with suppress(Exception):  # already ending: the next read says how
                    client.set_flow_run_state(flow_run_id, Cancelling(), force=True)
            if asked is not None and time.monotonic() - asked > CANCEL_WAIT_S:
                return state
            time.sleep(POLL_S)


def _record(task_id: str, attempt: int, child: FlowRun, state: Any) -> NodeRecord:
    """What the node run said in its final state's message (a cancelled one: in its input,
    the worker having written its own message over it), or what its end says of it."""
    with suppress(ValidationError, TypeError):
        return NodeRecord.model_validate_json(state.message or "")
    if state.type is StateType.CANCELLED:
        with suppress(Exception):  # none kept (not wound down in time): its end says
            return NodeRecord.model_validate(read_flow_run_input(RECORD_KEY, child.id))
    now = datetime.now(UTC)
    status = NodeStatus.CANCELLED if state.type is StateType.CANCELLED else NodeStatus.FAILED
    said = f": {state.message}" if state.message else ""
    return NodeRecord(
        task_id=task_id,
        status=status,
        reason=f"its node run {child.name} ended {state.type.value.lower()}{said}",
        started_at=child.created or now,
    ).close_attempt(attempt)


def _with_notes(record: NodeRecord, notes: list[str]) -> NodeRecord:
    """The restarts said in the record, where the run's records keep notes (its attempts)."""
    if notes:
        target = record.attempts[-1].notes if record.attempts else record.notes
        target[:0] = notes
    return record
