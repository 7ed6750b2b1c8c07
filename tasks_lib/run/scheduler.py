"""Ready-first scheduling: start a node only when its dependencies are done, most critical first.

Plain Python so it can be tested with threads instead of Prefect. The caller's ``submit``
starts a node somewhere (a Prefect task run, a thread) and arranges for the node's
``NodeRecord`` to arrive on ``completions``; this loop never holds a slot for a node that
cannot run yet (a Prefect task waiting on ``wait_for`` holds a worker thread).

Graphs run to thousands of nodes, so nothing here rescans them: each node counts its
dependencies not yet done, the ready ones wait in a heap in start order (highest priority,
then id, as ``TaskGraph.ready`` sorts), and a failure walks the graph below it once.

Parallel agents editing the same file end in merge conflicts, so a free slot goes to the
first ready node in that order whose declared files (``Task.declared_files``) overlap no
running node's files: those it declares and, given ``changed``, those its branch has changed
so far (a declaration misses files; a change is certain). When every ready node overlaps,
the first one starts anyway: a slot is never left idle for this. A node that declares
nothing overlaps nothing, so without declared or changed files the order is exactly
priority then id.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from tasks_lib.graph.dag import STARTABLE, TaskGraph
from tasks_lib.graph.taskfile import Status
from tasks_lib.run.records import NodeRecord, NodeStatus

Submit = Callable[[str, list[str]], None]


class ChangedFiles:
    """The files each node's branch changes, as last reported: nodes report from their own
    threads while they run and the scheduler reads at each pick, hence the lock. Call it with
    a task id for that node's files (``schedule``'s ``changed``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, tuple[str, ...]] = {}

    def report(self, task_id: str, files: Collection[str]) -> None:
        """Replace, not add: each report is what the branch changes now."""
        with self._lock:
            self._files[task_id] = tuple(files)

    def __call__(self, task_id: str) -> tuple[str, ...]:
        with self._lock:
            return self._files.get(task_id, ())


class News(Protocol):
    """Where records (and ``Slot`` news) of started nodes arrive, in the order they happen:
    a ``queue.Queue`` filled from the nodes' threads, or a simulated clock."""

    def get(self) -> NodeRecord | Slot: ...


@dataclass(frozen=True)
class Slot:
    """A running node's news that it holds an agent slot again (``held``: a retry or a
    conflict round starts a session) or no longer needs one (its branch waits in the merge
    queue). Sent on ``completions`` like records; a node that gave its slot up still counts
    as running (its files stay busy) until its record arrives."""

    task_id: str
    held: bool


@dataclass
class ScheduleResult:
    records: dict[str, NodeRecord] = field(default_factory=dict)  # in the order they finished
    submitted: list[str] = field(default_factory=list)  # in the order they were started
    peak_running: int = 0


def unknown_only(graph: TaskGraph, only: Collection[str], base: str) -> list[str]:
    """One line per id in ``only`` that is not a task of the graph or held back (none: all
    are)."""
    known = sorted({*graph.tasks, *graph.held_back})
    shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    return [
        f"only {i}: no such task id on {base} (known: {shown})"
        for i in sorted(set(only) - set(known))
    ]


def _not_run(task_id: str, name: str, status: NodeStatus, reason: str) -> NodeRecord:
    now = datetime.now(UTC)
    return NodeRecord(
        task_id=task_id, name=name, status=status, reason=reason, started_at=now, finished_at=now
    )


def overlap(mine: Collection[str], theirs: Collection[str]) -> bool:
    """Whether two tasks' declared paths share a file: the same path, or a folder (ending in
    '/') and a path below it."""
    return any(
        a == b or (a.endswith("/") and b.startswith(a)) or (b.endswith("/") and a.startswith(b))
        for a in mine
        for b in theirs
    )


