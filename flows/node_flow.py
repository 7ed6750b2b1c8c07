"""The node flow: one node of a run as a flow run of its own, which any worker polling the
run's node pool picks up, on any machine that can reach the origin (``node_pool``;
``flows.node_pool`` starts it and reads its end).

Nothing is shared with the run's machine but the origin and the Prefect API. The node works
in a clone of the origin on its own machine, one per node run at a time: a machine running
several node runs at once (a worker's ``--limit``) gives each a slot of its own, a clone kept
for the next node (``machine_slot``). It starts from the origin's base, takes the
repository's Prefect merge limit around its merge, and its record travels back as the
message of its final state (Completed, or Failed for a node that did not complete), which
``run_deployment`` hands the run with the state: no result storage every machine must reach.

A node run cancelled alone (its Cancel button, or the run passing on a person's cancel) ends
as a cancelled node of the run does in-process: its work committed and pushed to its branch.
Its worker stops it with SIGTERM, and Prefect raises that in the main thread wherever it is,
so the node works in a thread of its own and the main thread, told, sets the node's cancel
event and waits for the wind-down, within the grace before the worker's SIGKILL. The worker
then overwrites the final state's message, so the record is also kept as an input of the node
run (``RECORD_KEY``), which ``flows.node_pool`` reads.
"""

from __future__ import annotations

import contextvars
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.input import create_flow_run_input
from prefect.states import Completed, Failed, State

from flows.approval import approver
from flows.merge_limit import merges_across_machines
from flows.node_log import node_log
from flows.secrets import export_secrets
from flows.usage_wait import flow_run_waits
from tasks_lib.agents.registry import AgentPool
from tasks_lib.agents.settings import AgentSettingsError, settings_for_task
from tasks_lib.errors import TgflowError
from tasks_lib.git.origin import default_root
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.dag import branch_slug
from tasks_lib.graph.taskfile import parse_task
from tasks_lib.run.config import RunConfig
from tasks_lib.run.node import run_node
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus
from tasks_lib.run.secrets import Masker

NODE_FLOW = "tgflow-node"
SLOTS = 64  # node runs of one origin at once on one machine, at most
RECORD_KEY = "tgflow-record"  # the input of a cancelled node run that holds its record
WIND_DOWN_S = 25.0  # a cancelled node's to keep its work: the worker kills it after 30 s


