"""The graph flow: one Prefect flow run turns the task graph on the base branch into merged work.

Thin on purpose: git, agents, scheduling and the review live in ``tasks_lib``. This module
maps them onto Prefect: one task run per task file, named after its id, submitted only when
its dependencies completed (ready-first, ``tasks_lib.run.scheduler``) with their futures as
``wait_for`` so the run graph in the UI is the ``depends_on`` graph; retries for transient
failures; persisted results keyed per flow run so the UI's flow-run Retry reruns only what
did not complete; progress, table and review artifacts.
"""

from __future__ import annotations

import hashlib
import queue
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.schemas.objects import TaskRun
from prefect.context import FlowRunContext, TaskRunContext, get_run_context
from prefect.futures import PrefectFuture
from prefect.states import Failed, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from flows import run_context as run_state
from flows.approval import approver
from flows.merge_limit import merges_across_machines
from flows.node_log import node_log
from flows.node_messages import listening
from flows.node_pool import deploy_nodes, run_on_pool
from flows.notifications import node_finished
from flows.run_context import Event, NodeFailed, RunState
from flows.secrets import block_name, export_secrets
from flows.usage_wait import task_run_waits
from tasks_lib.agents.settings import AgentSettingsError, settings_for_task
from tasks_lib.errors import ProblemsError
from tasks_lib.git import WorkspaceError
from tasks_lib.git.backup import reset_tasks
from tasks_lib.git.base import change_base, commit_paths
from tasks_lib.git.locks import run_lock
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.dag import TaskGraph, branch_slug
from tasks_lib.graph.taskfile import Level, Status
from tasks_lib.run.aar import peak_concurrency, ran, write_aar
from tasks_lib.run.budget import Ledger, run_overspent
from tasks_lib.run.config import RunConfig
from tasks_lib.run.durations import history_path, run_history
from tasks_lib.run.node import run_node
from tasks_lib.run.records import NodeRecord, NodeStatus, RunRecord
from tasks_lib.run.review import run_review
from tasks_lib.run.scheduler import ScheduleResult, Slot, schedule
from tasks_lib.run.setup import Prepared, open_workspace, prepare
from tasks_lib.run.table import node_table
from tasks_lib.run.usage import UsageGate

PROGRESS_KEY = "tgflow-progress"
NODES_KEY = "tgflow-nodes"
AAR_KEY = "tgflow-aar"


def node_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Origin + task id + flow run id: a flow-run Retry reuses completed nodes, a new run not."""
    origin_task = f"{parameters['origin']}\0{parameters['task_id']}".encode()
    digest = hashlib.sha256(origin_task).hexdigest()[:24]
    return f"tgflow-node-{digest}-{context.task_run.flow_run_id}"


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry failed, stalled and timed-out nodes; never blocked ones or bad input."""
    return isinstance(state.data, NodeFailed) and state.data.retryable


