"""Helpers for the real-agent-CLI tests: settings for the fake model, per-CLI scripts, git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers.fakemodel import FakeModel
from tasks_lib.agents.cli import CliMissing, find_cli
from tasks_lib.agents.settings import AgentSettings

IDENTITY_ENV = {
    "GIT_AUTHOR_NAME": "Agent",
    "GIT_AUTHOR_EMAIL": "agent@example.invalid",
    "GIT_COMMITTER_NAME": "Agent",
    "GIT_COMMITTER_EMAIL": "agent@example.invalid",
}
COMMIT = "git add -A && git commit -q -m 'add hello.txt'"
BLOCK = "mkdir -p .tgflow && printf 'need the API spec\\n' > .tgflow/blocked.md"


def require_cli(binary: str) -> str:
    """The CLI's path; outside CI skip when missing, in CI fail loudly."""
    try:
        return find_cli(binary)
    except CliMissing as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (CI must install the agent CLIs)")
        pytest.skip(f"{binary} not installed: run scripts/install-agent-clis.sh")


def settings_for(preset: str, fake: FakeModel, **extra: Any) -> AgentSettings:
    base = fake.url if preset == "claude" else f"{fake.url}/v1"
    return AgentSettings(
        preset=preset, model="fake-model", base_url=base, api_key_env="FAKE_API_KEY", **extra
    )


def write_and_commit(preset: str, worktree: Path, name: str = "hello.txt") -> list[dict]:
    """The fake model's script: write a file with the write tool, commit with the shell tool."""
    commit = COMMIT.replace("hello.txt", name)
    if preset.startswith("opencode"):
        steps = [
            {"tool": "write", "args": {"filePath": name, "content": "hello\n"}},
            {"tool": "bash", "args": {"command": commit, "description": "commit"}},
        ]
    elif preset == "claude":
        steps = [
            {"tool": "Write", "args": {"file_path": str(worktree / name), "content": "hello\n"}},
            {"tool": "Bash", "args": {"command": commit}},
        ]
    else:  # codex: its one shell tool does both
        steps = [
            {"tool": "exec_command", "args": {"cmd": f"printf 'hello\\n' > {name}"}},
            {"tool": "exec_command", "args": {"cmd": commit}},
        ]
    return [*steps, {"text": "Done: wrote and committed."}]


def shell_step(preset: str, command: str, **extra: Any) -> dict:
    """One shell tool call in the CLI's own tool vocabulary."""
    if preset.startswith("opencode"):
        return {"tool": "bash", "args": {"command": command, "description": "run"}, **extra}
    if preset == "claude":
        return {"tool": "Bash", "args": {"command": command}, **extra}
    return {"tool": "exec_command", "args": {"cmd": command}, **extra}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
        env={**os.environ, **IDENTITY_ENV},
    ).stdout.strip()  # fmt: skip
