"""Task files are read faithfully and written back without damage."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tasks_lib.errors import UsageError
from tasks_lib.graph.edit import set_section, set_status, update_task_file
from tasks_lib.graph.markdown import find_section
from tasks_lib.graph.taskfile import Scope, Status, load_tasks, parse_task, read_task


@pytest.fixture
def corpus(shared_dir: Path) -> Path:
    return shared_dir / "corpora" / "taskgraph_ts" / "tasks"


@pytest.fixture
def corpus_copy(corpus: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(corpus, tmp_path / "tasks"))


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def changed_lines(before: bytes, after: bytes) -> list[tuple[str, str]]:
    old, new = before.decode().splitlines(), after.decode().splitlines()
    assert len(old) == len(new), "an edit must not add or remove lines here"
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def test_all_44_real_task_files_load(corpus: Path) -> None:
    result = load_tasks(corpus)
    assert len(list(corpus.rglob("*.md"))) == 44
    assert result.problems == []
    assert len(result.tasks) == 44
    ids = {t.id for t in result.tasks}
    assert "graph/construction" in ids  # ids with '/', unlike their file names
    assert all(t.name for t in result.tasks)


def test_done_drift_reads_as_completed_with_a_warning_naming_the_file(corpus: Path) -> None:
    result = load_tasks(corpus)
    drifted = corpus / "implementation" / "review" / "schemas-and-errors.md"
    task = next(t for t in result.tasks if t.path == drifted)
    assert task.status is Status.COMPLETED
    assert [str(w) for w in result.warnings] == [f"{drifted}: status 'done' read as 'completed'"]


def test_nanosecond_timestamps_are_read(corpus: Path) -> None:
    task = next(
        t for t in load_tasks(corpus).tasks if t.id == "architecture/c-1-construction-error-policy"
    )
    assert task.created is not None
    assert (task.created.year, task.created.microsecond) == (2026, 462977)


def test_unchanged_write_and_same_status_leave_every_file_byte_identical(corpus_copy: Path) -> None:
    for task in load_tasks(corpus_copy).tasks:
        before = task.path.read_bytes()
        assert update_task_file(task.path) is False
        if "status: done" not in before.decode():
            assert update_task_file(task.path, status=task.status) is False
        assert task.path.read_bytes() == before, task.path


def test_a_status_update_changes_only_the_status_line(corpus_copy: Path) -> None:
    for task in load_tasks(corpus_copy).tasks:
        before = task.path.read_bytes()
        assert update_task_file(task.path, status=Status.FAILED)
        changes = changed_lines(before, task.path.read_bytes())
        assert len(changes) == 1, task.path
        old, new = changes[0]
        assert old.startswith("status:")
        assert new == "status: failed"


def test_status_line_keeps_its_comment_and_is_inserted_when_missing(tmp_path: Path) -> None:
    commented = "---\nid: a\nname: A\nstatus: pending   # set by hand\nowner: me\n---\nbody\n"
    assert set_status(commented, Status.COMPLETED) == commented.replace(
        "status: pending", "status: completed"
    )
    quoted = '---\nid: a\nstatus: "completed"\nname: A\n---\n'
    assert set_status(quoted, Status.COMPLETED) == quoted
    missing = "---\nid: a\nname: A\nx-custom: 1\n---\nbody\n"
    assert set_status(missing, Status.BLOCKED) == (
        "---\nid: a\nname: A\nstatus: blocked\nx-custom: 1\n---\nbody\n"
    )


def test_crlf_file_stays_crlf(tmp_path: Path) -> None:
    text = (
        "---\r\nid: win\r\nname: Windows file\r\nstatus: pending\r\n---\r\n\r\n"
        "## Description\r\n\r\nDo it.\r\n\r\n## Notes\r\n\r\nold note\r\n"
    )
    path = write(tmp_path / "win.md", text)
    assert update_task_file(path, status=Status.BLOCKED, note="why\nit stopped", summary="done")
    data = path.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n")
    # The user's note stays; tgflow's text is added in its dated, marked block (issue 11).
    stamp = r"\*\*tgflow, \d{4}-\d\d-\d\d \d\d:\d\d UTC:\*\*"
    assert re.fullmatch(
        "---\r\nid: win\r\nname: Windows file\r\nstatus: blocked\r\n---\r\n\r\n"
        "## Description\r\n\r\nDo it.\r\n\r\n## Notes\r\n\r\nold note\r\n\r\n"
        f"<!-- tgflow -->\r\n{stamp}\r\n\r\nwhy\r\nit stopped\r\n\r\n<!-- /tgflow -->\r\n"
        f"\r\n## Summary\r\n\r\n<!-- tgflow -->\r\n{stamp}\r\n\r\ndone\r\n\r\n<!-- /tgflow -->\r\n",
        data.decode(),
    ), data.decode()
    task, problems, _ = parse_task(path.read_text(), path)
    assert problems == [] and task is not None and task.status is Status.BLOCKED


def test_depends_on_and_title_spellings_are_accepted(tmp_path: Path) -> None:
    write(tmp_path / "a.md", "---\nid: a\ntitle: Titled\n---\n")
    write(tmp_path / "b.md", "---\nid: b\nname: B\ndependsOn: [a]\nscope: single\n---\n")
    write(tmp_path / "c.md", "---\nid: c\nname: C\ndepends_on: a\n---\n")
    result = load_tasks(tmp_path)
    assert result.problems == []
    tasks = {t.id: t for t in result.tasks}
    assert tasks["a"].name == "Titled"
    assert tasks["b"].depends_on == ("a",)
    assert tasks["b"].scope is Scope.SINGLE and tasks["b"].cost == 1
    assert tasks["c"].depends_on == ("a",)


def test_scope_costs_double_with_each_scope_and_no_scope_costs_as_moderate(tmp_path: Path) -> None:
    assert [s.cost for s in Scope] == [1, 2, 4, 8, 16]
    write(tmp_path / "plain.md", "---\nid: plain\nname: Plain\n---\n")
    (plain,) = load_tasks(tmp_path).tasks
    assert plain.scope is None and plain.cost == Scope.MODERATE.cost == 4


BODY = """---
id: sections
name: Sections
custom_key: kept   # comment
---

