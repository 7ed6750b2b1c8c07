"""Every preset a user may name can be built, closed, and fails in the one error tree."""

from __future__ import annotations

import pytest

from tasks_lib.agents.base import Agent, AgentError
from tasks_lib.agents.cli import CliMissing, find_cli
from tasks_lib.agents.opencode_server import OpenCodeServerAgent, OpenCodeServerError
from tasks_lib.agents.registry import REGISTRY, AgentPool, make_agent
from tasks_lib.agents.settings import PRESETS, AgentSettings
from tasks_lib.errors import TgflowError


def settings(preset: str) -> AgentSettings:
    command = ["true"] if preset == "command" else None
    return AgentSettings(preset=preset, command=command)


def test_the_registry_builds_exactly_the_presets_users_may_name():
    assert set(REGISTRY) == set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_makes_an_agent_that_can_be_closed(preset: str):
    agent = make_agent(settings(preset))
    assert Agent in type(agent).__mro__  # an explicit subclass: close() comes with it
    assert agent.name == preset
    agent.close()  # nothing started yet: a no-op for every backend
    agent.close()


def test_a_failing_close_does_not_keep_the_pools_other_agents_open(
    monkeypatch: pytest.MonkeyPatch,
):
    closed: list[str] = []

    def broken(self: OpenCodeServerAgent) -> None:
        raise OSError("boom")

    monkeypatch.setattr(OpenCodeServerAgent, "close", broken)
    pool = AgentPool()
    pool.get(settings("opencode-server"))
    other = pool.get(settings("scripted"))
    monkeypatch.setattr(other, "close", lambda: closed.append(other.name), raising=False)
    pool.close()
    assert closed == ["scripted"]


def test_agent_set_up_errors_are_tgflow_errors(monkeypatch: pytest.MonkeyPatch):
    assert issubclass(CliMissing, AgentError) and issubclass(OpenCodeServerError, AgentError)
    assert issubclass(AgentError, TgflowError)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(AgentError, match="no-such-agent-cli"):
        find_cli("no-such-agent-cli")
