"""From settings to a backend: the one place that knows every preset.

``settings.Preset`` (what users may write) and ``REGISTRY`` (what we can build) are kept in
step by a test; the settings module cannot import this one, which imports every backend.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from tasks_lib.agents.aider import Aider
from tasks_lib.agents.base import Agent
from tasks_lib.agents.claude import ClaudeCode
from tasks_lib.agents.cli import CliAgent
from tasks_lib.agents.codex import Codex
from tasks_lib.agents.command import CommandAgent
from tasks_lib.agents.opencode import OpenCodeRun
from tasks_lib.agents.opencode_server import OpenCodeServerAgent
from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.agents.settings import AgentSettings, Preset


def _command(settings: AgentSettings) -> Agent:
    assert settings.command is not None  # the settings validator guarantees it
    return CommandAgent(settings.command, env=settings.extra_env)


REGISTRY: dict[Preset, Callable[[AgentSettings], Agent]] = {
    "scripted": lambda settings: ScriptedAgent(),
    "command": _command,
    "opencode-server": OpenCodeServerAgent,
    "opencode": lambda settings: CliAgent(OpenCodeRun(settings)),
    "claude": lambda settings: CliAgent(ClaudeCode(settings)),
    "codex": lambda settings: CliAgent(Codex(settings)),
    "aider": lambda settings: CliAgent(Aider(settings)),
}


def make_agent(settings: AgentSettings) -> Agent:
    """A new backend. ``opencode-server`` holds a server process: close it when done."""
    return REGISTRY[settings.preset](settings)


class AgentPool:
    """One backend per distinct settings for a whole run (so one OpenCode server serves all
    its nodes, even when tasks pick other agents); closes what it made."""

    def __init__(self) -> None:
        self._agents: dict[str, Agent] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, settings: AgentSettings) -> Agent:
        key = settings.model_dump_json()
        with self._lock:
            if self._closed:  # the run is over: an agent made now would be closed by no one
                agent = make_agent(settings)
                _close(agent)
                return agent
            if key not in self._agents:
                self._agents[key] = make_agent(settings)
            return self._agents[key]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            agents, self._agents = list(self._agents.values()), {}
        for agent in agents:
            _close(agent)

    def __enter__(self) -> AgentPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close(agent: Agent) -> None:
    """Close one backend; its trouble must not keep the run's other backends open."""
    with contextlib.suppress(Exception):
        agent.close()
