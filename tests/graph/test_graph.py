"""The task graph: validation finds every problem; plan queries are right on any DAG."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks_lib.errors import UsageError
from tasks_lib.graph.dag import SLUG_MAX, GraphError, TaskGraph, branch_slug, load_graph
from tasks_lib.graph.taskfile import Scope, Status, Task


def task(task_id: str, *deps: str, scope: Scope | None = None, status: str = "pending") -> Task:
    return Task(
        id=task_id,
        name=task_id,
        depends_on=deps,
        scope=scope,
        status=Status(status),
        path=Path(f"{task_id}.md"),
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- validation ----------------------------------------------------------------------------


def test_fixture_cycle_is_reported_with_its_three_ids(shared_dir: Path) -> None:
    graph, problems, _ = load_graph(shared_dir / "corpora" / "taskgraph-fixtures" / "cycles")
    assert list(graph.tasks) == [] and sorted(graph.held_back) == ["task-a", "task-b", "task-c"]
    (problem,) = problems
    assert problem.task_ids == ("task-a", "task-c", "task-b")
    assert problem.path.name == "task-a.md"
    assert "dependency cycle: task-a -> task-c -> task-b -> task-a" in problem.message


def test_fixture_dangling_dependency_is_reported(shared_dir: Path) -> None:
    graph, problems, _ = load_graph(shared_dir / "corpora" / "taskgraph-fixtures" / "invalid")
    assert list(graph.held_back) == ["invalid-task"] and list(graph.tasks) == []
    assert [str(p) for p in problems] == [
        f"{shared_dir}/corpora/taskgraph-fixtures/invalid/invalid-task.md: "
        "depends on unknown id 'missing-dependency' (no valid task file has this id)"
    ]


def test_real_corpus_is_a_valid_graph(shared_dir: Path) -> None:
    graph, problems, warnings = load_graph(shared_dir / "corpora" / "taskgraph_ts" / "tasks")
    assert problems == []
    assert graph is not None and len(graph) == 44
    assert [w.path.name for w in warnings] == ["schemas-and-errors.md"]


def test_every_kind_of_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    write(tmp_path / "notes.md", "# not a task\n")
    write(tmp_path / "bad.md", "---\nid: bad\nname: Bad\nstatus: finished\n---\n")
    write(tmp_path / "one/a.md", "---\nid: a\nname: A\ndepends_on: [b]\n---\n")
    write(tmp_path / "two/a.md", "---\nid: a\nname: A again\n---\n")
    write(tmp_path / "b.md", "---\nid: b\nname: B\ndepends_on: [a, typo-c]\n---\n")
    write(tmp_path / "c.md", "---\nid: typo-d\nname: C\n---\n")
    write(tmp_path / "dots.md", "---\nid: '...'\nname: Dots\n---\n")
    graph, problems, warnings = load_graph(tmp_path)
    assert list(graph.tasks) == ["typo-d"]  # the only task no problem concerns
    assert [str(w) for w in warnings] == [
        f"{tmp_path}/notes.md: no YAML frontmatter, so not a task file: skipped "
        "(a task file starts with '---')"
    ]  # not a task file: a warning since issue 10, not a problem
    lines = [str(p) for p in problems]
    assert any(line.startswith(f"{tmp_path}/bad.md: invalid status 'finished'") for line in lines)
    assert (
        f"{tmp_path}/two/a.md: duplicate id 'a' (also in {tmp_path}/one/a.md); ids must be unique"
        in lines
    )
    assert (
        f"{tmp_path}/b.md: depends on unknown id 'typo-c' (no valid task file has this id); "
        "did you mean 'typo-d'?" in lines
    )
    assert any("dependency cycle: a -> b -> a" in line for line in lines)
    assert any(
        line.startswith(f"{tmp_path}/dots.md: id '...' cannot be made a git branch name")
        for line in lines
    )
    assert len(lines) == 5


def test_ids_giving_the_same_branch_name_are_a_problem() -> None:
    with pytest.raises(UsageError) as caught:  # a GraphError: the files need fixing
        TaskGraph([task("graph/construction"), task("graph--construction"), task("A"), task("a")])
    assert isinstance(caught.value, GraphError)
    messages = [p.message for p in caught.value.problems]
    assert len(messages) == 2
    assert "give the same branch name 'graph--construction'" in messages[0]
    assert "id 'a' and id 'A'" in messages[1]


def test_every_cycle_is_spelled_once() -> None:
    tasks = [task("a", "b"), task("b", "a", "c"), task("c", "a"), task("s", "s")]
    with pytest.raises(GraphError) as caught:
        TaskGraph(tasks)
    cycles = sorted(p.message.split(" (")[0] for p in caught.value.problems)
    assert cycles == [
        "dependency cycle: a -> b -> a",
        "dependency cycle: a -> b -> c -> a",
        "dependency cycle: s -> s",
    ]


def test_completed_task_with_open_dependency_is_a_warning(shared_dir: Path) -> None:
    graph, problems, warnings = load_graph(shared_dir / "corpora" / "taskgraph-fixtures" / "tasks")
    assert problems == [] and graph is not None
    assert [w.message for w in warnings] == [
        "completed, but its dependencies are not: 'task-one' (pending)"
    ]


# --- branch names --------------------------------------------------------------------------


def test_branch_slug_flattens_ids_with_slashes() -> None:
    assert branch_slug("graph") == "graph"
    assert branch_slug("graph/construction") == "graph--construction"
    assert branch_slug("analysis/critical-path") == "analysis--critical-path"
    assert branch_slug("tâche 1") == "tache-1"
    assert branch_slug("-x.lock") == "x"
    assert branch_slug("..") == ""


@given(st.text(min_size=1, max_size=200))
def test_branch_slug_is_always_a_safe_ref_component(task_id: str) -> None:
    slug = branch_slug(task_id)
    if slug:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", slug)
        assert not slug.startswith(("-", "."))
        assert ".." not in slug
        assert not slug.endswith((".lock", "."))
        assert len(slug) <= SLUG_MAX


def test_long_ids_stay_distinct() -> None:
    a, b = "x" * 200 + "a", "x" * 200 + "b"
    assert branch_slug(a) != branch_slug(b)
    assert len(branch_slug(a)) == SLUG_MAX


# --- queries on a known graph -------------------------------------------------------------


@pytest.fixture
def diamond() -> TaskGraph:
    """base -> (left, right) -> top, plus a lone task; left is the expensive side."""
    return TaskGraph(
        [
            task("base", scope=Scope.SINGLE, status="completed"),
            task("left", "base", scope=Scope.SYSTEM),
            task("right", "base", scope=Scope.NARROW, status="failed"),
            task("top", "left", "right", scope=Scope.SINGLE),
            task("lone", status="blocked"),
        ]
    )


def test_ready_takes_pending_and_failed_tasks_whose_dependencies_completed(
    diamond: TaskGraph,
) -> None:
    assert diamond.ready() == ["left", "right"]  # failed is retryable; blocked waits for a person
    assert diamond.ready({"left": Status.COMPLETED, "right": Status.IN_PROGRESS}) == []
    assert diamond.ready({"left": Status.COMPLETED, "right": Status.COMPLETED}) == ["top"]
    assert "lone" in diamond.ready({"lone": Status.PENDING})


def test_generations_and_critical_path_cover_remaining_work(diamond: TaskGraph) -> None:
    assert diamond.generations() == [["left", "lone", "right"], ["top"]]
    assert diamond.critical_path() == (["left", "top"], 16 + 1)
    assert diamond.critical_path(include_completed=True) == (["base", "left", "top"], 1 + 16 + 1)
    done = dict.fromkeys(["base", "left", "right", "top", "lone"], Status.COMPLETED)
    assert diamond.generations(done) == []
    assert diamond.critical_path(done) == ([], 0)


def test_priority_and_neighbours(diamond: TaskGraph) -> None:
    assert [diamond.priority(i) for i in ("base", "left", "right", "top", "lone")] == [
        1 + 16 + 1,
        16 + 1,
        2 + 1,
        1,
        4,  # no scope: moderate's cost
    ]
    assert diamond.descendants("base") == {"left", "right", "top"}
    assert diamond.dependencies("top") == ["left", "right"]
    assert diamond.dependents("base") == ["left", "right"]


def test_given_costs_replace_scope_costs_in_priorities_and_the_critical_path(
    diamond: TaskGraph,
) -> None:
    costs = {"base": 5, "left": 10, "right": 300, "top": 20, "lone": 1}
    weighed = diamond.with_costs(costs)
    assert [weighed.priority(i) for i in ("base", "left", "right", "top", "lone")] == [
        5 + 300 + 20,
        10 + 20,
        300 + 20,
        20,
        1,
    ]
    assert weighed.critical_path() == (["right", "top"], 320)
    assert weighed.ready() == ["right", "left"]
    assert diamond.ready() == ["left", "right"] and diamond.cost("right") == 2  # unchanged
    with pytest.raises(ValueError, match=re.escape("no cost for task(s) lone")):
        diamond.with_costs({k: v for k, v in costs.items() if k != "lone"})


def test_plan_counts_and_decomposition_flags(diamond: TaskGraph) -> None:
    plan = diamond.plan()
    assert plan.counts == {
        "pending": 2,
        "in-progress": 0,
        "completed": 1,
        "failed": 1,
        "blocked": 1,
    }
    assert [f.id for f in plan.decompose] == ["left"]  # scope system
    assert set(plan.priorities) == {"left", "right", "top", "lone"}


# --- properties on random DAGs -------------------------------------------------------------

SCOPES = st.sampled_from([None, *Scope])


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 8) -> list[Task]:
    """Random DAGs: node i may depend on any j < i, with random scopes and statuses."""
    n = draw(st.integers(1, max_nodes))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True)) if i else []
        tasks.append(
            task(
                f"t{i}",
                *(f"t{j}" for j in deps),
                scope=draw(SCOPES),
                status=draw(st.sampled_from(["pending", "pending", "completed", "failed"])),
            )
        )
    return draw(st.permutations(tasks))


def as_networkx(graph: TaskGraph) -> nx.DiGraph:
    """The reference the brute force runs on: edge dependency -> dependent."""
    digraph = nx.DiGraph()
    digraph.add_nodes_from(graph.tasks)
    digraph.add_edges_from((d, i) for i in graph.tasks for d in graph.dependencies(i))
    return digraph


def heaviest_path_brute_force(graph: TaskGraph, nodes: list[str]) -> int:
    sub = as_networkx(graph).subgraph(nodes)
    best = 0
    for source in nodes:
        for target in nodes:
            paths = [[source]] if source == target else nx.all_simple_paths(sub, source, target)
            for path in paths:
                best = max(best, sum(graph.tasks[i].cost for i in path))
    return best


@settings(max_examples=150, deadline=None)
@given(dags())
def test_generations_put_dependencies_in_earlier_generations(tasks: list[Task]) -> None:
    graph = TaskGraph(tasks)
    generations = graph.generations()
    layer_of = {i: n for n, layer in enumerate(generations) for i in layer}
    assert sorted(layer_of) == sorted(graph.remaining())
    for task_id, n in layer_of.items():
        for dep in graph.dependencies(task_id):
            assert dep not in layer_of or layer_of[dep] < n


@settings(max_examples=150, deadline=None)
@given(dags())
def test_critical_path_is_a_path_and_none_is_heavier(tasks: list[Task]) -> None:
    graph = TaskGraph(tasks)
    remaining = graph.remaining()
    path, cost = graph.critical_path()
    assert all(as_networkx(graph).has_edge(a, b) for a, b in itertools.pairwise(path))
    assert set(path) <= set(remaining)
    assert cost == sum(graph.tasks[i].cost for i in path)
    assert cost == heaviest_path_brute_force(graph, remaining)

    all_path, all_cost = graph.critical_path(include_completed=True)
    assert all_cost == heaviest_path_brute_force(graph, list(graph.tasks))
    assert all(as_networkx(graph).has_edge(a, b) for a, b in itertools.pairwise(all_path))


@settings(max_examples=100, deadline=None)
@given(dags())
def test_priority_is_the_heaviest_path_from_the_task(tasks: list[Task]) -> None:
    graph = TaskGraph(tasks)
    for task_id in graph.tasks:
        reach = [task_id, *graph.descendants(task_id)]
        longest = max(
            sum(graph.tasks[i].cost for i in p)
            for target in reach
            for p in (
                [[task_id]]
                if target == task_id
                else nx.all_simple_paths(as_networkx(graph), task_id, target)
            )
        )
        assert graph.priority(task_id) == longest


@settings(max_examples=100, deadline=None)
@given(dags())
def test_ready_tasks_are_startable_with_completed_dependencies(tasks: list[Task]) -> None:
    graph = TaskGraph(tasks)
    ready = set(graph.ready())
    for t in graph:
        startable = t.status in (Status.PENDING, Status.FAILED)
        deps_done = all(graph.tasks[d].status is Status.COMPLETED for d in t.depends_on)
        assert (t.id in ready) == (startable and deps_done)


def test_a_large_graph_builds_and_plans_quickly() -> None:
    """Guards against quadratic work; the real figure is in `python -m bench`."""
    tasks = [
        task(f"t{i}", *(f"t{j}" for j in range(max(0, i - 3), i)), scope=Scope.NARROW)
        for i in range(2000)
    ]
    started = time.perf_counter()
    TaskGraph(tasks).plan()
    assert time.perf_counter() - started < 5
