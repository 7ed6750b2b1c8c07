"""When the task branch reaches the origin on its own: before anything that takes time, and
only then. With nothing between the agent's end and the merge (no validation, no approval,
the merge lock free) the push of base carries the work; a node that must wait for the merge
lock, or has a validation to run, pushes its branch alone first, as before."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from helpers.gitrepos import branches, make_origin, show, task_md
from helpers.workspaces import open_ws

from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.records import NodeRecord, NodeStatus


def write(path: str, content: str) -> dict:
    return {"write": {"path": path, "content": content}}


def _origin_logging_updates(tmp_path: Path, task_id: str) -> tuple[Path, Path]:
    """An origin whose ``update`` hook writes down each ref it is asked to move, in order."""
    origin = make_origin(
        tmp_path, {f"tasks/{task_id}.md": task_md(task_id, steps=[write(f"{task_id}.txt", "x\n")])}
    )
    updates = tmp_path / "updates.log"
    hook = origin / "hooks" / "update"
    hook.write_text(f'#!/bin/sh\necho "$1" >> {updates}\n')
    hook.chmod(0o755)
    return origin, updates


def _run(ws: Workspace, task_id: str, settings: NodeSettings) -> NodeRecord:
    task = ws.find_task(task_id)
    assert task is not None
    return run_node(ws, task, ScriptedAgent(), settings)


def test_with_nothing_to_wait_for_the_branch_goes_to_the_origin_only_in_the_push_of_base(
    tmp_path: Path,
) -> None:
    origin, updates = _origin_logging_updates(tmp_path, "a")
    ws = open_ws(origin, tmp_path / "ws")

    record = _run(ws, "a", NodeSettings())

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "a.txt") == "x"
    assert updates.read_text().split() == ["refs/heads/main"]  # one push, base only
    assert branches(origin) == []  # no task branch left
    assert branches(ws.integration) == [] and record.cleanup["branch"]  # gone with that push


def test_a_node_that_must_wait_for_the_merge_lock_backs_its_branch_up_first(
    tmp_path: Path,
) -> None:
    origin, updates = _origin_logging_updates(tmp_path, "b")
    ws = open_ws(origin, tmp_path / "ws")
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # another node merging, or resolving a conflict under it
        with ws.merge_lock:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(10)
    records: list[NodeRecord] = []
    node = threading.Thread(target=lambda: records.append(_run(ws, "b", NodeSettings())))
    node.start()
    deadline = time.monotonic() + 60
    while not (updates.exists() and updates.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    backed_up_while_waiting = updates.read_text().split() if updates.exists() else []
    release.set()
    holder.join(10)
    node.join(60)

    assert backed_up_while_waiting == ["refs/heads/tgflow/b"]  # its work is safe as it waits
    assert records and records[0].status == NodeStatus.COMPLETED, records
    assert show(origin, "b.txt") == "x"
    # then base, the backup deleted in the same push
    assert updates.read_text().split() == [
        "refs/heads/tgflow/b",
        "refs/heads/main",
        "refs/heads/tgflow/b",
    ]
    assert branches(origin) == []  # no task branch left


def test_a_branch_with_a_validation_to_run_is_backed_up_before_it(tmp_path: Path) -> None:
    origin, updates = _origin_logging_updates(tmp_path, "c")
    ws = open_ws(origin, tmp_path / "ws")

    record = _run(ws, "c", NodeSettings(validate_commands=["test -f c.txt"]))

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert updates.read_text().split()[0] == "refs/heads/tgflow/c"
