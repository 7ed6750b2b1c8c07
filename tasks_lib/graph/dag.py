"""The task graph: one validation pass that finds every problem, then the queries a run asks.

Edges point from a prerequisite to its dependent (``depends_on: [a]`` in b's file gives
``a -> b``), so topological order is execution order. Costs come from ``Task.cost`` (scope
cost, ``DEFAULT_COST`` without a scope) unless ``TaskGraph.with_costs`` gives others (a run's
durations learned from earlier runs, ``tasks_lib.run.durations``).

A real tasks folder is rarely all valid at once, so ``load_graph`` is lenient: each problem
names the tasks it concerns, and only those and their descendants are held back; the graph is
the rest. Refusing the whole graph instead (``strict``) is the caller's choice.

The queries run on plain dicts and the stdlib's ``graphlib``: networkx takes a fifth of
``tgflow plan``'s time to import, so it is imported only to spell out cycles (a folder that
has some) and for ``TaskGraph.graph``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import heapq
import re
import unicodedata
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import NamedTuple

from tasks_lib.errors import UsageError
from tasks_lib.graph.plan import Plan, make_plan
from tasks_lib.graph.taskfile import Problem, Status, Task, load_tasks

# Statuses a run may start: pending, and failed (a failed attempt is retryable; its reason is
# in the task's Notes). blocked waits for a person to answer the Notes; in-progress belongs
# to whoever set it (a crashed run's leftovers are the pipeline's to reconcile).
STARTABLE = frozenset({Status.PENDING, Status.FAILED})

SLUG_MAX = 80
MAX_CYCLES_REPORTED = 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def branch_slug(task_id: str) -> str:
    """A git-branch- and directory-safe name for a task id ("" when none can be made).

    ``/`` becomes ``--`` so ``graph`` and ``graph/construction`` are siblings, not a ref
    and a ref "directory" (git cannot hold both). Other characters outside
    ``[A-Za-z0-9._-]`` become ``-``; accents are dropped first (``tâche`` -> ``tache``).
    Long ids are cut and suffixed with a hash of the full id so they stay distinct.
    Distinct ids can still meet (``a/b`` and ``a--b``): validation reports that.
    """
    text = unicodedata.normalize("NFKD", task_id).encode("ascii", "ignore").decode()
    slug = _UNSAFE.sub("-", text.replace("/", "--"))
    slug = re.sub(r"\.{2,}", ".", slug)
    slug = slug.lstrip("-.")
    while slug.endswith((".lock", ".")):
        slug = slug.removesuffix(".lock").rstrip(".")
    if len(slug) > SLUG_MAX:
        digest = hashlib.sha1(task_id.encode()).hexdigest()[:8]
        slug = f"{slug[: SLUG_MAX - 9].rstrip('.')}-{digest}"
    return slug


class GraphError(UsageError):
    """Raised by ``TaskGraph`` for tasks that do not form a valid graph: the files need fixing."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class HeldBack:
    """A task a lenient run leaves out of its graph, and why: its own file's problems, or
    (``upstream`` set) a held-back task it depends on, whose reason it repeats."""

    task_id: str
    name: str
    reason: str
    upstream: str | None = None


