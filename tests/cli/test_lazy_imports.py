"""``tgflow validate`` and ``plan`` load the library and nothing of the run: no Prefect, no
agents, no server, and no rich: the tables are plain text (their start-up is most of their
time, and rich's tables were a third of plan's)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tgflow_cli.main import COMMANDS, build_parser, main

HEAVY = ("prefect", "flows", "deployments", "httpx", "git", "tasks_lib.agents", "tasks_lib.run")


def loaded_by(tmp_path: Path, *args: str) -> dict[str, bool]:
    """Run ``tgflow ARGS`` in a fresh interpreter; which heavy modules it had loaded."""
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "a.md").write_text("---\nid: a\nname: A\n---\n")
    (tasks / "b.md").write_text("---\nid: b\nname: B\ndepends_on: [a]\n---\n")
    code = (
        "import contextlib, io, json, sys\n"
        "from tgflow_cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main({[*args, '--tasks', str(tasks)]!r})\n"
        f"names = {[*HEAVY, 'rich']!r}\n"
        "print(json.dumps({'exit': code, **{n: any(m == n or m.startswith(n + '.') "
        "for m in sys.modules) for n in names}}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found: dict[str, bool] = json.loads(done.stdout)
    assert found.pop("exit") == 0
    return found


@pytest.mark.parametrize("args", [["validate"], ["plan"], ["plan", "--json"]])
def test_validate_and_plan_import_nothing_of_the_run(tmp_path: Path, args: list[str]) -> None:
    found = loaded_by(tmp_path, *args)
    assert [n for n in HEAVY if found[n]] == []
    assert not found["rich"]


def test_each_command_is_added_by_the_module_named_for_it() -> None:
    for name in COMMANDS:
        parser = build_parser(name)
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert name in commands.choices


def test_help_and_unknown_commands_still_list_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    with pytest.raises(SystemExit) as done:
        main(["pla"])
    assert done.value.code == 2
    assert "choose from 'validate', 'plan', 'server', 'run', 'demo', 'reset'" in (
        capsys.readouterr().err
    )
