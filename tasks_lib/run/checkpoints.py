"""While an agent session runs, its work goes to the origin (``git/checkpoint.py``): each new
agent commit within ``CHECK_S`` seconds, its uncommitted files every ``checkpoint_interval_s``.

A thread beside the session, because the session blocks until the agent is done and a
machine may die before then. Only in pushing runs: the origin is the one place another
machine (or this one with its disk gone) can take the work back from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tasks_lib.git import WorkspaceError
from tasks_lib.git.checkpoint import checkout_head, checkpoint
from tasks_lib.run.node_state import Node

CHECK_S = 2.0  # how often the checkout's HEAD is looked at (one file read)

log = logging.getLogger(__name__)


@contextmanager
def checkpointing(node: Node) -> Iterator[None]:
    """Checkpoint the node's checkout until the block ends; ``node.checkpoints`` counts the
    pushes."""
    if not node.settings.push:
        yield
        return
    wt, stop = node.wt(), threading.Event()

    def watch() -> None:
        last, files_at = checkout_head(wt), time.monotonic()
        while not stop.wait(CHECK_S):
            head = checkout_head(wt)
            due = time.monotonic() - files_at >= node.settings.checkpoint_interval_s
            if head is None or (head == last and not due):
                continue
            try:
                pushed = checkpoint(node.ws, node.task.id, wt, with_files=due)
            except (WorkspaceError, OSError) as e:  # the next round tries again
                log.warning("checkpoint of %s failed: %s", node.task.id, e)
                pushed = None
            if pushed is not None:
                node.checkpoints += 1
                last = head
            if due:
                files_at = time.monotonic()

    thread = threading.Thread(target=watch, name=f"checkpoint-{node.task.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
