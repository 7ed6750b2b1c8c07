"""Validation commands: first failure decides, timeouts are enforced, $PYTHON is ours."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tasks_lib.run.validation import run_validation


def test_all_pass_and_python_is_the_running_interpreter(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_validation(
        ['"$PYTHON" -c "import sys; print(sys.executable)"', "pwd"], tmp_path, 10, lines.append
    )
    assert result.ok and result.failed_command is None
    assert sys.executable in lines and str(tmp_path) in lines


def test_first_failing_command_stops_and_reports_its_output(tmp_path: Path) -> None:
    result = run_validation(["echo one", "echo broken >&2; exit 3", "touch never"], tmp_path, 10)
    assert not result.ok
    assert result.failed_command == "echo broken >&2; exit 3"
    assert "exit code 3" in result.output_tail and "broken" in result.output_tail
    assert not (tmp_path / "never").exists()


def test_a_command_over_its_timeout_is_killed(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_validation(["sleep 30"], tmp_path, 0.5)
    assert not result.ok and "timed out after 0.5s" in result.output_tail
    assert time.monotonic() - started < 10
