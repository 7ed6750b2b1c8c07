"""From settings to a backend: the one place that knows every preset."""

from __future__ import annotations

import contextlib
import threading

from tasks_lib.agents.base import Agent
from tasks_lib.agents.clis import PRESET_CLASSES, CliAgent
from tasks_lib.agents.command import CommandAgent
from tasks_lib.agents.opencode_server import OpenCodeServerAgent
from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.agents.settings import AgentSettings


def make_agent(settings: AgentSettings) -> Agent:
    """A new backend. ``opencode-server`` holds a server process: close it when done."""
    if settings.preset == "scripted":
        return ScriptedAgent()
    if settings.preset == "command":
        assert settings.command is not None  # the settings validator guarantees it
        return CommandAgent(settings.command, env=settings.extra_env)
    if settings.preset == "opencode-server":
        return OpenCodeServerAgent(settings)
    return CliAgent(PRESET_CLASSES[settings.preset](settings))


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
    close = getattr(agent, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()
