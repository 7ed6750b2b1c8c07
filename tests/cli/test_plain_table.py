"""The plain-text tables of ``tgflow plan``: columns aligned in terminal cells, only the last
column wrapped to the width, bold only on a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tgflow_cli.plain_table import emphasis, paragraph, table

TGFLOW = Path(sys.executable).parent / "tgflow"


def test_columns_line_up_in_terminal_cells_and_numbers_to_the_right() -> None:
    lines = table(
        "Ready now",
        ["id", "priority", "name"],
        [["a", "7", "Tâche accentuée"], ["longer-id", "12", "名前 wide"], ["b", "3", "x"]],
        width=80,
        right={1},
    )
    assert lines == [
        "Ready now",
        "  id         priority  name",
        "  ---------  --------  ---------------",
        "  a                 7  Tâche accentuée",
        "  longer-id        12  名前 wide",
        "  b                 3  x",
    ]


def test_the_last_column_wraps_between_items_never_inside_one() -> None:
    items = [f"area{n % 3}/t{n} ({n})" for n in range(40)]
    lines = table("Generations", ["#", "tasks (priority)"], [["1", items]], width=50)
    body = lines[3:]
    assert all(len(line) <= 50 for line in lines)
    assert len(body) > 1 and all(line.startswith("     ") for line in body[1:])
    assert [line[5:] for line in body] == [line[5:].strip() for line in body]
    assert ", ".join(line[5:].removesuffix(",") for line in body) == ", ".join(items)


def test_a_word_wider_than_the_room_has_a_line_of_its_own_uncut() -> None:
    long = "x" * 40
    lines = table("t", ["id", "reason"], [["a", f"see {long} now"]], width=30)
    assert lines[3:] == ["  a   see", f"      {long}", "      now"]


def test_a_paragraph_wraps_with_its_later_lines_indented() -> None:
    ids = " -> ".join(f"task-{n}" for n in range(12))
    lines = paragraph("Critical path", f"(cost 9, 12 tasks): {ids}", width=40)
    assert lines[0].startswith("Critical path (cost 9, 12 tasks):")
    assert all(len(line) <= 40 for line in lines)
    assert all(line.startswith("  ") for line in lines[1:])
    assert " ".join(line.strip() for line in lines).endswith("task-10 -> task-11")


def test_bold_only_on_a_terminal_that_has_not_asked_for_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert emphasis(io.StringIO())("Plan") == "Plan"
    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        assert emphasis(terminal)("Plan") == "\x1b[1mPlan\x1b[0m"
        monkeypatch.setenv("NO_COLOR", "1")
        assert emphasis(terminal)("Plan") == "Plan"
    os.close(leader)


def test_plan_prints_names_as_written_within_the_width(tmp_path: Path) -> None:
    """Brackets in a name are text (rich read them as markup and dropped them)."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "a.md").write_text("---\nid: a\nname: '[wip] first of many'\nscope: single\n---\n")
    for n in range(30):
        (tasks / f"b{n}.md").write_text(
            f"---\nid: b{n}\nname: B{n}\nscope: single\ndepends_on: [a]\n---\n"
        )
    done = subprocess.run(
        [str(TGFLOW), "plan", "--tasks", str(tasks)],
        capture_output=True,
        text=True,
        env={"COLUMNS": "60", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [line for line in lines if line.startswith("  ")]  # titles are not wrapped
    assert "\x1b" not in done.stdout and all(len(row) <= 60 for row in rows)
    ready = lines.index("Ready now (highest priority first)")
    assert lines[ready + 1 : ready + 4] == [
        "  id  status   priority  name",
        "  --  -------  --------  -------------------",
        "  a   pending         2  [wip] first of many",
    ]
    assert "  2  b0 (1), b1 (1), b10 (1), b11 (1), b12 (1), b13 (1)," in lines


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_plan_into_a_reader_that_stopped_reading_is_no_error(
    tmp_path: Path, unbuffered: str
) -> None:
    """``tgflow plan | head``: the reader closing the pipe is not an unexpected error, whether
    the write fails in the command or at the last flush (stdout buffered)."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "a.md").write_text("---\nid: a\nname: A\n---\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for args in (["plan"], ["plan", "--json"]):
        done = subprocess.Popen(
            [str(TGFLOW), *args, "--tasks", str(tasks)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "PYTHONUNBUFFERED": unbuffered} if unbuffered else env,
        )
        assert done.stdout is not None and done.stderr is not None
        done.stdout.close()  # before it writes: its first write finds no reader
        err = done.stderr.read()
        assert (done.wait(), err) == (1, "")
