"""The task graph: one validation pass that finds every problem, then the queries a run asks.

Edges point from a prerequisite to its dependent (``depends_on: [a]`` in b's file gives
``a -> b``), so topological order is execution order. Costs come from ``Task.cost`` (scope
cost, ``DEFAULT_COST`` without a scope).

A real tasks folder is rarely all valid at once, so ``load_graph`` is lenient: each problem
names the tasks it concerns, and only those and their descendants are held back; the graph is
the rest. Refusing the whole graph instead (``strict``) is the caller's choice.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import networkx as nx

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


def _cycle_problems(tasks: Sequence[Task], by_id: Mapping[str, list[Task]]) -> list[Problem]:
    """One problem per elementary cycle (capped), spelled along depends_on."""
    needs = nx.DiGraph()  # edge a -> b: a depends on b, the direction users write
    needs.add_edges_from((t.id, d) for t in tasks for d in t.depends_on if d in by_id)
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
        self.graph = nx.DiGraph()
        self.graph.add_nodes_from(self.tasks)
        self.graph.add_edges_from((d, t.id) for t in tasks for d in t.depends_on if d in self.tasks)
        self.order: list[str] = list(nx.lexicographical_topological_sort(self.graph))
        self.warnings = _consistency_warnings(tasks, self.tasks)
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
        return sorted(self.graph.predecessors(task_id))

    def dependents(self, task_id: str) -> list[str]:
        return sorted(self.graph.successors(task_id))

    def descendants(self, task_id: str) -> set[str]:
        return nx.descendants(self.graph, task_id)

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
            if now[i] in STARTABLE
            and all(now[d] is Status.COMPLETED for d in self.graph.predecessors(i))
        ]
        return sorted(found, key=lambda i: (-self._priority[i], i))

    def generations(self, statuses: Mapping[str, Status] | None = None) -> list[list[str]]:
        """Layers of the remaining work: every task's remaining deps are in earlier layers."""
        left = self.graph.subgraph(self.remaining(statuses))
        return [sorted(layer) for layer in nx.topological_generations(left)]

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
            nxt = [s for s in self.graph.successors(current) if s in weight]
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
            tail = [best[s] for s in self.graph.successors(n) if s in inside]
            best[n] = self.tasks[n].cost + max(tail, default=0)
        return best


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
    needs = nx.DiGraph()  # a -> b: b depends on a, as in TaskGraph
    needs.add_nodes_from(own)
    needs.add_edges_from((d, t.id) for t in tasks for d in t.depends_on)
    below = set().union(*(nx.descendants(needs, i) for i in own)) - set(own)
    for task_id in sorted(below):
        root = min(set(own) & nx.ancestors(needs, task_id))
        why = f"upstream {root} held back: {held[root].reason}"
        held[task_id] = HeldBack(task_id, names[task_id], why, root)
    return dict(sorted(held.items()))
