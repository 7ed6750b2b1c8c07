"""The embedded demo's inputs: the origin it builds, its task graph, and that the graph's
scripts really produce a working project, conflict included, when merged like the pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks_lib.agents.base import Outcome, SessionRequest
from tasks_lib.agents.scripted import SCRIPT, SCRIPT_BLOCK, ScriptedAgent
from tasks_lib.demo import EXAMPLE_TASKS, DemoError, build_demo_origin
from tasks_lib.graph.dag import TaskGraph, branch_slug, load_graph
from tasks_lib.graph.taskfile import Level, Task
from tasks_lib.run.prompt import build_prompt

ME = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *ME, *args], cwd=repo, capture_output=True, text=True)


def project_tests(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-q"],
        cwd=repo,
        capture_output=True,
        text=True,
    )


def example_graph() -> TaskGraph:
    loaded = load_graph(EXAMPLE_TASKS)
    assert loaded.problems == [] and loaded.warnings == []
    assert loaded.graph is not None
    return loaded.graph


def test_demo_origin_is_a_bare_repo_whose_main_holds_a_tested_project(tmp_path: Path) -> None:
    origin = build_demo_origin(tmp_path / "demo")
    assert origin == tmp_path / "demo" / "origin.git"
    clone = tmp_path / "clone"
    assert git(tmp_path, "clone", "-q", str(origin), str(clone)).returncode == 0

    assert git(clone, "branch", "--show-current").stdout.strip() == "main"
    assert sorted(p.name for p in (clone / "tasks").rglob("*.md")) == sorted(
        p.name for p in EXAMPLE_TASKS.rglob("*.md")
    )
    tests = project_tests(clone)
    assert tests.returncode == 0, tests.stderr
    assert "Ran 2 tests" in tests.stderr


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(DemoError, match="not empty"):
        build_demo_origin(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_example_graph_has_the_shapes_the_demo_shows() -> None:
    graph = example_graph()
    assert 8 <= len(graph) <= 10
    assert any("/" in task_id for task_id in graph.tasks)
    # The diamond is the critical path, so its two middle nodes develop side by side.
    path, _ = graph.critical_path()
    assert path[:2] == ["core/tokenize", "stats/frequency"]
    assert graph.dependents("core/tokenize") == ["stats/frequency", "stats/lengths"]
    assert graph.dependencies("report/summary") == ["stats/frequency", "stats/lengths"]
    reviews = [t for t in graph if t.level is Level.REVIEW]
    assert [t.id for t in reviews] == ["review/release"]
    sinks = {t.id for t in graph if not graph.dependents(t.id)}
    assert sinks == {"review/release"}
    assert graph.tasks["review/release"].section("Acceptance Criteria")


@pytest.mark.parametrize("task", [t for t in example_graph() if t.level is not Level.REVIEW])
def test_every_implementation_task_carries_a_valid_script(task: Task) -> None:
    block = SCRIPT_BLOCK.search(task.description)
    assert block, f"{task.path}: no tgflow-script block in the Description"
    steps = SCRIPT.validate_python(yaml.safe_load(block.group(1)))
    assert any(s.write and s.write.path.startswith("tests/") for s in steps), task.id
    assert any(s.commit for s in steps), task.id


def develop(task: Task, worktree: Path, conflicts: list[str] | None = None) -> None:
    task_file = f"tasks/{task.path.relative_to(EXAMPLE_TASKS).as_posix()}"
    prompt = build_prompt(task, task_file_rel=task_file, conflict_files=conflicts)
    request = SessionRequest(task_id=task.id, worktree=worktree, prompt=prompt, timeout_s=120)
    result = ScriptedAgent().run(request)
    assert result.outcome is Outcome.SUCCEEDED, f"{task.id}: {result.tail}"


def test_the_graph_merged_generation_by_generation_leaves_the_project_passing(
    tmp_path: Path,
) -> None:
    """Each generation develops from the same main (as parallel nodes do), then merges one at
    a time; a conflicting branch gets main merged in and the agent resolves it."""
    graph = example_graph()
    main = tmp_path / "main"
    git(tmp_path, "clone", "-q", str(build_demo_origin(tmp_path / "demo")), str(main))
    conflicts: list[str] = []

    for generation in graph.generations():
        developed: list[tuple[Task, Path]] = []
        for task in (graph.tasks[i] for i in generation):
            if task.level is Level.REVIEW:
                continue
            worktree = tmp_path / "worktrees" / branch_slug(task.id)
            added = git(main, "worktree", "add", "-q", "-b", branch_slug(task.id), str(worktree))
            assert added.returncode == 0, added.stderr
            develop(task, worktree)
            developed.append((task, worktree))
        for task, worktree in developed:
            branch = branch_slug(task.id)
            if git(main, "merge", "-q", "--no-ff", "--no-edit", branch).returncode != 0:
                assert git(main, "merge", "--abort").returncode == 0
                conflicts.append(task.id)
                assert git(worktree, "merge", "-q", "--no-edit", "main").returncode != 0
                unmerged = git(worktree, "diff", "--name-only", "--diff-filter=U").stdout.split()
                assert unmerged == ["CHANGELOG.md", "textstats/__init__.py"]
                develop(task, worktree, conflicts=unmerged)
                merged = git(main, "merge", "-q", "--no-ff", "--no-edit", branch)
                assert merged.returncode == 0, merged.stdout + merged.stderr
            tests = project_tests(main)
            assert tests.returncode == 0, f"after merging {task.id}:\n{tests.stderr}"

    assert conflicts == ["stats/lengths"]
    tests = project_tests(main)
    assert "Ran 13 tests" in tests.stderr
    changelog = (main / "CHANGELOG.md").read_text()
    assert "top_words" in changelog and "mean_word_length" in changelog
    assert "<<<<<<<" not in (main / "textstats" / "__init__.py").read_text()
    assert git(main, "status", "--porcelain", "--untracked-files=no").stdout == ""
