"""The watched subprocess: our timeouts and cancellation hold whatever the child does."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from tasks_lib.agents.process import pid_alive, run_watched

SPEW = "while true; do echo x; sleep 0.01; done"


def test_wall_clock_timeout_holds_while_the_child_prints_without_pause(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_watched(["bash", "-c", SPEW], cwd=tmp_path, timeout_s=1.0, idle_timeout_s=30)
    assert result.timed_out and result.lines
    assert time.monotonic() - started < 10


def test_cancel_holds_while_the_child_prints_without_pause(tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    result = run_watched(
        ["bash", "-c", SPEW], cwd=tmp_path, timeout_s=60, idle_timeout_s=30, cancel=cancel
    )
    assert result.cancelled
    assert time.monotonic() - started < 10


def test_a_child_that_closes_its_output_is_still_timed_out(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_watched(
        ["bash", "-c", "echo hi; exec >/dev/null 2>&1; sleep 60"],
        cwd=tmp_path,
        timeout_s=1.0,
        idle_timeout_s=None,
    )
    assert result.timed_out and result.lines == ["hi"]
    assert time.monotonic() - started < 10
    assert not pid_alive(result.pid)


def test_a_child_ignoring_sigterm_is_killed_with_its_group(tmp_path: Path) -> None:
    script = (
        "trap '' TERM; "
        "python3 -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "time.sleep(60)' & echo child $!; wait"
    )
    result = run_watched(["bash", "-c", script], cwd=tmp_path, timeout_s=60, idle_timeout_s=0.5)
    assert result.stalled
    child = int(re.findall(r"child (\d+)", "\n".join(result.lines))[0])
    assert not pid_alive(result.pid) and not pid_alive(child)