@task(persist_result=True, cache_key_fn=node_cache_key, retry_condition_fn=retry_transient)
def graph_node(origin: str, task_id: str) -> NodeRecord:
    """One task file: develop and integrate it (or, for a review task, validate main)."""
    run = run_state.current()
    logger = get_run_logger()  # bound to this task run; agent output threads log through it
    item = run.graph.tasks[task_id]
    if item.status is Status.COMPLETED:
        now = datetime.now(UTC)
        return NodeRecord(
            task_id=task_id,
            name=item.name,
            status=NodeStatus.COMPLETED,
            already_done=True,
            started_at=now,
            finished_at=now,
            notes=[f"already completed on {run.config.base}; nothing run"],
        )

    flow_context = FlowRunContext.get()
    assert flow_context is not None and flow_context.flow_run is not None  # nodes run in a flow
    this_run = flow_context.flow_run  # its id too: two runs can draw the same random name
    run_dir = f"{this_run.name}-{this_run.id.hex[:8]}"
    log = run.workspace.root / "logs" / run_dir / f"{branch_slug(task_id)}.log"

    attempt = run.next_attempt(task_id)
    final = attempt > run.config.retries
    pool = run.config.node_pool if item.level is not Level.REVIEW else None
    try:
        settings = settings_for_task(run.agent_settings, item, run.config.agent_rules)
        agent = None if pool else run.agents.get(settings)
    except AgentSettingsError as e:  # bad agent settings in the task file: a retry cannot help
        now = datetime.now(UTC)
        record = NodeRecord(
            task_id=task_id, name=item.name, status=NodeStatus.FAILED, reason=str(e),
            started_at=now, finished_at=now,
        )  # fmt: skip
        raise NodeFailed(record, retryable=False) from None
    takes = agent is not None and agent.takes_messages and item.level is not Level.REVIEW
    with run.switchboard.connected(task_id, agent.name if agent else "", takes, pool) as line:
        if line.cancel.is_set():  # by a person, before it started
            record = _cancelled_before_start(task_id, item.name, attempt)
        elif pool:  # its output is in its own flow run's log, on the machine that ran it
            record = run_on_pool(
                pool, task_id, attempt,
                {"config": run.config, "task_id": task_id,
                 "task_path": run.task_paths[task_id].as_posix(), "attempt": attempt,
                 "previous_failure": run.failures.get(task_id),
                 "previous_cause": run.causes.get(task_id), "final_attempt": final},
                line.cancel, task_run_waits(),
            )  # fmt: skip
        else:
            assert agent is not None  # every node off a pool has one

            def tell(text: str) -> None:
                run.notify(Event("line", task_id, text=text))

            def warn(on_line: Callable[[str], None], text: str) -> None:
                """Why the node waits: in its output, and a warning in its task run's log."""
                on_line(f"tgflow: {text}")
                logger.warning("%s", run.mask(text))

            with node_log(logger, log, run.mask, tell) as out:
                if item.level is Level.REVIEW:
                    record = run_review(
                        run.workspace, item, run.config,
                        reviewer=agent if run.config.review_agent else None,
                        attempt=attempt, final_attempt=final, on_line=out.on_line,
                        cancel=line.cancel, mask=run.mask, usage=run.usage,
                        warn=lambda text: warn(out.on_line, text), on_wait=task_run_waits(),
                    )  # fmt: skip
                else:
                    record = run_node(
                        run.workspace, item, agent, run.config,
                        attempt=attempt, previous_failure=run.failures.get(task_id),
                        previous_cause=run.causes.get(task_id), task_paths=run.task_paths,
                        on_line=out.on_line, cancel=line.cancel, inbox=line.inbox,
                        final_attempt=final, mask=run.mask,
                        on_changed=lambda files: run.changed.report(task_id, files),
                        on_slot=lambda held: run.news.put(Slot(task_id, held)),
                        approve=approver(run.config.approval_timeout_s, line.cancel),
                        ledger=run.ledger, usage=run.usage,
                        warn=lambda text: warn(out.on_line, text), on_wait=task_run_waits(),
                    )  # fmt: skip
        line.ended = record.status.value
    if pool or item.level is Level.REVIEW:  # its sessions did not report to the run's ledger
        run.ledger.settle(task_id, record.spend)
    record = run.finish_attempt(task_id, record)
    said = log.exists() and log.stat().st_size > 0
    record.log_path = str(log) if said else record.log_path  # none when nothing was said here
    if record.status is NodeStatus.COMPLETED:
        return record
    logger.warning("%s %s: %s", task_id, record.status.value, record.reason)
    raise NodeFailed(record, retryable=record.retryable)


def _cancelled_before_start(task_id: str, name: str, attempt: int) -> NodeRecord:
    now = datetime.now(UTC)
    return NodeRecord(
        task_id=task_id, name=name, status=NodeStatus.CANCELLED,
        reason="cancelled by a person before it started", started_at=now, finished_at=now,
    ).close_attempt(attempt)  # fmt: skip


def _record_of(future: PrefectFuture[NodeRecord], task_id: str) -> NodeRecord:
    """The node's record from its final state, whatever happened to the task run."""
    try:
        value: object = future.result(raise_on_failure=False)
    except BaseException as e:  # a crashed or cancelled task run
        value = e
    if isinstance(value, NodeRecord):
        return value
    if isinstance(value, NodeFailed):
        return value.record
    now = datetime.now(UTC)
    return NodeRecord(
        task_id=task_id,
        status=NodeStatus.FAILED,
        reason=f"the task run ended without a record: {value!r}",
        started_at=now,
        finished_at=now,
    )


