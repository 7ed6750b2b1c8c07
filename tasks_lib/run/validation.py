"""Running the user's build/lint/test commands, each with a timeout and its whole process group.

The same commands run in the task worktree before a merge and in the integration worktree
after every merge; the first failing command decides.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks_lib.agents.process import run_watched
from tasks_lib.agents.sandbox import Sandbox

TAIL_LINES = 40
# Lines that say what went wrong in most tools' output (pytest, compilers, linters).
TELLING = re.compile(r"\bFAILED\b|\bERROR\b|Error\b|\berror:|\bassert")


@dataclass
class ValidationResult:
    ok: bool
    failed_command: str | None = None
    output_tail: str = ""
    duration_s: float = 0.0
    summary: str = ""  # the failure's most telling output line, for one-line reports


def summarise(lines: list[str]) -> str:
    """The last line that names a failure, else the last non-empty one: a one-line report
    then says what broke instead of only that a command exited non-zero."""
    meaningful = [line.strip() for line in lines if line.strip()]
    telling = [line for line in meaningful if TELLING.search(line)]
    return (telling or meaningful or [""])[-1]


def run_validation(
    commands: list[str],
    cwd: Path,
    timeout_s: float,
    on_line: Callable[[str], None] = lambda line: None,
    cancel: threading.Event | None = None,
    sandbox: Sandbox | None = None,
) -> ValidationResult:
    """Run each command with ``bash -c`` in ``cwd``; stop at the first failure.

    ``$PYTHON`` is the interpreter running tgflow, so commands can say ``$PYTHON -m pytest``.
    ``timeout_s`` applies to each command. With a ``sandbox`` each runs inside it: the tests
    run the agent's code, as untrusted as the agent.
    """
    env = {**os.environ, "PYTHON": sys.executable, "PWD": str(cwd)}
    if sandbox is not None:
        env.update(sandbox.env())
    total = 0.0
    for command in commands:
        on_line(f"$ {command}")
        argv = ["bash", "-c", command]
        proc = run_watched(
            sandbox.wrap(argv, cwd) if sandbox is not None else argv,
            cwd=cwd,
            env=env,
            timeout_s=timeout_s,
            idle_timeout_s=None,
            on_line=on_line,
            cancel=cancel,
        )
        total += proc.duration_s
        if proc.returncode == 0 and not proc.interrupted:
            continue
        if proc.timed_out:
            why = f"timed out after {timeout_s:g}s"
        elif proc.cancelled:
            why = "cancelled"
        else:
            why = f"exit code {proc.returncode}"
        tail = "\n".join(proc.lines[-TAIL_LINES:])
        summary = summarise(proc.lines)
        return ValidationResult(
            ok=False,
            failed_command=command,
            output_tail=f"`{command}` failed ({why}): {summary}\n{tail}",
            duration_s=total,
            summary=summary,
        )
    return ValidationResult(ok=True, duration_s=total)
