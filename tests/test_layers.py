"""The house rules that the import contracts cannot see: importing the library never loads
Prefect (so `tgflow validate`/`plan` and anything built on the library stay light)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import tasks_lib


def test_importing_every_library_module_does_not_import_prefect() -> None:
    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(tasks_lib.__path__, "tasks_lib.")
        if ".demo_project" not in m.name
    )
    assert len(modules) > 20  # the walk found the library, not an empty package
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('prefect', 'flows', 'deployments', 'tgflow_cli')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_plan_command_does_not_import_prefect() -> None:
    code = (
        "import sys\n"
        "from tgflow_cli.main import build_parser\n"
        "build_parser()\n"
        "print('prefect' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
