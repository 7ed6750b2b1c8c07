"""A node waiting out a provider's usage limit shows it in the Prefect UI: its run's state is
a Running state named ``AwaitingUsageLimit``, the reason its message (``usage limit of
<provider>: waiting until 12:34:56 UTC (...)``), and plain Running again when it goes on.

Running, not Paused: in Prefect a Paused run waits for someone to resume it, while the node
goes on by itself at the reset, and it holds its agent slot meanwhile.

A task run (a node of the run's flow): in Prefect 3.8.8 the task engine orchestrates its
task runs' states on the client. It emits each state as an event the server's task-run
recorder writes (newest timestamp wins), and proposes states only before and after the
task's function, never while it runs. So a state emitted the same way from the node's own
thread, while its function waits, races no transition of the engine's; the engine's own
state is left as it was, and its final state, newer, ends the task run as ever. A
``set_task_run_state`` through the API instead is answered "not found" for a task run the
recorder has not written yet (a node that waits at its first session) and bypasses the
recorder.

A flow run (a node on a node pool): its states are orchestrated by the server, so the wait
is proposed through the API, without force: a node run being cancelled stays Cancelling.
The run's node task that watches it repeats the wait on its own task run (``node_pool``).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.states import Running
from prefect.utilities.engine import emit_task_run_state_change_event

WAITING = "AwaitingUsageLimit"


def _state(reason: str | None) -> State[None]:
    return Running(name=WAITING, message=reason) if reason else Running()


def task_run_waits() -> Callable[[str | None], None]:
    """``on_wait`` for the node's task run; called in that task run's thread."""
    context = TaskRunContext.get()
    assert context is not None and context.task_run is not None  # called in a node task
    task_run = context.task_run
    shown = task_run.state

    def on_wait(reason: str | None) -> None:
        nonlocal shown
        state = _state(reason)
        emit_task_run_state_change_event(
            task_run=task_run, initial_state=shown, validated_state=state
        )
        shown = state

    return on_wait


def flow_run_waits(flow_run_id: UUID) -> Callable[[str | None], None]:
    """``on_wait`` for a node's own flow run (a node on a node pool)."""
    logger = get_run_logger()

    def on_wait(reason: str | None) -> None:
        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(flow_run_id, _state(reason))
        except Exception as e:  # a state not shown is no reason to stop the node
            logger.warning("could not show the node run's usage-limit wait: %s", e)

    return on_wait
