"""A provider's usage limit met by a REAL agent CLI (OpenCode) against the fake model, which
answers HTTP 429 for 20 s with ``Retry-After`` and the reset in its message: the node does not
fail; its session is ended, no session asks the provider again before the reset, and the next
one goes on with the work on the same branch. A review's reviewer waits the same way."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers.agent_helpers import git, require_cli, settings_for, shell_step
from helpers.fakemodel import FakeModel
from helpers.gitrepos import make_origin, show

from tasks_lib.agents.registry import make_agent
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.develop import LIMITED_BEFORE
from tasks_lib.run.node import run_node
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus
from tasks_lib.run.review import run_review

pytestmark = pytest.mark.agents
COMMIT_ONCE = (
    "echo one > one.txt && git add -A && (git diff --cached --quiet || git commit -qm one)"
)
SCRIPT = [shell_step("opencode", COMMIT_ONCE), {"limit": 20, "text": "Done."}]
TASK = (
    "---\nid: limited\nname: Limited\nstatus: pending\n---\n\n"
    "## Description\n\nWrite one.txt.\n\n## Acceptance Criteria\n\n- [ ] done\n"
)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModel]:
    monkeypatch.setenv("FAKE_API_KEY", "fake-key")
    with FakeModel(SCRIPT) as fake:
        yield fake


def run(
    tmp_path: Path,
    fake: FakeModel,
    warn: Callable[[str], None],
    cancel: threading.Event | None = None,
    on_wait: Callable[[str | None], None] | None = None,
    **settings: Any,
) -> NodeRecord:
    require_cli("opencode")
    origin = make_origin(tmp_path, {"README.md": "demo\n", "tasks/limited.md": TASK})
    ws = Workspace.open(str(origin), tmp_path / "ws")
    task = ws.find_task("limited")
    assert task is not None
    return run_node(
        ws, task, make_agent(settings_for("opencode", fake)),
        NodeSettings(validate_commands=["test -f one.txt"], idle_timeout_s=60.0, **settings),
        warn=warn, cancel=cancel, on_wait=on_wait,
    )  # fmt: skip


def test_a_usage_limit_pauses_the_node_until_the_reset_and_it_completes(
    fake: FakeModel, tmp_path: Path
):
    warnings: list[str] = []
    shown: list[str | None] = []

    record = run(tmp_path, fake, warnings.append, on_wait=shown.append)

    assert record.status is NodeStatus.COMPLETED, record.reason
    assert record.sessions == 2  # the one the limit ended, the one after the reset
    limited = [r for r in fake.scripted_requests() if r["step"] == 1]
    [sent] = fake.limits_sent
    reset = datetime.fromtimestamp(int(sent), UTC)  # the message says whole seconds
    # One 429, then nothing asked the provider before its reset: the next request is past it.
    assert len(limited) == 2 and limited[1]["time"] >= reset.timestamp()
    [wait] = record.usage_waits
    assert (wait.provider, wait.until, wait.said) == (f"{fake.url}/v1", reset, True)
    assert warnings == [
        f"usage limit of {fake.url}/v1: waiting until {reset:%H:%M:%S} UTC "
        "(reset said by the provider)"
    ]
    assert shown == [*warnings, None]  # the run shows it waiting, then running again
    assert fake.saw(LIMITED_BEFORE)  # the next session was told to go on
    assert show(tmp_path / "origin.git", "one.txt") == "one"
    assert "status: completed" in show(tmp_path / "origin.git", "tasks/limited.md")


def test_a_node_waiting_for_a_usage_limit_is_cancelled_at_once(fake: FakeModel, tmp_path: Path):
    """The reset is an hour off: only the cancel ends the wait (else the test would hang)."""
    fake.reset([SCRIPT[0], {"limit": 3600, "text": "Done."}])
    cancel = threading.Event()

    record = run(tmp_path, fake, lambda text: cancel.set(), cancel=cancel)

    assert record.status is NodeStatus.CANCELLED
    assert record.reason == f"cancelled while waiting for the usage limit of {fake.url}/v1"
    assert record.sessions == 1 and len(record.usage_waits) == 1
    assert "one" in branch_log(tmp_path)  # the session's commit, kept on the branch


def test_a_reset_further_off_than_the_node_may_wait_fails_it_now_without_a_retry(
    fake: FakeModel, tmp_path: Path
):
    fake.reset([SCRIPT[0], {"limit": 3600, "text": "Done."}])

    record = run(tmp_path, fake, lambda text: None, usage_limit_max_wait_s=600.0)

    assert record.status is NodeStatus.FAILED and record.cause is Cause.USAGE_LIMIT
    assert record.reason.startswith(f"usage limit of {fake.url}/v1 until ")
    assert "past usage_limit_max_wait_s (600 s) for this node" in record.reason
    assert not record.retryable and record.usage_waits == []
    assert "status: failed" in show(tmp_path / "origin.git", "tasks/limited.md")


def branch_log(tmp_path: Path) -> list[str]:
    """The subjects of the kept task branch on the origin (its work is not lost)."""
    return git(tmp_path / "origin.git", "log", "--format=%s", "tgflow/limited").splitlines()


REVIEW = (
    "---\nid: check\nname: Check\nstatus: pending\nlevel: review\n---\n\n"
    "## Description\n\nCheck main.\n"
)


def test_a_reviewer_that_meets_a_usage_limit_waits_without_the_merge_lock_and_reviews_again(
    fake: FakeModel, tmp_path: Path
):
    require_cli("opencode")
    fake.reset([{"limit": 5, "text": "PASS main is fine"}])
    origin = make_origin(tmp_path, {"README.md": "demo\n", "tasks/check.md": REVIEW})
    ws = Workspace.open(str(origin), tmp_path / "ws")
    task = ws.find_task("check")
    assert task is not None
    merges_went_on: list[bool] = []
    shown: list[str | None] = []

    record = run_review(
        ws, task, NodeSettings(validate_commands=["true"], idle_timeout_s=60.0),
        reviewer=make_agent(settings_for("opencode", fake)),
        warn=lambda text: merges_went_on.append(merge_can_take_the_lock(ws)),
        on_wait=shown.append,
    )  # fmt: skip

    assert record.status is NodeStatus.COMPLETED, record.reason
    assert record.sessions == 2  # the one the limit ended, the one after the reset
    [sent] = fake.limits_sent
    [wait] = record.usage_waits
    assert (wait.provider, wait.until, wait.said) == (
        f"{fake.url}/v1", datetime.fromtimestamp(int(sent), UTC), True,
    )  # fmt: skip
    assert merges_went_on == [True]
    assert shown == [f"usage limit of {fake.url}/v1: waiting until {wait.until:%H:%M:%S} UTC "
                     "(reset said by the provider)", None]  # fmt: skip
    assert "PASS main is fine" in show(origin, "tasks/check.md")
    assert "status: completed" in show(origin, "tasks/check.md")


def merge_can_take_the_lock(ws: Workspace) -> bool:
    """Another thread (a node merging) takes the merge lock, while the caller goes on."""
    taken = threading.Event()

    def merge() -> None:
        with ws.merge_lock:
            taken.set()

    threading.Thread(target=merge, daemon=True).start()
    return taken.wait(5.0)