def find_problems(tasks: Sequence[Task], unparsed: Collection[str] = ()) -> list[Problem]:
    """Every reason these tasks cannot be run as a graph, in file order then kind; each names
    the task ids it concerns.

    ``unparsed`` are the ids of files that did not load: depending on one is not an unknown
    dependency (that file's problem already holds back its dependents). A completed task's
    dependency on an id no file has is no problem either: it was deleted after the work was
    done (``TaskGraph`` warns).
    """
    problems: list[Problem] = []
    by_id: dict[str, list[Task]] = defaultdict(list)
    for t in tasks:
        by_id[t.id].append(t)

    for task_id, same in by_id.items():
        for dup in same[1:]:
            others = ", ".join(str(o.path) for o in same if o is not dup)
            problems.append(
                Problem(
                    dup.path,
                    f"duplicate id '{task_id}' (also in {others}); ids must be unique",
                    (task_id,),
                )
            )

    by_slug: dict[str, list[str]] = defaultdict(list)
    for task_id, same in by_id.items():
        slug = branch_slug(task_id)
        if not slug:
            problems.append(
                Problem(
                    same[0].path,
                    f"id '{task_id}' cannot be made a git branch name; "
                    "use letters, digits, '.', '_', '-' or '/'",
                    (task_id,),
                )
            )
        else:
            by_slug[slug.lower()].append(task_id)
    for ids in by_slug.values():
        for other in ids[1:]:
            problems.append(
                Problem(
                    by_id[other][0].path,
                    f"id '{other}' and id '{ids[0]}' ({by_id[ids[0]][0].path}) give the same "
                    f"branch name '{branch_slug(other)}' (case and '/' vs '--' are not told "
                    "apart); rename one",
                    (other, ids[0]),
                )
            )

    known = list(by_id)
    for t in tasks:
        if t.status is Status.COMPLETED:
            continue
        for dep in t.depends_on:
            if dep not in by_id and dep not in unparsed:
                near = difflib.get_close_matches(dep, known, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                problems.append(
                    Problem(
                        t.path,
                        f"depends on unknown id '{dep}' (no valid task file has this id){hint}",
                        (t.id,),
                    )
                )

    problems.extend(_cycle_problems(tasks, by_id))
    return problems


def _descendants(edges: Mapping[str, Iterable[str]], start: str) -> set[str]:
    """Every node reachable from ``start`` along ``edges``; never ``start`` itself, even on a
    cycle through it (as networkx's ``descendants``: a held-back task is not its own root)."""
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        for nxt in edges.get(frontier.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return seen - {start}


def _cycle_problems(tasks: Sequence[Task], by_id: Mapping[str, list[Task]]) -> list[Problem]:
    """One problem per elementary cycle (capped), spelled along depends_on.

    graphlib only tells that there is a cycle; networkx, imported then, finds them all.
    """
    edges = [(t.id, d) for t in tasks for d in t.depends_on if d in by_id]
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for task_id, dep in edges:  # every file's edges: a duplicate id's count too
        sorter.add(task_id, dep)
    try:
        sorter.prepare()
    except CycleError:
        pass
    else:
        return []
    import networkx as nx

    needs = nx.DiGraph()  # edge a -> b: a depends on b, the direction users write
    needs.add_edges_from(edges)
    problems: list[Problem] = []
    loops = [c for c in nx.strongly_connected_components(needs) if len(c) > 1]
    loops += [{n} for n in nx.nodes_with_selfloops(needs)]
    for component in sorted(loops, key=min):
        for count, cycle in enumerate(nx.simple_cycles(needs.subgraph(component))):
            start = cycle.index(min(cycle))
            cycle = cycle[start:] + cycle[:start]
            if count == MAX_CYCLES_REPORTED:
                problems.append(
                    Problem(
                        by_id[cycle[0]][0].path,
                        f"more cycles among {', '.join(sorted(component))} not listed",
                        tuple(sorted(component)),
                    )
                )
                break
            spelled = " -> ".join([*cycle, cycle[0]])
            problems.append(
                Problem(
                    by_id[cycle[0]][0].path,
                    f"dependency cycle: {spelled} (each depends on the next); "
                    "remove one of these depends_on entries",
                    tuple(cycle),
                )
            )
    return problems


def _consistency_warnings(tasks: Iterable[Task], by_id: Mapping[str, Task]) -> list[Problem]:
    """Completed tasks whose dependencies are not, or are gone: legal, but probably stale."""
    warnings = []
    for t in tasks:
        if t.status is Status.COMPLETED:
            for gone in [d for d in t.depends_on if d not in by_id]:
                warnings.append(
                    Problem(
                        t.path,
                        f"completed, but depends on '{gone}', which no task file has (deleted "
                        "after the work was done?); remove it from depends_on",
                    )
                )
            known = [d for d in t.depends_on if d in by_id]
            open_deps = [d for d in known if by_id[d].status is not Status.COMPLETED]
            if open_deps:
                listed = ", ".join(f"'{d}' ({by_id[d].status.value})" for d in open_deps)
                warnings.append(
                    Problem(t.path, f"completed, but its dependencies are not: {listed}")
                )
    return warnings


class TaskGraph:
    """A validated DAG of tasks. Build it with ``load_graph`` or ``TaskGraph(tasks)``.

    ``held_back`` are the folder's tasks left out because of problems (``load_graph``): not
    part of the graph, but part of the run, which records them as not done.
    """

    def __init__(
        self, tasks: Sequence[Task], held_back: Mapping[str, HeldBack] | None = None
    ) -> None:
        problems = find_problems(tasks)
        if problems:
            raise GraphError(problems)
        self.tasks: dict[str, Task] = {t.id: t for t in tasks}
        self.held_back: dict[str, HeldBack] = dict(held_back or {})
        # Edges both ways, each list sorted: dependencies and dependents are asked in a run.
        self._needs: dict[str, list[str]] = {
            i: sorted({d for d in t.depends_on if d in self.tasks}) for i, t in self.tasks.items()
        }
        self._feeds: dict[str, list[str]] = {i: [] for i in self.tasks}
        for i, deps in self._needs.items():
            for d in deps:
                self._feeds[d].append(i)
        for dependents in self._feeds.values():
            dependents.sort()
        self.order: list[str] = self._lexicographic_order()
        self.warnings = _consistency_warnings(tasks, self.tasks)
        self._costs: dict[str, int] = {i: t.cost for i, t in self.tasks.items()}
        self._priority = self._longest_to_sink(self.order)

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return (self.tasks[i] for i in self.order)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.tasks

    def statuses(self, overrides: Mapping[str, Status] | None = None) -> dict[str, Status]:
        """Each task's status: its file's, replaced by ``overrides`` (a run's live view)."""
        return {i: t.status for i, t in self.tasks.items()} | dict(overrides or {})

    def dependencies(self, task_id: str) -> list[str]:
        return list(self._needs[task_id])

    def dependents(self, task_id: str) -> list[str]:
        return list(self._feeds[task_id])

    def descendants(self, task_id: str) -> set[str]:
        return _descendants(self._feeds, task_id)

    def cost(self, task_id: str) -> int:
        """The task's weight in priorities and the critical path: its scope cost, or what
        ``with_costs`` gave."""
        return self._costs[task_id]

    def with_costs(self, costs: Mapping[str, int]) -> TaskGraph:
        """The same graph weighed by ``costs`` (one per task, all on one scale), priorities
        computed again once; this graph is left as it was.

        A copy rather than a new ``TaskGraph``: validation is most of building one, and the
        tasks have not changed.
        """
        missing = sorted(set(self.tasks) - set(costs))
        if missing:
            raise ValueError(f"no cost for task(s) {', '.join(missing)}")
        weighed = copy.copy(self)
        weighed._costs = {i: costs[i] for i in self.tasks}
        weighed._priority = weighed._longest_to_sink(self.order)
        return weighed

    def priority(self, task_id: str) -> int:
        """Heaviest cost path from this task to a sink, its own cost included.

        Computed once over the whole graph, so a task's priority never shifts while a run
        progresses; the scheduler starts the highest first.
        """
        return self._priority[task_id]

    def remaining(self, statuses: Mapping[str, Status] | None = None) -> list[str]:
        """Tasks not completed, in topological order."""
        now = self.statuses(statuses)
        return [i for i in self.order if now[i] is not Status.COMPLETED]

    def ready(self, statuses: Mapping[str, Status] | None = None) -> list[str]:
        """Startable (pending or failed) tasks whose dependencies are all completed.

        Highest priority first, then by id.
        """
        now = self.statuses(statuses)
        found = [
            i
            for i in self.order
            if now[i] in STARTABLE and all(now[d] is Status.COMPLETED for d in self._needs[i])
        ]
        return sorted(found, key=lambda i: (-self._priority[i], i))

    def generations(self, statuses: Mapping[str, Status] | None = None) -> list[list[str]]:
        """Layers of the remaining work: every task's remaining deps are in earlier layers."""
        left = set(self.remaining(statuses))
        sorter = TopologicalSorter({i: [d for d in self._needs[i] if d in left] for i in left})
        sorter.prepare()
        layers = []
        while sorter.is_active():  # all of one layer is done before the next is asked for
            layer = sorted(sorter.get_ready())
            sorter.done(*layer)
            layers.append(layer)
        return layers

    def critical_path(
        self, statuses: Mapping[str, Status] | None = None, *, include_completed: bool = False
    ) -> tuple[list[str], int]:
        """The heaviest chain of remaining work (of all work with ``include_completed``)."""
        nodes = self.order if include_completed else self.remaining(statuses)
        weight = self._longest_to_sink(nodes)
        if not weight:
            return [], 0
        current = min(weight, key=lambda i: (-weight[i], i))
        path = [current]
        while True:
            nxt = [s for s in self._feeds[current] if s in weight]
            if not nxt:
                return path, weight[path[0]]
            current = min(nxt, key=lambda i: (-weight[i], i))
            path.append(current)

    def needs_decomposition(self, statuses: Mapping[str, Status] | None = None) -> list[str]:
        """Remaining ids the format says to split (risk high/critical or scope broad/system)."""
        return [i for i in self.remaining(statuses) if self.tasks[i].needs_decomposition]

    def plan(self, statuses: Mapping[str, Status] | None = None) -> Plan:
        return make_plan(self, statuses)

    def _longest_to_sink(self, nodes: Sequence[str]) -> dict[str, int]:
        """One reverse-topological pass over ``nodes`` (given in topological order)."""
        inside = set(nodes)
        best: dict[str, int] = {}
        for n in reversed(nodes):
            tail = [best[s] for s in self._feeds[n] if s in inside]
            best[n] = self._costs[n] + max(tail, default=0)
        return best

    def _lexicographic_order(self) -> list[str]:
        """The topological order that always takes the smallest ready id next (networkx's
        ``lexicographical_topological_sort``): one order for one graph, whatever the files'."""
        sorter = TopologicalSorter(self._needs)
        sorter.prepare()
        ready = list(sorter.get_ready())
        heapq.heapify(ready)
        order = []
        while ready:
            task_id = heapq.heappop(ready)
            order.append(task_id)
            sorter.done(task_id)
            for nxt in sorter.get_ready():
                heapq.heappush(ready, nxt)
        return order


class GraphLoad(NamedTuple):
    """``load_graph``'s answer: the graph of the tasks no problem concerns (the others in its
    ``held_back``), every problem, and the warnings."""

    graph: TaskGraph
    problems: list[Problem]
    warnings: list[Problem]

    def refused(self, strict: bool) -> bool:
        """Whether a plan or run refuses the whole graph: for any problem with ``strict``,
        otherwise only when the problems hold back every task (nothing would be done)."""
        return bool(self.problems) and (strict or not self.graph.tasks)


def load_graph(tasks_dir: Path, *, shown_from: Path | None = None) -> GraphLoad:
    """Load and validate a tasks folder, collecting every problem instead of stopping at one.

    Held-back reasons name files relative to ``shown_from`` (the repository; default: the
    folder holding ``tasks_dir``), as a person finds them.
    """
    tasks_dir = Path(tasks_dir)
    loaded = load_tasks(tasks_dir)
    unparsed = {i for p in loaded.problems for i in p.task_ids}
    problems = [*loaded.problems, *find_problems(loaded.tasks, unparsed)]
    held = _held_back(loaded.tasks, problems, shown_from or tasks_dir.parent)
    graph = TaskGraph([t for t in loaded.tasks if t.id not in held], held)
    return GraphLoad(graph, problems, [*loaded.warnings, *graph.warnings])


def _held_back(
    tasks: Sequence[Task], problems: Sequence[Problem], shown_from: Path
) -> dict[str, HeldBack]:
    """The tasks the problems concern, then every task depending on one of them (by id)."""
    own: dict[str, list[str]] = defaultdict(list)
    for p in problems:
        where = p.path.relative_to(shown_from) if p.path.is_relative_to(shown_from) else p.path
        for task_id in p.task_ids:
            own[task_id].append(f"{where}: {p.message}")
    names = {t.id: t.name for t in tasks}
    held = {i: HeldBack(i, names.get(i, ""), "; ".join(own[i])) for i in sorted(own)}
    feeds: dict[str, list[str]] = defaultdict(list)  # a -> b: b depends on a, as in TaskGraph
    needs: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        for d in t.depends_on:
            feeds[d].append(t.id)
            needs[t.id].append(d)
    below = set().union(*(_descendants(feeds, i) for i in own)) - set(own)
    for task_id in sorted(below):
        root = min(set(own) & _descendants(needs, task_id))
        why = f"upstream {root} held back: {held[root].reason}"
        held[task_id] = HeldBack(task_id, names[task_id], why, root)
    return dict(sorted(held.items()))
