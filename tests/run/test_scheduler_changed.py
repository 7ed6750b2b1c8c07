"""What a running node has already changed keeps a free slot away from tasks that declare those
files, as its declared files do; a slot still never stays idle for it.

Each node runs in a thread and reports its branch's changes through the callback a node gets
(``run_node``'s ``on_changed``), while the real ``schedule()`` reads them at pick time. Nodes
wait on events, not on sleeps, so which node is running at each pick is fixed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from tasks_lib.graph.dag import TaskGraph
from tasks_lib.graph.taskfile import Scope, Task
from tasks_lib.run.records import NodeRecord, NodeStatus
from tasks_lib.run.scheduler import ChangedFiles, ScheduleResult, schedule

WAIT_S = 30.0  # only a scheduler that never starts the node to release would reach it

OnChanged = Callable[[list[str]], None]
Script = Callable[[OnChanged], None]


def task(task_id: str, scope: Scope, *files: str, after: str = "") -> Task:
    return Task(
        id=task_id,
        name=task_id.upper(),
        scope=scope,
        files=files,
        depends_on=(after,) if after else (),
        path=Path(f"{task_id}.md"),
    )


def wait(event: threading.Event) -> None:
    assert event.wait(WAIT_S), "the node that sets this event was never started"


class Nodes:
    """submit() runs the node's script in a thread with its ``on_changed`` callback, then
    reports the node completed; each start notes which nodes were running then."""

    def __init__(self, scripts: dict[str, Script]) -> None:
        self.scripts = scripts
        self.changes = ChangedFiles()
        self.completions: queue.Queue[NodeRecord] = queue.Queue()
        self.running: set[str] = set()
        self.running_at_start: dict[str, set[str]] = {}
        self.lock = threading.Lock()

    def submit(self, task_id: str, upstream: list[str]) -> None:
        with self.lock:
            self.running_at_start[task_id] = set(self.running)
            self.running.add(task_id)
        threading.Thread(target=self._run, args=(task_id,), daemon=True).start()

    def _run(self, task_id: str) -> None:
        try:
            self.scripts.get(task_id, lambda on_changed: None)(
                lambda files: self.changes.report(task_id, files)
            )
        finally:
            with self.lock:
                self.running.remove(task_id)
            self.completions.put(NodeRecord(task_id=task_id, status=NodeStatus.COMPLETED))

    def run(self, tasks: list[Task], slots: int) -> ScheduleResult:
        result = schedule(
            TaskGraph(tasks),
            max_parallel=slots,
            submit=self.submit,
            completions=self.completions,
            changed=self.changes,
        )
        assert all(r.status is NodeStatus.COMPLETED for r in result.records.values())
        return result


def test_a_file_a_running_node_changed_holds_back_the_task_that_declares_it() -> None:
    """a declares nothing but changes src/a.py; when x ends, b (more critical) declares that
    file and c does not: the free slot goes to c, and b starts once it is the only one left."""
    reported, release_a = threading.Event(), threading.Event()

    def a(on_changed: OnChanged) -> None:
        on_changed(["src/a.py"])
        reported.set()
        wait(release_a)

    nodes = Nodes({"a": a, "x": lambda _: wait(reported), "b": lambda _: release_a.set()})
    result = nodes.run(
        [
            task("a", Scope.SYSTEM),
            task("x", Scope.SINGLE),
            task("b", Scope.BROAD, "src/a.py", after="x"),
            task("c", Scope.SINGLE, "src/c.py", after="x"),
        ],
        slots=2,
    )
    assert result.submitted[2:] == ["c", "b"]
    assert "a" in nodes.running_at_start["c"]


def test_when_every_ready_task_touches_a_changed_file_the_most_critical_starts_anyway() -> None:
    """Both ready tasks touch what a changed (b the file, d its folder): b, the more critical,
    takes the free slot while a still runs."""
    reported, release_a = threading.Event(), threading.Event()

    def a(on_changed: OnChanged) -> None:
        on_changed(["src/a.py"])
        reported.set()
        wait(release_a)

    nodes = Nodes({"a": a, "x": lambda _: wait(reported), "d": lambda _: release_a.set()})
    result = nodes.run(
        [
            task("a", Scope.SYSTEM),
            task("x", Scope.SINGLE),
            task("b", Scope.BROAD, "src/a.py", after="x"),
            task("d", Scope.SINGLE, "src/", after="x"),
        ],
        slots=2,
    )
    assert result.submitted[2:] == ["b", "d"]
    assert "a" in nodes.running_at_start["b"]  # the slot did not wait for a to end
    assert result.peak_running == 2


def test_changed_and_declared_files_both_count() -> None:
    """a declares src/x.py and changes src/a.py: b and c each touch one of them, so the free
    slot goes to d, the least critical."""
    reported, release_a = threading.Event(), threading.Event()

    def a(on_changed: OnChanged) -> None:
        on_changed(["src/a.py"])
        reported.set()
        wait(release_a)

    nodes = Nodes({"a": a, "x": lambda _: wait(reported), "d": lambda _: release_a.set()})
    result = nodes.run(
        [
            task("a", Scope.SYSTEM, "src/x.py"),
            task("x", Scope.SINGLE),
            task("b", Scope.SYSTEM, "src/x.py", after="x"),
            task("c", Scope.BROAD, "src/a.py", after="x"),
            task("d", Scope.SINGLE, "docs/d.md", after="x"),
        ],
        slots=2,
    )
    assert result.submitted[2] == "d"


def test_a_later_report_replaces_the_earlier_one() -> None:
    """Each report is what the branch changes now: a's branch no longer touches src/a.py
    after its second report, so b may start beside it while c, more critical but touching
    src/b.py, waits."""
    reported, release_a = threading.Event(), threading.Event()

    def a(on_changed: OnChanged) -> None:
        on_changed(["src/a.py"])
        on_changed(["src/b.py"])
        reported.set()
        wait(release_a)

    nodes = Nodes({"a": a, "x": lambda _: wait(reported), "b": lambda _: release_a.set()})
    result = nodes.run(
        [
            task("a", Scope.SYSTEM),
            task("x", Scope.SINGLE),
            task("b", Scope.SINGLE, "src/a.py", after="x"),
            task("c", Scope.BROAD, "src/b.py", after="x"),
        ],
        slots=2,
    )
    assert result.submitted[2:] == ["b", "c"]


def test_what_a_finished_node_changed_holds_nothing_back() -> None:
    """a changed src/a.py and ended (its work is merged): b, which declares that file, is the
    most critical ready task and takes the slot beside y."""
    release_y = threading.Event()
    nodes = Nodes(
        {
            "a": lambda on_changed: on_changed(["src/a.py"]),
            "y": lambda _: wait(release_y),
            "b": lambda _: release_y.set(),
        }
    )
    result = nodes.run(
        [
            task("a", Scope.SYSTEM),
            task("y", Scope.SINGLE),
            task("b", Scope.BROAD, "src/a.py", after="a"),
            task("c", Scope.SINGLE, "src/c.py", after="a"),
        ],
        slots=2,
    )
    assert result.submitted[2:] == ["b", "c"]
    assert "y" in nodes.running_at_start["b"]
