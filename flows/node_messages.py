"""Talking to one node of a running run, and cancelling one node, from the Prefect API or UI.

A person addresses a node through the RUN's flow run, the one flow run every node belongs to
whatever the mode (a node off a pool is only a task run, which takes no input): a flow-run
input whose key starts with ``KEY_PREFIX`` and whose value is a ``NodeMessage`` naming the
task. One listener per run reads them (``listening``) and hands each to its node's line
(``Switchboard``): a message goes into the node's agent session when its backend takes
messages (``Agent.takes_messages``: opencode-server), a cancel sets that node's own cancel
event (which the run's cancel sets too), so only that node ends ``cancelled``, its branch
kept, and the scheduler skips its descendants while the rest of the graph goes on. Every
message gets a reply: logged in the run's flow run and stored as an input beside it
(``REPLY_PREFIX``), so the sender reads whether it arrived and, if not, why.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID, uuid4

from prefect.input import RunInput, create_flow_run_input, filter_flow_run_input
from pydantic import ValidationError

from tasks_lib.agents.base import Inbox

KEY_PREFIX = "tgflow-node"
REPLY_PREFIX = "tgflow-reply"
POLL_S = 1.0


class NodeMessage(RunInput):
    """What a person sends the run's flow run: text for a node's agent, or a cancel."""

    task_id: str
    text: str = ""
    cancel: bool = False


class Reply(RunInput):
    """What tgflow answers, beside the message (key ``REPLY_PREFIX``-…)."""

    task_id: str
    message_key: str
    delivered: bool
    said: str


@dataclass
class Line:
    """One node's end: its cancel event, its agent's inbox, and what it is doing now."""

    cancel: threading.Event = field(default_factory=threading.Event)
    inbox: Inbox = field(default_factory=Inbox)
    state: Literal["waiting", "running", "ended"] = "waiting"
    backend: str = ""  # the agent backend of the running attempt
    takes_messages: bool = False
    pool: str | None = None
    ended: str = ""  # how its last attempt ended


class Switchboard:
    """The nodes' lines of one run, shared by the node threads and the listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: dict[str, Line] = {}
        self._all_cancelled = False

    def line(self, task_id: str) -> Line:
        with self._lock:
            line = self._lines.setdefault(task_id, Line())
            if self._all_cancelled:  # a node that starts after the run was cancelled
                line.cancel.set()
            return line

    @contextmanager
    def connected(
        self, task_id: str, backend: str, takes_messages: bool, pool: str | None
    ) -> Iterator[Line]:
        """The line while one attempt of the node runs; the caller says in ``ended`` how it
        ended."""
        line = self.line(task_id)
        with self._lock:
            line.state, line.backend, line.pool = "running", backend, pool
            line.takes_messages = takes_messages
        try:
            yield line
        finally:
            with self._lock:
                line.state = "ended"

    def cancel_all(self) -> None:
        """The run is cancelled: every node with it."""
        with self._lock:
            self._all_cancelled = True
            lines = list(self._lines.values())
        for line in lines:
            line.cancel.set()

    def deliver(self, message: NodeMessage, known: set[str]) -> tuple[bool, str]:
        """Hand ``message`` to its node: (delivered, what to say back). ``known``: the run's
        task ids."""
        task_id = message.task_id
        if task_id not in known:
            return (
                False,
                f"no node {task_id!r} in this run; the nodes are: {', '.join(sorted(known))}",
            )
        line = self.line(task_id)
        with self._lock:
            state, ended, pool = line.state, line.ended, line.pool
            backend, takes = line.backend, line.takes_messages
        if state == "ended":
            return False, f"{task_id} has ended ({ended or 'no record'}); nothing listens"
        if message.cancel:
            if line.cancel.is_set():
                return False, f"{task_id} is already cancelled"
            line.cancel.set()
            where = f" (its node run on pool {pool})" if pool else ""
            return True, (
                f"cancelling {task_id}{where}: it ends cancelled, its work kept on its branch; "
                "the nodes that depend on it are skipped"
            )
        if not message.text.strip():
            return False, f"an empty message to {task_id}: say something, or send cancel: true"
        if state == "waiting":
            return False, f"{task_id} has not started yet; send it again once it runs"
        if pool is not None:
            return False, (
                f"{task_id} runs on node pool {pool}: messages reach only nodes the run's own "
                "process runs (docs/talking-to-nodes.md)"
            )
        if not takes:
            return False, (
                f"{task_id}'s agent backend {backend} cannot take messages while it works; "
                'only opencode-server can (set agent = "opencode-server" for it)'
            )
        if not line.inbox.post(message.text):
            return False, (
                f"{task_id} is not in an agent session now (its branch is being checked or "
                "merged, or it is between sessions); send it again while its agent works"
            )
        return True, f"sent to {task_id}'s agent session"


@contextmanager
def listening(
    board: Switchboard,
    flow_run_id: UUID,
    known: set[str],
    run_cancel: threading.Event,
    logger: logging.LoggerAdapter[logging.Logger] | logging.Logger,
) -> Iterator[None]:
    """Read the run's node messages while the block runs; the listener ends with it, and a
    run cancelled by then cancels every node's line."""
    stop = threading.Event()
    context = contextvars.copy_context()  # Prefect's settings (its API URL) live in it
    thread = threading.Thread(
        target=context.run,
        args=(_listen, board, flow_run_id, known, run_cancel, stop, logger),
        name="tgflow-node-messages",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        if run_cancel.is_set():
            board.cancel_all()
        stop.set()
        thread.join()


def _listen(
    board: Switchboard,
    flow_run_id: UUID,
    known: set[str],
    run_cancel: threading.Event,
    stop: threading.Event,
    logger: logging.LoggerAdapter[logging.Logger] | logging.Logger,
) -> None:
    seen: set[str] = set()
    failing = False
    while not stop.wait(POLL_S):
        if run_cancel.is_set():
            board.cancel_all()
        try:
            inputs = filter_flow_run_input(
                key_prefix=KEY_PREFIX, limit=50, exclude_keys=seen, flow_run_id=flow_run_id
            )
        except Exception as e:  # the server away a moment: the next poll tries again
            if not failing:
                logger.warning("cannot read the nodes' messages from the Prefect API: %s", e)
            failing = True
            continue
        failing = False
        assert isinstance(inputs, list)  # called from sync code
        for item in inputs:
            seen.add(item.key)
            try:
                message = NodeMessage.model_validate_json(item.value)
            except ValidationError as e:
                first = e.errors()[0]
                delivered, said = (
                    False,
                    (
                        f"input {item.key} is not a node message ({first['loc']}: {first['msg']}); "
                        'send {"task_id": "<task id>", "text": "..."} or {"task_id": ..., '
                        '"cancel": true}'
                    ),
                )
                task_id = ""
            else:
                task_id = message.task_id
                delivered, said = board.deliver(message, known)
            (logger.info if delivered else logger.warning)("message to %s: %s", task_id, said)
            reply = Reply(task_id=task_id, message_key=item.key, delivered=delivered, said=said)
            try:
                create_flow_run_input(
                    key=f"{REPLY_PREFIX}-{uuid4()}",
                    value=reply.model_dump(mode="json"),
                    flow_run_id=flow_run_id,
                )
            except Exception as e:  # said in the log already
                logger.warning("could not store the reply to %s: %s", item.key, e)
