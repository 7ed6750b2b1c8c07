"""What the process tests look for in /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path


def children(pid: int, marker: bytes) -> list[int]:
    """Live child processes of ``pid`` whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and marker in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


READY = "Ctrl-C stops"  # the line `tgflow server` prints once everything answers


def started_server(
    argv: list[str], *, env: Mapping[str, str], cwd: Path, drain: bool = True
) -> tuple[subprocess.Popen[str], str]:
    """A ``tgflow server`` started as a person starts one, returned once it says it is ready:
    the process (in a session of its own) and what it printed until then. ``drain`` keeps
    reading its output afterwards (else its pipe fills and it blocks); leave it off to read
    the rest yourself (``communicate``)."""
    proc = subprocess.Popen(
        argv, env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if READY in line:
                break
        output = "".join(seen)
        assert proc.poll() is None and READY in output, output
    except BaseException:  # nothing of a server that never got ready is left running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if drain:
        threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, output
