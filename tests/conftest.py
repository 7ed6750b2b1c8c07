"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.prefect_fixtures import *  # noqa: F403  (the session's Prefect server)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` next to the repo: the corpora the issue's tests read.

    Skipped on a developer machine without it; in CI (CI set) its absence is a failure, so
    the corpus tests can never silently stop running.
    """
    shared = REPO.parent / "shared"
    if not (shared / "corpora").is_dir():
        message = f"{shared}/corpora not found (the shared task-file corpora sit next to the repo)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return shared
