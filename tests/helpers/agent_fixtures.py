"""Fixtures for the real-agent-CLI tests, loaded with ``pytest_plugins = ["agent_fixtures"]``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.agent_helpers import git
from helpers.fakemodel import FakeModel


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModel]:
    monkeypatch.setenv("FAKE_API_KEY", "fake-key")
    with FakeModel(log_path=tmp_path / "requests.jsonl") as fake:
        yield fake


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A real git repository with one commit, as an agent session gets it."""
    wt = tmp_path / "wt"
    wt.mkdir()
    git(wt, "init", "-q", "-b", "main")
    (wt / "README.md").write_text("demo\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", "initial")
    return wt