def submit_graph(
    graph: TaskGraph,
    node: Task[..., NodeRecord],
    *,
    params: Callable[[str], dict[str, Any]],
    max_parallel: int,
    only: list[str] | None = None,
    retries: int = 0,
    retry_delay_s: float = 0.0,
    on_submit: Callable[[str], None] = lambda task_id: None,
    on_record: Callable[[NodeRecord], None] = lambda record: None,
    changed: Callable[[str], Collection[str]] | None = None,
    news: queue.Queue[NodeRecord | Slot] | None = None,
    spent: Callable[[], str | None] = lambda: None,
) -> ScheduleResult:
    """Submit ``node`` once per task, ready-first, each run named after its task id.

    A node is submitted only when its dependencies completed, with their futures as
    ``wait_for`` (already finished: they only draw the edges in the UI). Retries back off
    exponentially from ``retry_delay_s``. ``changed``: what a running node's branch has
    changed so far, which the pick keeps other nodes off (``schedule``). ``news``: where the
    records arrive, and the nodes' ``Slot`` news (a node waiting to merge frees its slot).
    ``spent``: why no node may start any more (the run's budget), or None.
    """
    completions: queue.Queue[NodeRecord | Slot] = queue.Queue() if news is None else news
    futures: dict[str, PrefectFuture[NodeRecord]] = {}
    delays = exponential_backoff(backoff_factor=retry_delay_s)

    def submit(task_id: str, upstream: list[str]) -> None:
        run_name = task_id.replace("{", "{{").replace("}", "}}")  # Prefect formats the name
        named = node.with_options(
            name=task_id, task_run_name=run_name, retries=retries, retry_delay_seconds=delays
        )
        future = named.submit(**params(task_id), wait_for=[futures[u] for u in upstream])
        futures[task_id] = future
        on_submit(task_id)
        future.add_done_callback(lambda f: completions.put(_record_of(f, task_id)))

    return schedule(
        graph,
        max_parallel=max_parallel,
        submit=submit,
        completions=completions,
        only=only or (),
        on_record=on_record,
        changed=changed,
        spent=spent,
    )


def commit_aar(
    ws: Workspace, config: RunConfig, rel_path: str, text: str, history: str
) -> str | None:
    """Commit the review on base (and push it), its run history beside it (what later runs
    learn durations from: ``durations``): returns a problem, or None.

    Reviews hold local paths and failure output, so the same commit marks ``aar_dir``
    ``export-ignore`` in ``.gitattributes`` (if it is not yet): ``git archive``, and the
    release tooling built on it, leaves them out of release tarballs.
    """
    ignore = f"{config.aar_dir.rstrip('/')} export-ignore"

    def write() -> str | None:
        path = ws.integration / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        beside = ws.integration / history_path(rel_path)
        beside.write_text(history, encoding="utf-8")
        attributes = ws.integration / ".gitattributes"
        old = attributes.read_text(encoding="utf-8") if attributes.exists() else ""
        paths = [path, beside]
        if ignore not in old.splitlines():
            lead = old if not old or old.endswith("\n") else f"{old}\n"
            attributes.write_text(f"{lead}{ignore}\n", encoding="utf-8")
            paths.append(attributes)
        commit_paths(ws, paths, f"docs: after-action review {Path(rel_path).stem}")
        return None

    with ws.merge_lock:
        return change_base(ws, write, push=config.push, retries=3).reason