## Description

Change `calc`.

```sh
# a comment, not a heading
make test
```

## Notes

old notes

### detail under notes

more old notes

## References

- https://example.invalid
"""


def test_notes_are_replaced_without_touching_other_text() -> None:
    after = set_section(BODY, "Notes", "new notes")
    head, _, rest = BODY.partition("## Notes\n")
    assert after.startswith(head + "## Notes\n\nnew notes\n\n## References\n")
    assert after.endswith(rest[rest.index("## References") :])
    assert find_section(after, "Description") == find_section(BODY, "Description")
    assert "# a comment, not a heading" in find_section(after, "Description")
    assert set_section(after, "Notes", "new notes") == after


def test_summary_is_appended_after_all_other_text() -> None:
    after = set_section(BODY, "Summary", "Files: calc.py\nTests: 3 passed")
    assert after == BODY + "\n## Summary\n\nFiles: calc.py\nTests: 3 passed\n"
    no_newline = set_section("---\nid: a\nname: A\n---\nbody", "Summary", "s")
    assert no_newline == "---\nid: a\nname: A\n---\nbody\n\n## Summary\n\ns\n"


def test_a_heading_inside_a_code_fence_does_not_end_a_section() -> None:
    text = "---\nid: a\nname: A\n---\n## Notes\n\n```\n# not a heading\n```\nold\n"
    assert set_section(text, "Notes", "new") == "---\nid: a\nname: A\n---\n## Notes\n\nnew\n"


def test_bom_is_kept_and_does_not_hide_the_frontmatter(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.md", "\ufeff---\nid: bom\nname: B\nstatus: pending\n---\nx\n")
    assert [t.id for t in load_tasks(tmp_path).tasks] == ["bom"]
    update_task_file(path, status=Status.COMPLETED)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf---\nid: bom\nname: B\nstatus: completed")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\nid: a\nname: A\n", "not closed by a '---' line"),
        ("---\n- a list\n---\n", "holds no 'key: value' pairs"),
        ("---\nid: a\nname: [unclosed\n---\n", "not valid YAML"),
        ("---\nname: No id\n---\n", "missing required field 'id'"),
        ("---\nid: a\nname: A\nstatus: finished\n---\n", "invalid status 'finished' (expected"),
        ("---\nid: a\nname: A\nscope: huge\nrisk: 3\n---\n", "invalid scope 'huge'"),
    ],
)
def test_bad_files_are_problems_naming_the_file(tmp_path: Path, text: str, expected: str) -> None:
    write(tmp_path / "bad.md", text)
    write(tmp_path / "good.md", "---\nid: good\nname: Good\n---\n")
    result = load_tasks(tmp_path)
    assert [t.id for t in result.tasks] == ["good"]
    assert len(result.problems) == 1
    assert result.problems[0].path == tmp_path / "bad.md"
    assert expected in result.problems[0].message


def test_a_markdown_file_without_frontmatter_is_skipped_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path / "README.md", "# Just markdown\n")
    write(tmp_path / "good.md", "---\nid: good\nname: Good\n---\n")
    result = load_tasks(tmp_path)
    assert [t.id for t in result.tasks] == ["good"] and result.problems == []
    (warning,) = result.warnings
    assert warning.path == tmp_path / "README.md"
    assert warning.message.startswith("no YAML frontmatter, so not a task file: skipped")
    with pytest.raises(UsageError, match=r"README\.md: no YAML frontmatter"):
        read_task(tmp_path / "README.md")  # asked for as a task, it is none


def test_all_invalid_fields_of_a_file_are_reported_together(tmp_path: Path) -> None:
    write(tmp_path / "bad.md", "---\nid: a\nname: A\nscope: huge\nrisk: 3\n---\n")
    (problem,) = load_tasks(tmp_path).problems
    assert "invalid scope 'huge'" in problem.message
    assert "invalid risk 3" in problem.message


def test_read_task_reads_one_file_and_names_it_when_invalid(tmp_path: Path) -> None:
    good = write(tmp_path / "good.md", "---\nid: good\nname: Good\nstatus: done\n---\nx\n")
    write(tmp_path / "other.md", "# not a task\n")  # the rest of the folder is not read
    task = read_task(good)
    assert (task.id, task.status, task.path) == ("good", Status.COMPLETED, good)
    bad = write(tmp_path / "bad.md", "---\nname: No id\n---\n")
    with pytest.raises(UsageError, match=rf"^{re.escape(str(bad))}: missing required field 'id'$"):
        read_task(bad)
    gone = tmp_path / "gone.md"
    with pytest.raises(UsageError, match=rf"^{re.escape(str(gone))}: cannot read"):
        read_task(gone)


def test_numeric_ids_and_dependencies_are_read_as_text(tmp_path: Path) -> None:
    write(tmp_path / "one.md", "---\nid: 1\nname: One\n---\n")
    write(tmp_path / "two.md", "---\nid: 2\nname: Two\ndepends_on: [1]\n---\n")
    tasks = {t.id: t for t in load_tasks(tmp_path).tasks}
    assert tasks["2"].depends_on == ("1",)
