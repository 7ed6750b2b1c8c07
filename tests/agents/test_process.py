"""The watched subprocess: our timeouts and cancellation hold whatever the child does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from tasks_lib.agents.process import descendants, group_alive, kill_group, pid_alive, run_watched

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


def test_a_zombie_is_not_alive_and_a_group_lives_while_a_live_member_does(tmp_path: Path) -> None:
    # The leader exits (unreaped: a zombie) while its child sleeps on in the group.
    leader = subprocess.Popen(
        ["bash", "-c", "sleep 60 & echo $!"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    try:
        deadline = time.monotonic() + 10
        while pid_alive(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(leader.pid)  # exited, not reaped
        assert pid_alive(child) and group_alive(leader.pid)
        kill_group(leader.pid)
        assert not group_alive(leader.pid)
    finally:
        kill_group(leader.pid)
        leader.wait(5)
    assert not pid_alive(0) and not pid_alive(-1)


def test_descendants_are_found_in_other_sessions_and_only_while_alive(tmp_path: Path) -> None:
    # A grandchild that moved to a session of its own, as the Prefect server's flow runs do.
    script = "setsid sleep 60 & echo $!; wait"
    parent = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    try:
        grandchild = int(parent.stdout.readline())
        found = descendants({parent.pid})
        assert grandchild in found and parent.pid not in found
        assert descendants({grandchild}) == set()
        os.kill(grandchild, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while grandchild in descendants({parent.pid}) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert grandchild not in descendants({parent.pid})
    finally:
        parent.kill()
        parent.wait(5)