# cast: Prefect types a flow's runner invariantly as TaskRunner[PrefectFuture[Any]].
@flow(
    name="tgflow",
    task_runner=cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner()),
    log_prints=True,
)
def tgflow_run(config: RunConfig) -> RunRecord | State[Any]:
    """Run the task graph of ``config.origin`` to merged, validated work.

    Completed when every selected node completed; Failed (saying how many did not)
    otherwise. The after-action review is an artifact and a file on the base branch.
    """
    logger = get_run_logger()
    context = get_run_context()
    assert isinstance(context, FlowRunContext) and context.flow_run is not None
    flow_run = context.flow_run
    started = datetime.now(UTC)
    try:
        ws = open_workspace(config)
    except ProblemsError as e:  # bad input: a message, not a crash
        return _not_run(e, config.base, config.origin)

    def waiting(holder: str) -> None:
        logger.warning("waiting: %s is using tgflow's clone of %s", holder, ws.origin)

    with run_lock(ws.root, waiting):
        return _run(config, ws, f"{started:%Y-%m-%d-%H%M%S}-{flow_run.name}", started)


def _run(
    config: RunConfig, ws: Workspace, run_name: str, started: datetime
) -> RunRecord | State[Any]:
    """The run itself, with tgflow's clone of the origin to itself."""
    try:
        prepared = _set_up(config, ws)
    except ProblemsError as e:  # e.g. a task file made invalid on the base branch
        return _not_run(e, config.base, ws.origin)
    config = prepared.config
    run = RunState(
        config=config,
        workspace=ws,
        graph=prepared.graph,
        agent_settings=config.agent_settings(),
        observer=run_state.observer(),
        ledger=Ledger(config.run_budget(), config.budget_stop_running),
        usage=UsageGate(config.usage_limit_backoff_s, config.usage_limit_max_wait_s),
    )
    if config.node_pool:
        try:
            deploy_nodes(config.node_pool)
        except Exception as e:  # a server that refuses the deployment: nothing has run yet
            said = f"node_pool {config.node_pool!r}: cannot deploy the node flow: {e}"
            return _not_run(ProblemsError([said]), config.base, ws.origin)
    with merges_across_machines(ws, config):
        with run_state.running(run):
            records = _run_nodes(run)
        record = _publish(run, _run_record(run, records, run_name, started))
    run.observer.record = record
    return _final_state(record)


def _not_run(e: ProblemsError, base: str, origin: str) -> State[Any]:
    return Failed(
        message=f"nothing was run: {len(e.lines)} problem(s) on {base} of {origin}:\n"
        + "\n".join(e.lines)
    )


def _set_up(config: RunConfig, ws: Workspace) -> Prepared:
    """Reconcile the clone with the origin, then read the settings and the graph from base,
    then set aside the kept branches of the tasks to ``reset`` (a refused run resets none)."""
    logger = get_run_logger()
    if config.reset and not config.push:
        raise ProblemsError(
            [f"reset {', '.join(config.reset)}: needs push (the kept branches are moved aside "
             f"on the origin); run with push, or first `tgflow reset --origin {config.origin} "
             f"{' '.join(config.reset)}`"]
        )  # fmt: skip
    try:
        with ws.merge_lock:
            report = reconcile(ws, push=config.push)
    except WorkspaceError as e:
        raise ProblemsError([str(e)]) from None
    for what, items in vars(report).items():
        if items:
            logger.info("reconcile: %s: %s", what.replace("_", " "), items)
    prepared = prepare(config, ws)
    missing = prepared.config.missing_settings(prepared.graph.tasks.values())
    if missing:
        raise ProblemsError(missing)
    try:
        with ws.merge_lock:
            for line in reset_tasks(ws, config.reset):
                logger.info("reset %s", line)
    except WorkspaceError as e:
        raise ProblemsError([str(e)]) from None
    for warning in prepared.warnings:
        logger.warning("%s", warning)
    if prepared.config.agent_api_key_env:
        for name in export_secrets([prepared.config.agent_api_key_env]):
            logger.info("%s set from the Prefect Secret block %s", name, block_name(name))
    return prepared