def schedule(
    graph: TaskGraph,
    *,
    max_parallel: int,
    submit: Submit,
    completions: News,
    only: Collection[str] = (),
    on_record: Callable[[NodeRecord], None] = lambda record: None,
    changed: Callable[[str], Collection[str]] | None = None,
    spent: Callable[[], str | None] = lambda: None,
) -> ScheduleResult:
    """Run the graph's nodes (or ``only`` those) and return every node's record.

    Nodes completed on the base branch are submitted too (they finish at once as already
    done) so every task appears in the run. Blocked and in-progress nodes are not started;
    anything downstream of a node that did not complete is skipped with the reason.
    ``upstream_ids`` given to ``submit`` are the dependencies submitted in this run.
    The graph's held-back tasks get records first (failed for a problem of their own, skipped
    behind one), so the run does not pass for complete; they bypass ``on_record``, which
    follows the graph's nodes (the set-up's warnings already named them).
    ``max_parallel`` bounds the nodes that hold an agent slot: a node waiting in the merge
    queue gives its slot up (a ``Slot`` on ``completions``), so the queue never keeps agents
    idle; one that needs a session again takes it back, over the bound for a while at worst.
    ``changed`` gives the files a running node's branch has changed so far; it is called from
    this loop, at each pick, while nodes report from other threads (``ChangedFiles``).
    ``spent`` says why no node may start any more (the run's budget is spent), asked before
    each start: then every node not started is skipped with that reason, and the running
    ones are waited for.
    """
    selected = set(only) if only else {*graph.tasks, *graph.held_back}
    unknown = sorted(selected - set(graph.tasks) - set(graph.held_back))
    if unknown:
        raise ValueError(f"unknown task id(s) in only: {', '.join(unknown)}")
    result = ScheduleResult()
    for held in graph.held_back.values():
        if held.task_id in selected:
            status = NodeStatus.SKIPPED if held.upstream else NodeStatus.FAILED
            reason = held.reason if held.upstream else f"{held.reason}; fix the task file"
            result.records[held.task_id] = _not_run(held.task_id, held.name, status, reason)
    done: set[str] = {i for i, t in graph.tasks.items() if t.status is Status.COMPLETED}
    running: set[str] = set()
    rank = {task_id: n for n, task_id in enumerate(graph.order)}  # topological: upstream first
    pending = {i for i in graph.order if i in selected}
    swept: set[str] = set()  # every node below these was taken out of pending already

    def skip_below(failed: str, why: str) -> None:
        """Skip the failed node's pending descendants, upstream first, in one pass over
        successors: a node an earlier failure swept has no pending descendant left, so the
        walk stops there and all failures together cost one walk of the graph."""
        below: list[str] = []
        frontier = [failed]
        swept.add(failed)
        while frontier:
            for nxt in graph.dependents(frontier.pop()):
                if nxt not in swept:
                    swept.add(nxt)
                    below.append(nxt)
                    frontier.append(nxt)
        for d in sorted((i for i in below if i in pending), key=rank.__getitem__):
            pending.remove(d)
            skipped = _not_run(d, graph.tasks[d].name, NodeStatus.SKIPPED, why)
            result.records[d] = skipped
            on_record(skipped)

    waiting: dict[str, int] = {}  # pending node -> its dependencies not done yet
    ready: list[tuple[int, str]] = []  # heap of (-priority, id): the next start on top
    declared: dict[str, tuple[str, ...]] = {}  # node -> its declared files, read once
    busy: dict[str, tuple[str, ...]] = {}  # running node that declares files -> them

    def files_of(task_id: str) -> tuple[str, ...]:
        if task_id not in declared:
            declared[task_id] = graph.tasks[task_id].declared_files
        return declared[task_id]

    def running_files() -> Collection[tuple[str, ...]]:
        """The files of each running node that has any: declared, then changed so far (read
        at each pick: nodes report while they run)."""
        if changed is None:
            return busy.values()
        now = ((*busy.get(i, ()), *changed(i)) for i in running)
        return [files for files in now if files]

    def next_start() -> str | None:
        """Pop the first ready node that overlaps no running node's files, else the first
        ready one; the nodes passed over go back on the heap. When no running node declares
        or has changed a file, that is the heap's top (one pop)."""
        passed: list[tuple[int, str]] = []
        chosen: str | None = None
        theirs = running_files()
        while ready:
            entry = heapq.heappop(ready)
            if entry[1] not in pending:  # skipped since it became ready
                continue
            if not theirs or not any(overlap(files_of(entry[1]), f) for f in theirs):
                chosen = entry[1]
                break
            passed.append(entry)
        if chosen is None and passed:
            chosen = passed.pop(0)[1]  # popped in heap order: the first is the most critical
        for entry in passed:
            heapq.heappush(ready, entry)
        return chosen

    def finish(record: NodeRecord) -> None:
        result.records[record.task_id] = record
        on_record(record)
        if record.status is NodeStatus.COMPLETED:
            if record.task_id not in done:
                done.add(record.task_id)
                for nxt in graph.dependents(record.task_id):
                    if nxt in waiting:
                        waiting[nxt] -= 1
                        if waiting[nxt] == 0 and nxt in pending:
                            heapq.heappush(ready, (-graph.priority(nxt), nxt))
            return
        why = f"upstream {record.task_id} {record.status.value}"
        if record.reason:
            why += f": {record.reason}"
        skip_below(record.task_id, why)

    for task_id in graph.order:
        if task_id not in pending:  # not selected, or skipped below an earlier node
            continue
        task = graph.tasks[task_id]
        missing = [d for d in graph.dependencies(task_id) if d not in selected and d not in done]
        reason = ""
        if task.status is Status.BLOCKED:
            notes = (task.section("Notes") or "no reason in its Notes").strip()
            status = NodeStatus.BLOCKED
            reason = f"blocked on the base branch: {notes} (answer it, then set status: pending)"
        elif task.status is not Status.COMPLETED and task.status not in STARTABLE:
            status = NodeStatus.SKIPPED
            reason = (
                f"status is {task.status.value} on the base branch (someone else's work in "
                "progress); set status: pending to run it here"
            )
        elif missing:
            status = NodeStatus.SKIPPED
            listed = ", ".join(f"{d} ({graph.tasks[d].status.value})" for d in missing)
            reason = f"depends on {listed}, not completed and not in this run"
        if reason:
            pending.remove(task_id)
            finish(_not_run(task_id, task.name, status, reason))

    submitted: set[str] = set()
    for task_id in graph.order:
        if task_id in pending:
            waiting[task_id] = sum(d not in done for d in graph.dependencies(task_id))
            if not waiting[task_id]:
                heapq.heappush(ready, (-graph.priority(task_id), task_id))

    def refuse_all(why: str) -> None:
        """Every node not started ends here, skipped for ``why``; one completed on the base
        needed no session, so it stays what it is (already done) rather than skipped."""
        for task_id in sorted(pending, key=rank.__getitem__):
            task = graph.tasks[task_id]
            if task.status is Status.COMPLETED:
                record = _not_run(task_id, task.name, NodeStatus.COMPLETED, "")
                record.already_done = True
                record.notes.append("already completed on the base branch; nothing run")
            else:
                record = _not_run(task_id, task.name, NodeStatus.SKIPPED, why)
            result.records[task_id] = record
            on_record(record)
        pending.clear()
        ready.clear()

    slots: set[str] = set()  # running nodes that hold an agent slot (not merely queued)
    while pending or running:
        why = spent() if ready and len(slots) < max_parallel else None
        if why:
            refuse_all(why)
            if not running:
                break
        while ready and len(slots) < max_parallel:
            start = next_start()
            if start is None:  # only nodes skipped since they became ready were left
                break
            pending.remove(start)
            running.add(start)
            slots.add(start)
            if files_of(start):
                busy[start] = files_of(start)
            result.submitted.append(start)
            submitted.add(start)
            submit(start, [d for d in graph.dependencies(start) if d in submitted])
        result.peak_running = max(result.peak_running, len(slots))
        if not running:
            waits = ", ".join(sorted(pending, key=rank.__getitem__))
            raise RuntimeError(f"nothing can start but {waits} wait (a bug)")
        item = completions.get()
        if item.task_id not in running:
            raise RuntimeError(f"news of {item.task_id}, which is not running")
        if isinstance(item, Slot):
            (slots.add if item.held else slots.discard)(item.task_id)
            continue
        running.remove(item.task_id)
        slots.discard(item.task_id)
        busy.pop(item.task_id, None)
        finish(item)
    return result
