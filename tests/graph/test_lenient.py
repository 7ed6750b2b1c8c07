"""A real planning repository's tasks folder: notes next to the tasks, a completed task whose
dependency was deleted, one broken task. The rest of the graph stays runnable; only the
broken task and what depends on it are held back, each with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.gitrepos import REAL_SHAPED, git, make_origin, task_md

from tasks_lib.graph.dag import load_graph
from tgflow_cli.main import main


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A clone of a real-shaped repository, as its maintainer has it."""
    origin = make_origin(tmp_path, REAL_SHAPED)
    git(tmp_path, "clone", "-q", str(origin), "checkout")
    return tmp_path / "checkout"


def test_the_runnable_part_is_a_graph_and_the_broken_part_is_held_back(checkout: Path) -> None:
    graph, problems, warnings = load_graph(checkout / "tasks")
    assert sorted(graph.tasks) == ["api", "docs", "setup", "ui"]
    held = graph.held_back
    assert sorted(held) == ["after-broken", "broken"]
    assert held["broken"].upstream is None
    assert held["broken"].reason.startswith("tasks/broken.md: invalid risk 'hgh'")
    assert held["after-broken"].upstream == "broken"
    assert held["after-broken"].reason.startswith("upstream broken held back: tasks/broken.md")
    assert [p.path.name for p in problems] == ["broken.md"]
    assert problems[0].task_ids == ("broken",)
    shown = {(w.path.name, w.message.split(" (")[0]) for w in warnings}
    assert ("README.md", "no YAML frontmatter, so not a task file: skipped") in shown
    assert ("notes.md", "no YAML frontmatter, so not a task file: skipped") in shown
    assert any(
        name == "setup.md" and "'old-spike'" in message and "no task file" in message
        for name, message in ((w.path.name, w.message) for w in warnings)
    )


def test_a_file_that_starts_as_frontmatter_but_is_broken_stays_a_problem(tmp_path: Path) -> None:
    (tmp_path / "open.md").write_text("---\nid: open\nname: Open\n")
    (tmp_path / "fine.md").write_text(task_md("fine"))
    graph, problems, warnings = load_graph(tmp_path)
    assert [str(p) for p in problems] == [
        f"{tmp_path}/open.md: frontmatter is not closed by a '---' line"
    ]
    assert problems[0].task_ids == ()  # not read far enough to know its id: blocks nothing
    assert list(graph.tasks) == ["fine"] and graph.held_back == {}
    assert warnings == []


def test_a_pending_task_on_an_unknown_id_is_held_back_alone(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(task_md("a", depends_on=["ghost"]))
    (tmp_path / "b.md").write_text(task_md("b", depends_on=["a"]))
    (tmp_path / "c.md").write_text(task_md("c"))
    graph, problems, _ = load_graph(tmp_path)
    assert [p.task_ids for p in problems] == [("a",)]
    assert "depends on unknown id 'ghost'" in problems[0].message
    assert list(graph.tasks) == ["c"]
    assert {i: h.upstream for i, h in graph.held_back.items()} == {"a": None, "b": "a"}


def test_a_cycle_holds_back_its_members_and_a_duplicate_its_id(tmp_path: Path) -> None:
    for rel, text in {
        "x.md": task_md("x", depends_on=["y"]),
        "y.md": task_md("y", depends_on=["x"]),
        "after-x.md": task_md("after-x", depends_on=["x"]),
        "one/d.md": task_md("d"),
        "two/d.md": task_md("d"),
        "free.md": task_md("free"),
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph, problems, _ = load_graph(tmp_path)
    assert sorted(i for p in problems for i in p.task_ids) == ["d", "x", "y"]
    assert list(graph.tasks) == ["free"]
    assert {i: h.upstream for i, h in graph.held_back.items()} == {
        "after-x": "x", "d": None, "x": None, "y": None,
    }  # fmt: skip


def test_plan_shows_the_runnable_part_and_lists_the_held_back_tasks(
    checkout: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(checkout)  # as its maintainer runs it
    assert main(["plan"]) == 0
    out, err = capsys.readouterr()
    assert "Plan for tasks: 4 tasks" in out
    assert "Held back" in out and "broken" in out and "after-broken" in out
    assert "problem: tasks/broken.md: invalid risk 'hgh'" in err
    assert "warning: tasks/README.md: no YAML frontmatter" in err

    assert main(["plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["total"] == 4
    assert len(plan["problems"]) == 1 and plan["problems"][0].startswith("tasks/broken.md: ")
    assert [h["id"] for h in plan["held_back"]] == ["after-broken", "broken"]
    assert plan["held_back"][1]["status"] == "failed"
    assert plan["held_back"][0]["status"] == "skipped"
    assert plan["ready"] == ["api", "docs"]


def test_plan_strict_refuses_the_whole_graph(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--strict", "--tasks", str(checkout / "tasks")]) == 1
    out, err = capsys.readouterr()
    assert "broken.md: invalid risk 'hgh'" in out
    assert "no plan until they are fixed" in err


def test_validate_still_lists_every_problem_and_warning(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--tasks", str(checkout / "tasks")]) == 1
    out, err = capsys.readouterr()
    assert [line.split(": ")[0] for line in out.splitlines()] == [
        str(checkout / "tasks" / "broken.md")
    ]
    assert "README.md: no YAML frontmatter" in err and "notes.md: no YAML frontmatter" in err
    assert "setup.md: completed, but depends on 'old-spike'" in err
    assert "1 problem(s)" in err
