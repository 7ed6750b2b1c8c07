"""Which agent a session uses and how it reaches its model: read from users, so validated.

A run gives the default; a task's frontmatter ``agent:``/``model:`` overrides it for that task.
``api_key_env`` names the variable holding the key; the key itself is never stored or logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks_lib.errors import UsageError, describe_validation_error
from tasks_lib.graph.taskfile import Level, Risk, Task

Preset = Literal["scripted", "command", "opencode-server", "opencode", "claude", "codex", "aider"]
PRESETS: tuple[str, ...] = get_args(Preset)


class AgentSettingsError(UsageError):
    """A task file's or rule's agent choice that makes no valid settings."""


class AgentRule(BaseModel):
    """Agent or model for every task of one risk or level (a task's own frontmatter wins)."""

    model_config = ConfigDict(extra="forbid")

    agent: Preset | None = None
    model: str | None = None


RULE_KEYS = frozenset([f"risk:{r.value}" for r in Risk] + [f"level:{lv.value}" for lv in Level])


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Preset = "scripted"
    model: str | None = Field(
        None,
        description="Model name. With base_url: the model id at that endpoint; without: the "
        "CLI's own form (OpenCode wants provider/model).",
    )
    base_url: str | None = Field(
        None,
        description="Provider endpoint (OpenAI style, ending in /v1; Claude Code: without /v1). "
        "When set the CLI runs with an isolated home and only this provider; when not, the "
        "CLI uses the user's own configuration and login.",
    )
    api_key_env: str | None = Field(None, description="Name of the env var holding the API key.")
    command: list[str] | None = Field(
        None,
        description="preset 'command': argv template with {prompt} {prompt_file} {task_id} "
        "{worktree}.",
    )
    extra_env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0, description="Overrides the run's wall clock.")
    idle_timeout_s: float | None = Field(None, gt=0, description="Overrides the run's stall limit.")
    server_url: str | None = Field(
        None, description="opencode-server: attach to this running server instead of starting one."
    )
    permission: Literal["once", "reject"] = Field(
        "once", description="opencode-server: the answer to a permission ask."
    )
    max_provider_retries: int = Field(
        3,
        ge=0,
        description="Stop a session after this many provider retries (OpenCode retries for "
        "ever; aider for long).",
    )

    @model_validator(mode="after")
    def _command_needs_argv(self) -> AgentSettings:
        if self.preset == "command" and not self.command:
            raise ValueError("agent preset 'command' needs 'command': an argv template list")
        return self

    def api_key(self) -> str | None:
        """The key from the environment; a clear error when the named variable is unset."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        if value is None:
            raise ValueError(
                f"agent {self.preset}: environment variable {self.api_key_env} (api_key_env) "
                "is not set; export it or change api_key_env"
            )
        return value


def settings_for_task(
    default: AgentSettings,
    task: Task,
    rules: Mapping[str, AgentRule] | None = None,
) -> AgentSettings:
    """The settings one task runs with: run default, then rules, then the task's own choice.

    ``rules`` maps ``"risk:<value>"`` or ``"level:<value>"`` to an agent and/or model (e.g.
    ``{"risk:high": AgentRule(model="big")}``); the task frontmatter's ``agent:``/``model:``
    wins over both. The provider (base_url, key) carries over unless a rule changes it.
    """
    changes: dict[str, Any] = {}
    for key in (f"risk:{task.risk}", f"level:{task.level}"):
        rule = (rules or {}).get(key)
        if rule is not None:
            changes.update(
                (k, v) for k, v in (("preset", rule.agent), ("model", rule.model)) if v is not None
            )
    if task.agent:
        changes["preset"] = task.agent
    if task.model:
        changes["model"] = task.model
    if not changes:
        return default
    try:
        return AgentSettings.model_validate({**default.model_dump(), **changes})
    except ValidationError as e:
        raise AgentSettingsError(
            f"{task.path}: agent settings for task {task.id!r} are invalid "
            f"(agent: must be one of {', '.join(PRESETS)}): "
            + "; ".join(describe_validation_error(e))
        ) from None
