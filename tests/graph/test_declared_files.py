"""The files a task declares: its ``files:`` list and the paths its References name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks_lib.graph.taskfile import Task, load_tasks, parse_task


def task_file(references: str, frontmatter: str = "") -> Task:
    text = (
        f"---\nid: t\nname: T\n{frontmatter}---\n\n## Description\n\nSee `src/other.ts`.\n\n"
        f"## References\n\n{references}\n\n## Notes\n\nsrc/notes.ts\n"
    )
    task, problems, _ = parse_task(text, Path("tasks/t.md"))
    assert task is not None, problems
    return task


def test_paths_in_references_with_line_ranges_links_and_prose_around_them() -> None:
    task = task_file(
        "- `src/call.ts` — the call site\n"
        "- src/env.ts:8-9 (the variables), `lib/x.py:12`, tests/a_test.py#L3-L7\n"
        "- [the schema](docs/architecture/schemas.md#enums) and [./docs/guide/](./docs/guide/)\n"
        "- CHANGELOG.md, package.json; textstats/counts.py (the existing style)\n"
        "- docs/architecture/api-surface.md — fromTasks/fromRecords/fromJSON, and/or e.g. i.e.\n"
        "- section 6 (Nullable helper pattern), v1.2, TaskInput→attributes\n"
        "- https://example.com/src/web.ts, <https://example.org/a.md>, [site](http://x.io/b.py)\n"
        "- /etc/passwd, ~/notes.md, ../outside/repo.md"
    )
    assert task.declared_files == (
        "src/call.ts",
        "src/env.ts",
        "lib/x.py",
        "tests/a_test.py",
        "docs/architecture/schemas.md",
        "docs/guide/",
        "CHANGELOG.md",
        "package.json",
        "textstats/counts.py",
        "docs/architecture/api-surface.md",
    )


def test_frontmatter_files_come_first_and_repeats_are_dropped() -> None:
    task = task_file("- src/a.py\n- src/b.py:1-2", "files: [src/, src/a.py, ./lib/c.py]\n")
    assert task.files == ("src/", "src/a.py", "lib/c.py")
    assert task.declared_files == ("src/", "src/a.py", "lib/c.py", "src/b.py")


def test_no_references_and_no_files_declare_nothing() -> None:
    task, _, _ = parse_task("---\nid: t\nname: T\n---\n\nsrc/a.py\n", Path("t.md"))
    assert task is not None and task.declared_files == ()
    assert task_file("the whole thing, no paths").declared_files == ()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("src/a.py", "files: must be a list of repository paths"),
        ("[1, 2]", "files.0: Input should be a valid string"),
        ("[/etc/passwd]", "files.0: not a path inside the repository; write it relative"),
        ("[src/a.py, '../up.py']", "files.1: not a path inside the repository"),
        ("['https://x.io/a.py']", "files.0: not a path inside the repository"),
    ],
)
def test_files_that_are_not_a_list_of_repository_paths_are_a_problem_naming_the_file(
    value: str, says: str
) -> None:
    path = Path("tasks/t.md")
    task, problems, _ = parse_task(f"---\nid: t\nname: T\nfiles: {value}\n---\n", path)
    assert task is None
    [problem] = problems
    assert problem.path == path and problem.task_ids == ("t",)
    assert says in problem.message and "\n" not in problem.message


def test_real_references_sections_yield_their_documents(shared_dir: Path) -> None:
    tasks = {t.id: t for t in load_tasks(shared_dir / "corpora" / "taskgraph_ts" / "tasks").tasks}
    assert tasks["graph/construction"].declared_files == (
        "docs/architecture/graph-model.md",
        "docs/architecture/api-surface.md",
        "docs/architecture/decisions/006-deterministic-edge-keys.md",
    )
    for task in tasks.values():
        refs = task.section("References")
        found = task.declared_files
        if refs is None:
            assert found == ()
            continue
        # Every line of these sections starts with one document, and names nothing else.
        firsts = [line.split()[1] for line in refs.splitlines() if line.startswith("- ")]
        assert found == tuple(dict.fromkeys(firsts)), task.id
        assert all(p.startswith("docs/") and p.endswith(".md") for p in found)


def test_the_fixture_corpus_declares_nothing_and_loads_as_before(shared_dir: Path) -> None:
    result = load_tasks(shared_dir / "corpora" / "taskgraph-fixtures" / "tasks")
    assert result.tasks and all(t.declared_files == () for t in result.tasks)
