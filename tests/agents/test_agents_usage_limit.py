"""A provider's usage limit met by a REAL agent CLI (OpenCode) against the fake model, which
answers HTTP 429 for 20 s with ``Retry-After`` and the reset in its message: the node does not
fail; its session is ended, no session asks the provider again before the reset, and the next
one goes on with the work on the same branch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.agent_helpers import require_cli, settings_for, shell_step
from helpers.fakemodel import FakeModel
from helpers.gitrepos import make_origin, show

from tasks_lib.agents.registry import make_agent
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.develop import LIMITED_BEFORE
from tasks_lib.run.node import run_node
from tasks_lib.run.records import NodeStatus

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


def test_a_usage_limit_pauses_the_node_until_the_reset_and_it_completes(
    fake: FakeModel, tmp_path: Path
):
    require_cli("opencode")
    origin = make_origin(tmp_path, {"README.md": "demo\n", "tasks/limited.md": TASK})
    ws = Workspace.open(str(origin), tmp_path / "ws")
    task = ws.find_task("limited")
    assert task is not None
    warnings: list[str] = []

    record = run_node(
        ws, task, make_agent(settings_for("opencode", fake)),
        NodeSettings(validate_commands=["test -f one.txt"], idle_timeout_s=60.0),
        warn=warnings.append,
    )  # fmt: skip

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
    assert fake.saw(LIMITED_BEFORE)  # the next session was told to go on
    assert show(origin, "one.txt") == "one"
    assert "status: completed" in show(origin, "tasks/limited.md")
