"""What the process tests look for in /proc."""

from __future__ import annotations

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
