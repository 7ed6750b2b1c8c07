"""Task files are untrusted input: a symlink in the tasks folder is never read through or
written through, and text a person wrote in a task file survives everything tgflow adds."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers.gitrepos import git, make_origin, show, task_md
from helpers.workspaces import open_ws

from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.errors import UsageError
from tasks_lib.graph.edit import update_task_file
from tasks_lib.graph.taskfile import SYMLINK as LINK
from tasks_lib.graph.taskfile import Status, load_tasks, parse_task, read_task
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.prompt import last_failure_note
from tasks_lib.run.records import NodeStatus

MARK = "PRIVATE-4711"  # never in a path: pytest names tmp_path after the test
STAMP = r"\*\*tgflow, \d{4}-\d\d-\d\d \d\d:\d\d UTC:\*\*"


def write(path: str, content: str) -> dict:
    return {"write": {"path": path, "content": content}}


def commit_link(origin: Path, tmp_path: Path, rel: str, target: Path) -> None:
    """Someone commits ``rel`` as a symbolic link to ``target`` and pushes it."""
    clone = tmp_path / "linker"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    (clone / rel).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, clone / rel)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", f"link {rel}")
    git(clone, "push", "-q", "origin", "main")


def on_main(origin: Path, rel: str) -> str:
    task, problems, _ = parse_task(show(origin, rel), Path(rel))
    assert task is not None, problems
    return task.body


def test_a_task_file_linked_outside_the_repository_is_a_problem_never_read_or_written(
    tmp_path: Path,
) -> None:
    """A task file that is a symlink to a file outside the repository is a problem naming its
    path; the file it points to is never read, run, committed or written through."""
    target = tmp_path / "outside" / "private.md"
    target.parent.mkdir()
    target.write_text(task_md("s", steps=[write("s.txt", "s\n")]) + f"\n{MARK}\n")
    before = target.read_bytes()
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=[write("a.txt", "a\n")])})
    commit_link(origin, tmp_path, "tasks/s.md", target)
    ws = open_ws(origin, tmp_path / "ws")

    loaded = ws.load_tasks()
    link = ws.integration / "tasks" / "s.md"
    assert [(p.path, p.task_ids) for p in loaded.problems] == [(link, ())]
    assert LINK in str(loaded.problems[0]) and str(link) in str(loaded.problems[0])
    for task in loaded.tasks:  # a run of every task the folder holds
        record = run_node(ws, task, ScriptedAgent(), NodeSettings())
        assert record.status == NodeStatus.COMPLETED, record.reason

    assert [t.id for t in loaded.tasks] == ["a"]
    assert MARK not in git(origin, "log", "-p", "main")
    assert target.read_bytes() == before
    with pytest.raises(UsageError, match=re.escape(f"{link}: {LINK}")):
        read_task(link)
    with pytest.raises(UsageError, match=re.escape(f"{link}: {LINK}")):
        update_task_file(link, status=Status.COMPLETED)
    assert target.read_bytes() == before and link.is_symlink()


def test_a_linked_folder_inside_tasks_is_a_problem_and_not_descended_into(
    tmp_path: Path,
) -> None:
    """A symlinked folder inside the tasks folder is a problem naming it; none of it is loaded."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.md").write_text(task_md("x"))
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a")})
    commit_link(origin, tmp_path, "tasks/more", elsewhere)
    ws = open_ws(origin, tmp_path / "ws")

    loaded = ws.load_tasks()

    assert [t.id for t in loaded.tasks] == ["a"]
    assert [str(p) for p in loaded.problems] == [f"{ws.integration / 'tasks' / 'more'}: {LINK}"]


def test_a_tasks_folder_that_is_a_link_is_a_problem(tmp_path: Path) -> None:
    """A tasks folder that is itself a symlink is a problem naming it; no task is loaded from it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.md").write_text(task_md("x"))
    (tmp_path / "repo").mkdir()
    os.symlink(elsewhere, tmp_path / "repo" / "tasks")

    loaded = load_tasks(tmp_path / "repo" / "tasks")

    assert loaded.tasks == []
    assert [str(p) for p in loaded.problems] == [f"{tmp_path / 'repo' / 'tasks'}: {LINK}"]


def test_a_persons_summary_survives_a_completion_and_tgflows_is_added_dated(
    tmp_path: Path,
) -> None:
    """A person's ``## Summary`` stays when the task completes; tgflow's is added under it,
    dated."""
    origin = make_origin(
        tmp_path,
        {
            "tasks/u.md": task_md(
                "u",
                steps=[write("u.txt", "u\n")],
                extra_body="\n## Summary\n\nWritten by a person.\n",
            )
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    task = ws.find_task("u")
    assert task is not None

    record = run_node(ws, task, ScriptedAgent(), NodeSettings())

    assert record.status == NodeStatus.COMPLETED, record.reason
    summary = re.search(r"## Summary\n(.*)", on_main(origin, "tasks/u.md"), re.S)
    assert summary is not None
    assert re.fullmatch(
        rf"\nWritten by a person\.\n\n<!-- tgflow -->\n{STAMP}\n\n.*Files changed.*"
        r"\n\n<!-- /tgflow -->\n?",
        summary.group(1),
        re.S,
    ), summary.group(1)
    assert git(ws.integration, "status", "--porcelain") == ""


def test_tgflows_own_earlier_summary_is_replaced_and_the_persons_kept(tmp_path: Path) -> None:
    """A later completion replaces only tgflow's own dated Summary block; the person's text
    stays."""
    path = tmp_path / "t.md"
    path.write_text("---\nid: t\nname: T\n---\n\n## Summary\n\nMine.\n\n## Notes\n\nN.\n")

    assert update_task_file(path, status=Status.COMPLETED, summary="first run")
    assert update_task_file(path, status=Status.COMPLETED, summary="second run")

    text = path.read_text()
    assert "first run" not in text and text.count("<!-- tgflow -->") == 1
    assert re.fullmatch(
        rf"---\nid: t\nname: T\nstatus: completed\n---\n\n## Summary\n\nMine\.\n\n"
        rf"<!-- tgflow -->\n{STAMP}\n\nsecond run\n\n<!-- /tgflow -->\n\n## Notes\n\nN\.\n",
        text,
    ), text


def test_a_persons_notes_survive_a_failure_note(tmp_path: Path) -> None:
    """A person's ``## Notes`` stay when the node fails; the failure note is added under them,
    dated."""
    origin = make_origin(
        tmp_path,
        {
            "tasks/n.md": task_md(
                "n",
                steps=[write("bad.txt", "oops\n")],
                extra_body="\n## Notes\n\nWritten by a person.\n",
            )
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    task = ws.find_task("n")
    assert task is not None

    record = run_node(
        ws, task, ScriptedAgent(), NodeSettings(validate_commands=["! test -f bad.txt"])
    )

    assert record.status == NodeStatus.FAILED
    body = on_main(origin, "tasks/n.md")
    notes = re.search(r"## Notes\n(.*)", body, re.S)
    assert notes is not None
    assert re.fullmatch(
        rf"\nWritten by a person\.\n\n<!-- tgflow -->\n{STAMP}\n\n"
        r"\*\*failed\*\* \(tgflow, attempt 1, [^)]*\): .*bad\.txt.*\n\n<!-- /tgflow -->\n?",
        notes.group(1),
        re.S,
    ), notes.group(1)
    found = last_failure_note(notes.group(1))
    assert found is not None and found.startswith("**failed** (tgflow, attempt 1,")
    assert "<!--" not in found