@contextmanager
def machine_slot(origin: str) -> Iterator[Path]:
    """The root of a clone of ``origin`` on this machine that no other node run uses while
    this one holds it (a file lock, freed with a process that dies)."""
    home = default_root(origin)
    slots = home.with_name(f"{home.name}-nodes")
    slots.mkdir(parents=True, exist_ok=True)
    for n in range(SLOTS):
        lock = FileLock(slots / f"{n}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        try:
            yield slots / str(n)
        finally:
            lock.release()
        return
    raise TgflowError(
        f"{SLOTS} node runs of {origin} already work on this machine ({slots}); start the "
        "worker with a lower --limit"
    )


def where(root: Path | None = None) -> str:
    """This machine, for the record: its host name and its folder of node clones (two
    workers on one host with homes of their own are two machines to tgflow)."""
    return f"{socket.gethostname()}:{root.parent}" if root else socket.gethostname()


@flow(name=NODE_FLOW, log_prints=True)
def tgflow_node(
    config: RunConfig,
    task_id: str,
    task_path: str,
    attempt: int = 1,
    previous_failure: str | None = None,
    previous_cause: Cause | None = None,
    final_attempt: bool = True,
) -> State[Any]:
    """Develop and integrate task ``task_id`` (its file ``task_path`` in the repository) for
    the run that started this flow run; ends Completed when it merged, Failed otherwise, the
    node's record as the state's message either way. Cancelled, it winds down first and keeps
    the record as its input ``RECORD_KEY``."""
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None  # a flow's own thread
    cancel = threading.Event()
    node = ThreadPoolExecutor(1, thread_name_prefix=NODE_FLOW)
    ending = node.submit(
        contextvars.copy_context().run, _node, config, task_id, Path(task_path), cancel,
        attempt=attempt, previous_failure=previous_failure, previous_cause=previous_cause,
        final_attempt=final_attempt,
    )  # fmt: skip
    node.shutdown(wait=False)
    try:
        record = ending.result()
    except TerminationSignal:  # cancelled (or the machine stops): the node winds down
        cancel.set()
        with suppress(Exception):  # not wound down in time, or no API: the run says it ended
            kept = ending.result(timeout=WIND_DOWN_S).model_dump(mode="json")
            create_flow_run_input(key=RECORD_KEY, value=kept, flow_run_id=context.flow_run.id)
        raise  # Prefect's own end of a cancelled (or killed) flow run
    message = record.model_dump_json()
    return (
        Completed(message=message)
        if record.status is NodeStatus.COMPLETED
        else Failed(message=message)
    )


def _node(
    config: RunConfig,
    task_id: str,
    task_path: Path,
    cancel: threading.Event,
    *,
    attempt: int,
    previous_failure: str | None,
    previous_cause: Cause | None,
    final_attempt: bool,
) -> NodeRecord:
    """The node's record, whatever happened; ``cancel`` stops it, its work kept."""
    logger = get_run_logger()
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None  # the flow's own thread
    on_wait = flow_run_waits(context.flow_run.id)
    if config.agent_api_key_env:
        export_secrets([config.agent_api_key_env])
    agents = AgentPool()
    try:
        with machine_slot(config.origin) as root:
            record = _develop_and_integrate(
                config, task_id, task_path, root, agents, cancel,
                attempt=attempt, previous_failure=previous_failure,
                previous_cause=previous_cause, final_attempt=final_attempt, on_wait=on_wait,
            )  # fmt: skip
            record.ran_on = where(root)
    except TgflowError as e:  # no clone, no task file, no agent: the node could not start
        now = datetime.now(UTC)
        record = NodeRecord(
            task_id=task_id, status=NodeStatus.FAILED, reason=f"the node could not start: {e}",
            started_at=now, finished_at=now, ran_on=where(),
        )  # fmt: skip
    finally:
        agents.close()
    logger.info("%s: %s %s", task_id, record.status.value, record.reason[:300])
    return record


def _develop_and_integrate(
    config: RunConfig,
    task_id: str,
    task_path: Path,
    root: Path,
    agents: AgentPool,
    cancel: threading.Event,
    *,
    attempt: int,
    previous_failure: str | None,
    previous_cause: Cause | None,
    final_attempt: bool,
    on_wait: Callable[[str | None], None],
) -> NodeRecord:
    ws = Workspace.open(config.origin, root, config.base, push=config.push)
    text = ws.show(ws.settled(), task_path.as_posix())
    task, problems, _ = parse_task(text or "", ws.integration / task_path)
    if task is None or task.id != task_id:
        said = "; ".join(str(p) for p in problems) or f"it is not task {task_id}"
        raise TgflowError(f"{task_path} on {config.base} of {config.origin}: {said}")
    settings = settings_for_task(config.agent_settings(), task, config.agent_rules)
    mask = Masker.from_env([config.agent_api_key_env, settings.api_key_env])
    try:
        agent = agents.get(settings)
    except AgentSettingsError as e:
        raise TgflowError(str(e)) from None
    log = root / "logs" / f"{branch_slug(task_id)}.log"
    with merges_across_machines(ws, config), node_log(get_run_logger(), log, mask) as out:
        return run_node(
            ws, task, agent, config,
            attempt=attempt, previous_failure=previous_failure, previous_cause=previous_cause,
            task_paths={task_id: task_path}, on_line=out.on_line, final_attempt=final_attempt,
            mask=mask, approve=approver(config.approval_timeout_s, cancel), cancel=cancel,
            on_wait=on_wait,
        )  # fmt: skip
