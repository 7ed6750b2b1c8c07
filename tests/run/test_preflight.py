"""`tgflow run` refuses bad input before Prefect starts: one readable line per problem,
paths as they are in the repository, and nothing changed on the origin."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.gitrepos import git, make_origin, task_md

from tasks_lib.run.config import RunConfig
from tasks_lib.run.setup import open_workspace, prepare
from tgflow_cli.main import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["run", *args])
    return code, capsys.readouterr().err


def test_unreachable_origin_is_one_line_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(capsys, "--origin", str(tmp_path / "nowhere.git"))
    assert code == 2
    assert "does not appear to be a git repository. Check the URL" in err
    assert "Traceback" not in err


def test_every_graph_problem_is_listed_by_its_path_in_the_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", depends_on=["b"]),
            "tasks/b.md": task_md("b", depends_on=["a"]),
            "tasks/c.md": task_md("c", depends_on=["ghost"]),
            "tasks/notes.md": "just notes, no frontmatter\n",
        },
    )
    before = git(origin, "rev-parse", "main")
    argv = ["--origin", str(origin), "--workspace", str(tmp_path / "ws"), "--strict"]
    code, err = run(capsys, *argv)
    assert code == 2
    lines = err.splitlines()[1:]
    assert not any("notes.md" in line for line in lines)  # not a task file: only a warning
    assert any("tasks/c.md:" in line and "'ghost'" in line for line in lines)
    assert any(
        "cycle" in line and ("a -> b -> a" in line or "b -> a -> b" in line) for line in lines
    )
    assert git(origin, "rev-parse", "main") == before
    assert git(origin, "for-each-ref", "refs/heads/tgflow") == ""


def test_a_bad_repository_config_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = make_origin(
        tmp_path, {"tasks/a.md": task_md("a"), ".tgflow.toml": "max_paralel = 3\n"}
    )
    code, err = run(capsys, "--origin", str(origin), "--workspace", str(tmp_path / "ws"))
    assert code == 2
    assert ".tgflow.toml: unknown or not allowed key(s) max_paralel" in err
    assert str(tmp_path / "ws") not in err.replace("\n", "")


def test_a_missing_tasks_folder_says_which_option_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = make_origin(tmp_path, {"todo/a.md": task_md("a")})
    code, err = run(capsys, "--origin", str(origin), "--workspace", str(tmp_path / "ws"))
    assert code == 2
    assert "tasks/: no such folder on main" in err and "--tasks" in err


def test_an_unknown_only_id_is_named_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a")})
    argv = ["--origin", str(origin), "--workspace", str(tmp_path / "ws")]
    code, err = run(capsys, *argv, "--only", "a", "--only", "nosuch")
    assert code == 2
    assert "--only nosuch: no such task id on main (known: a)" in err
    assert "Traceback" not in err


def test_without_strict_the_problems_hold_back_only_their_tasks(tmp_path: Path) -> None:
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", depends_on=["b"]),
            "tasks/b.md": task_md("b", depends_on=["a"]),
            "tasks/c.md": task_md("c", depends_on=["a"]),
            "tasks/d.md": task_md("d"),
            "tasks/README.md": "# Tasks\n",
        },
    )
    config = RunConfig(origin=str(origin), workspace_root=str(tmp_path / "ws"))
    ws = open_workspace(config)
    prepared = prepare(config, ws, ws.base_ref(), option_prefix="--")
    assert list(prepared.graph.tasks) == ["d"]
    held = prepared.graph.held_back
    assert held["a"].reason.startswith("tasks/a.md: dependency cycle: a -> b -> a")
    assert held["c"].reason.startswith("upstream a held back: tasks/a.md: dependency cycle")
    assert any(
        w.startswith("tasks/README.md: no YAML frontmatter, so not a task file: skipped")
        for w in prepared.warnings
    )
    assert any(
        w.startswith("held back: a: tasks/a.md: dependency cycle") for w in prepared.warnings
    )


def test_without_strict_a_graph_held_back_whole_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", depends_on=["ghost"]),
            "tasks/b.md": task_md("b", depends_on=["a"]),
        },
    )
    code, err = run(capsys, "--origin", str(origin), "--workspace", str(tmp_path / "ws"))
    assert code == 2  # nothing would run: the problems, not an empty flow run
    assert "tasks/a.md: depends on unknown id 'ghost'" in err
