"""The flow a person runs from the Prefect UI to talk to one node of a running run, or to
cancel that node: Deployments → ``message`` (flow ``tgflow-node-message``) → Run → Custom run.

A flow because the Prefect UI (3.8) sends input only to a paused flow run (its Resume form),
never to a running one, while a run's node messages are inputs of its RUNNING flow run
(``flows.node_messages``). A deployment's custom-run form is the UI's one form that takes
typed fields and runs code: this small flow run sends the message the way the API path does,
waits for the run's reply to it, and ends with that reply, Completed with what the run said
or Failed with why not, so the person reads the answer on this flow run's page.
"""

from __future__ import annotations

import time
from uuid import UUID, uuid4

from prefect import flow, get_client, get_run_logger
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.input import create_flow_run_input, filter_flow_run_input
from prefect.runtime import flow_run as this_flow_run
from prefect.states import Completed, Failed, State
from pydantic import ValidationError

from deployments.definitions import FLOW_NAME, MESSAGE_FLOW
from flows.node_messages import KEY_PREFIX, REPLY_PREFIX, NodeMessage, Reply
from tasks_lib.errors import TgflowError

REPLY_WAIT_S = 30.0  # the run reads its messages about once a second while its nodes run
POLL_S = 0.5
LISTENING = {StateType.RUNNING, StateType.PAUSED}
_ENDED = "only a running run's nodes take messages"


class NoSuchRun(TgflowError):
    """The form names no run that listens: the message says which, and what to give."""


def find_run(run: str) -> FlowRun:
    """The one listening tgflow flow run ``run`` names: its id, or its name as the UI shows
    it (friendlier, but names repeat: several running runs of one name are refused)."""
    wanted = run.strip()
    try:
        run_id = UUID(wanted)
    except ValueError:
        return _by_name(wanted)
    with get_client(sync_client=True) as client:
        try:
            found = client.read_flow_run(run_id)
        except ObjectNotFound:
            raise NoSuchRun(f"no flow run has the id {run_id}") from None
        flow_name = client.read_flow(found.flow_id).name
    if flow_name != FLOW_NAME:
        raise NoSuchRun(
            f"flow run {found.name} ({run_id}) is a run of {flow_name}, not of {FLOW_NAME}: "
            "give the run whose nodes you mean"
        )
    if found.state_type not in LISTENING:
        raise NoSuchRun(f"the {FLOW_NAME} run {found.name} is {_state(found)}: {_ENDED}")
    return found


def _by_name(name: str) -> FlowRun:
    with get_client(sync_client=True) as client:
        named = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])),
            limit=50,
        )
    listening = [r for r in named if r.state_type in LISTENING]
    if len(listening) == 1:
        return listening[0]
    if listening:
        ids = ", ".join(str(r.id) for r in listening)
        raise NoSuchRun(
            f"{len(listening)} running {FLOW_NAME} runs are named {name!r} ({ids}): give the "
            "flow-run id of the one you mean (the last part of its page's address)"
        )
    if named:
        states = ", ".join(sorted({_state(r) for r in named}))
        raise NoSuchRun(f"the {FLOW_NAME} run {name!r} is {states}: {_ENDED}")
    raise NoSuchRun(
        f"no {FLOW_NAME} run is named {name!r}: give the name its page shows (Runs → the "
        f"{FLOW_NAME} run), or its flow-run id"
    )


def _state(run: FlowRun) -> str:
    return run.state.name or run.state.type.value if run.state else "not started"


def ask(run_id: UUID, message: NodeMessage, wait_s: float) -> Reply | None:
    """Send ``message`` to the run's flow run and wait for the run's reply to it; None when
    none came within ``wait_s`` (the run reads messages only while its nodes run)."""
    key = f"{KEY_PREFIX}-{uuid4()}"  # a key is taken once per flow run
    create_flow_run_input(key=key, value=message.model_dump(mode="json"), flow_run_id=run_id)
    seen: set[str] = set()
    deadline = time.monotonic() + wait_s
    while True:
        inputs = filter_flow_run_input(
            key_prefix=REPLY_PREFIX, limit=50, exclude_keys=seen, flow_run_id=run_id
        )
        assert isinstance(inputs, list)  # called from sync code
        for item in inputs:
            seen.add(item.key)
            try:
                reply = Reply.model_validate(item.decoded_value)
            except ValidationError:  # not a reply of tgflow's: not ours either
                continue
            if reply.message_key == key:
                return reply
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def _flow_run_name() -> str:
    """What the deployment's list of runs shows: who was told, or cancelled."""
    parameters = this_flow_run.parameters
    return f"{'cancel' if parameters.get('cancel') else 'message to'} {parameters.get('task_id')}"


@flow(name=MESSAGE_FLOW, flow_run_name=_flow_run_name)
def tgflow_node_message(run: str, task_id: str, text: str = "", cancel: bool = False) -> State[str]:
    """Tell one node of a running tgflow run something, or cancel that node; ends with the
    run's answer. (The arguments below are the descriptions of the UI form's fields.)

    Args:
        run: The tgflow run: its name as its page in the UI shows it (Runs, e.g.
            crimson-fox), or its flow-run id.
        task_id: The node: its task id, the task run's name in the run's graph.
        text: What to tell the node's agent (only opencode-server sessions take it).
        cancel: Cancel this node instead: it ends cancelled, its work kept on its branch, the
            nodes that depend on it skipped; the rest of the run goes on.
    """
    logger = get_run_logger()
    try:
        target = find_run(run)
    except NoSuchRun as e:
        logger.error("%s", e)
        return Failed(message=str(e))
    message = NodeMessage(task_id=task_id.strip(), text=text, cancel=cancel)  # pasted, perhaps
    reply = ask(target.id, message, REPLY_WAIT_S)
    if reply is None:
        said = (
            f"the run {target.name} did not answer within {REPLY_WAIT_S:g} s: it reads "
            "messages only while its nodes run (not while it sets up or writes its review); "
            "see its log"
        )
    else:
        said = reply.said
    if reply is None or not reply.delivered:
        logger.error("%s: %s", target.name, said)
        return Failed(message=said)
    logger.info("%s: %s", target.name, said)
    return Completed(message=said, data=said)
