"""``tgflow validate`` and ``tgflow plan`` as a user and a script see them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tgflow_cli.main import main

TGFLOW = Path(sys.executable).parent / "tgflow"


def fixtures(shared_dir: Path, name: str) -> Path:
    return shared_dir / "corpora" / "taskgraph-fixtures" / name


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_json_of_the_real_corpus(shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks_dir = shared_dir / "corpora" / "taskgraph_ts" / "tasks"
    code, out, _ = run(capsys, "plan", "--tasks", str(tasks_dir), "--json")
    assert code == 0
    plan = json.loads(out)
    assert out == json.dumps(plan, sort_keys=True, indent=2) + "\n"
    assert plan["total"] == 44
    assert plan["counts"] == {
        "blocked": 0,
        "completed": 43,  # one of them written 'done'
        "failed": 0,
        "in-progress": 0,
        "pending": 1,
    }
    assert plan["warnings"] == [
        f"{tasks_dir}/implementation/review/schemas-and-errors.md: "
        "status 'done' read as 'completed'"
    ]

    pending = "review/complete-library"
    assert plan["generations"] == [[pending]]
    assert plan["critical_path"] == {"ids": [pending], "cost": 8}  # scope broad
    assert plan["priorities"] == {pending: 8}
    assert plan["decompose"] == [
        {
            "id": pending,
            "path": f"{tasks_dir}/implementation/review/complete-library.md",
            "risk": "low",
            "scope": "broad",
        }
    ]
    # Ready iff all its dependencies are completed: they are, in this corpus.
    assert plan["ready"] == [pending]


def test_pending_task_is_not_ready_until_its_dependencies_complete(
    shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = shared_dir / "corpora" / "taskgraph_ts" / "tasks"
    tasks_dir = Path(shutil.copytree(corpus, tmp_path / "tasks"))
    dep = tasks_dir / "implementation" / "api" / "public-exports.md"
    dep.write_text(dep.read_text().replace("status: completed", "status: in-progress", 1))
    code, out, _ = run(capsys, "plan", "--tasks", str(tasks_dir), "--json")
    plan = json.loads(out)
    assert code == 0
    assert plan["ready"] == []
    assert plan["generations"] == [["api/public-exports"], ["review/complete-library"]]
    assert plan["critical_path"] == {
        "ids": ["api/public-exports", "review/complete-library"],
        "cost": 2 + 8,  # scopes narrow and broad
    }


def test_plan_tables_in_a_terminal(shared_dir: Path) -> None:
    tasks_dir = shared_dir / "corpora" / "taskgraph_ts" / "tasks"
    done = subprocess.run(
        [str(TGFLOW), "plan", "--tasks", str(tasks_dir)],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "44 tasks" in done.stdout
    assert "completed" in done.stdout and "43" in done.stdout
    assert "Critical path (cost 8, 1 tasks): review/complete-library" in done.stdout
    assert "Consider splitting" in done.stdout
    assert "status 'done' read as 'completed'" in done.stderr


@pytest.mark.parametrize(
    ("name", "code", "expected"),
    [
        ("tasks", 0, "ok: 3 tasks in"),
        ("cycles", 1, "task-a.md: dependency cycle: task-a -> task-c -> task-b -> task-a"),
        ("invalid", 1, "invalid-task.md: depends on unknown id 'missing-dependency'"),
    ],
)
def test_validate_exit_codes_on_the_fixtures(
    shared_dir: Path, capsys: pytest.CaptureFixture[str], name: str, code: int, expected: str
) -> None:
    got, out, _ = run(capsys, "validate", "--tasks", str(fixtures(shared_dir, name)))
    assert got == code
    assert expected in out
    if code:
        assert all(": " in line for line in out.splitlines())


def test_validate_prints_one_line_per_problem(
    shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "validate", "--tasks", str(shared_dir / "corpora" / "taskgraph-fixtures")
    )
    assert code == 1
    assert len(out.splitlines()) == 2  # the cycle and the dangling dependency
    assert "2 problem(s)" in err


def test_plan_refuses_a_graph_with_problems(
    shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "plan", "--tasks", str(fixtures(shared_dir, "cycles")), "--json")
    assert code == 1
    assert "dependency cycle" in out
    assert "no plan until they are fixed" in err


def test_missing_tasks_folder_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("validate", "plan"):
        code, out, err = run(capsys, command, "--tasks", str(tmp_path / "nope"))
        assert code == 2
        assert out == ""
        assert err == f"tgflow: tasks folder '{tmp_path / 'nope'}' not found (pass --tasks DIR)\n"


def test_default_tasks_folder_is_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.md").write_text("---\nid: a\nname: A\n---\n")
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "validate")[:2] == (0, "ok: 1 tasks in tasks\n")


def test_help_explains_the_commands_and_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["plan", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out and "critical_path" in out and "generations" in out


def test_an_unexpected_error_is_one_line_and_its_traceback_only_with_verbose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tgflow_cli.graph_commands

    def broken(tasks_dir: Path) -> None:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(tgflow_cli.graph_commands, "load_graph", broken)
    code, out, err = run(capsys, "validate", "--tasks", str(tmp_path))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "tgflow: unexpected error: RuntimeError: the disk is on fire",
        "run with --verbose for the traceback",
    ]
    code, _, err = run(capsys, "validate", "--verbose", "--tasks", str(tmp_path))
    assert code == 1
    assert "Traceback" in err and err.endswith("RuntimeError: the disk is on fire\n")


def test_ctrl_c_in_any_command_is_exit_130_and_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tgflow_cli.graph_commands

    def interrupted(tasks_dir: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tgflow_cli.graph_commands, "load_graph", interrupted)
    code, _, err = run(capsys, "plan", "--tasks", str(tmp_path))
    assert code == 130
    assert err == "tgflow: interrupted; everything it started was stopped\n"