def _run_nodes(run: RunState) -> list[NodeRecord]:
    """Every selected node submitted and finished, with live progress; records in graph order."""
    logger = get_run_logger()
    config, graph = run.config, run.graph
    run.notify(Event("planned", graph=graph))
    total = len(config.only) if config.only else len(graph)
    progress = create_progress_artifact(
        progress=0.0, key=PROGRESS_KEY, description=f"Nodes finished of {total}"
    )
    assert isinstance(progress, UUID)  # a sync flow gets the id, not a coroutine
    finished: list[NodeRecord] = []

    def on_record(record: NodeRecord) -> None:
        finished.append(record)
        update_progress_artifact(progress, 100.0 * len(finished) / max(total, 1))
        logger.info("%s: %s %s", record.task_id, record.status.value, record.reason[:300])
        run.notify(Event("finished", record.task_id, record=record))
        node_finished(record)  # an event: notifications of a blocked node listen for it

    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None  # the flow's own thread
    with listening(run.switchboard, context.flow_run.id, set(graph.tasks), run.cancel, logger):
        try:
            result = submit_graph(
                graph,
                graph_node,
                params=lambda task_id: {"origin": run.workspace.origin, "task_id": task_id},
                max_parallel=config.max_parallel,
                only=config.only,
                retries=config.retries,
                retry_delay_s=config.retry_delay_s,
                on_submit=lambda task_id: run.notify(Event("started", task_id)),
                on_record=on_record,
                changed=run.changed,
                news=run.news,
                spent=run.ledger.run_spent,
            )
        except BaseException:
            run.cancel.set()  # stop agent sessions still running
            run.switchboard.cancel_all()
            raise
        finally:
            run.agents.close()
    shown = [*graph.order, *graph.held_back]  # held-back tasks are the run's too, not nodes
    return [result.records[i] for i in shown if i in result.records]


def _run_record(
    run: RunState, records: list[NodeRecord], run_name: str, started: datetime
) -> RunRecord:
    graph = run.graph
    path, cost = graph.critical_path()
    return RunRecord(
        run_name=run_name,
        origin=run.workspace.origin,
        base=run.config.base,
        started_at=started,
        finished_at=datetime.now(UTC),
        max_parallel=run.config.max_parallel,
        nodes=records,
        critical_path=path,
        critical_path_cost=cost,
        depends_on={t: graph.dependencies(t) for t in graph.order},
        max_concurrent=peak_concurrency(records),
        budget=run.config.run_budget(),
        aar_path=f"{run.config.aar_dir.rstrip('/')}/{run_name}.md",
    )


def _publish(run: RunState, record: RunRecord) -> RunRecord:
    """The review and the nodes table as artifacts, and the review committed on base when a
    node ran and ``aar_commit`` is on (a run that did nothing leaves base alone). A review not
    on base does not fail the run (the work is merged): its path is then None and
    ``aar_unsaved`` says why."""
    logger = get_run_logger()
    aar = run.mask(write_aar(record))  # records are masked already; the review must be too
    create_markdown_artifact(
        aar, key=AAR_KEY, description=f"After-action review of {record.run_name}"
    )
    create_table_artifact(node_table(record.nodes), key=NODES_KEY, description="Nodes of this run")
    assert record.aar_path is not None
    if not any(ran(n) for n in record.nodes):
        record.aar_unsaved = "not committed: no node ran"
    elif not run.config.aar_commit:
        record.aar_unsaved = "not committed: aar_commit is false"
    else:
        try:
            history = run_history(record, run.graph.tasks).model_dump_json(indent=1)
            problem = commit_aar(run.workspace, run.config, record.aar_path, aar, run.mask(history))
        except WorkspaceError as e:
            problem = str(e)
        if problem:
            logger.warning("the after-action review was not saved on the origin: %s", problem)
            record.aar_unsaved = f"not saved on the origin: {problem}"
    if record.aar_unsaved:
        record.aar_path = None  # only in the artifact
    return record


def _final_state(record: RunRecord) -> RunRecord | State[Any]:
    """Completed when every node completed within the run's budget; else Failed, saying
    first that the budget was spent (the reason the nodes not started did not run)."""
    undone = [r for r in record.nodes if r.status is not NodeStatus.COMPLETED]
    spent = run_overspent(record.budget, record.spend)
    if not undone:
        return record if spent is None else Failed(message=f"{spent}; every node completed")
    counts: dict[str, int] = {}
    for r in undone:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return Failed(
        message=("" if spent is None else f"{spent}; ")
        + f"{len(undone)} of {len(record.nodes)} nodes did not complete ({detail}): "
        + ", ".join(r.task_id for r in undone)
    )
