"""Run parameters: one pydantic model that is the Prefect UI form and the `tgflow run` flags.

Precedence, highest first:
1. parameters given explicitly (CLI flags, the flow's ``config`` argument, a deployment's
   parameters: every field a caller SETS, even to the default value);
2. the target repository's ``.tgflow.toml`` (top-level keys named like the fields below,
   except origin, base, workspace_root and only), read from the base branch of the origin
   as it is when the run starts;
3. the built-in defaults below.

The Prefect UI submits the fields of its form it shows with a value; an optional field left
empty arrives as null, which counts as not set (the repository's file decides it). Leave a
field out of a deployment's parameters to let the repository's file decide it.
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from tasks_lib.agents.settings import RULE_KEYS, AgentRule, AgentSettings, Preset
from tasks_lib.errors import UsageError, describe_validation_error
from tasks_lib.graph.taskfile import Status, Task
from tasks_lib.run.approval import DEFAULT_RULE, unknown_selectors
from tasks_lib.run.budget import Budget

CONFIG_FILE = ".tgflow.toml"


# Fields a repository's own file may not set: they say where the file itself is read from
# (origin, base, the clone) or which tasks this run is for.
_NOT_FROM_FILE = frozenset({"origin", "base", "workspace_root", "only", "reset"})


class ConfigError(UsageError):
    """A config file or parameter that cannot be used; the message says where and how to fix."""


class NodeSettings(BaseModel):
    """How every node of a run develops and integrates: the part of a run's settings a node
    reads. ``RunConfig`` extends it, so each setting is defined once, here or there."""

    model_config = ConfigDict(extra="forbid")

    tasks_dir: str = Field(
        "tasks",
        description="Folder of task files inside the repository, read from the base branch.",
    )
    validate_commands: list[str] = Field(
        default_factory=list,
        description="Shell commands that must pass on the task branch and again after each "
        'merge, e.g. "python -m pytest -q". None: only the agent\'s commits are checked.',
    )
    agent_timeout_s: float = Field(
        1800.0, gt=0, description="Wall-clock limit of one agent session, in seconds."
    )
    idle_timeout_s: float = Field(
        300.0, gt=0, description="An agent silent this long is stalled and stopped, in seconds."
    )
    validate_timeout_s: float = Field(
        600.0, gt=0, description="Limit for each validation command, in seconds."
    )
    usage_limit_backoff_s: float = Field(
        60.0,
        gt=0,
        description="After a provider's usage limit that says no reset time, sessions on it "
        "wait this long, doubling with each limit in a row, in seconds.",
    )
    usage_limit_max_wait_s: float = Field(
        21600.0,
        gt=0,
        description="The longest one node waits for usage limits in all (a reset said further "
        "off fails it now), in seconds.",
    )
    push: bool = Field(True, description="Push main to the origin after each merge.")
    conflict_rounds: int = Field(
        2, ge=0, description="Times a merge conflict goes back to the agent before the node fails."
    )
    push_retries: int = Field(
        3, ge=0, description="Re-merges when the origin moved during a push, before giving up."
    )
    prompt_template: str | None = Field(
        None,
        description="A string.Template file for the agent's prompt (see the docs), relative "
        "to the repository root. Unset: tgflow's own prompt.",
    )
    conventions: str | None = Field(
        None,
        description="Conventions file in the repository given to the agent (default: "
        "AGENTS.md or CONVENTIONS.md when present).",
    )
    protected_paths: list[str] = Field(
        default_factory=lambda: [".github/", ".gitlab-ci.yml"],
        description="Paths an agent may not change (a folder ends in /): its edits there are "
        "reverted before validation, as are edits to the tasks folder and .tgflow.toml, "
        "which are always protected.",
    )
    agent_identity: str | None = Field(
        None,
        description='Author of the agent\'s commits, "Name <email>" (tgflow commits them). '
        'Unset: the agent preset and model, e.g. "claude agent (model m) <agent@tgflow.invalid>".',
    )
    merge_strategy: Literal["merge", "squash"] = Field(
        "merge",
        description="How a task lands on base: 'merge' (--no-ff, the agent's commits kept) or "
        "'squash' (one commit per task).",
    )
    checkpoint_interval_s: float = Field(
        300.0,
        gt=0,
        description="While an agent works, its uncommitted files are copied to the origin "
        "this often, in seconds (its commits within seconds), so a machine that dies loses "
        "little; pushing runs only.",
    )
    merge_lock: Literal["process", "prefect"] = Field(
        "process",
        description="Who waits for whose merges: 'process', the nodes of this run; 'prefect', "
        "every run and machine reporting to the same Prefect server (a global concurrency "
        "limit per repository, created when the run starts). Git refusing a stale push "
        "stays the final arbiter either way.",
    )
    # 8, not 4: at 4, 40 branches need 10 validations or more, which at 5 s each is about
    # the run's lower bound already (bench/integration_bench.py): the queue was the bottleneck.
    merge_batch: int = Field(
        8,
        ge=1,
        description="Branches waiting to land that are merged and validated together (bisected "
        "when the validation fails, so only the culprits go back); 1: one at a time.",
    )
    # On: at V = 5 the worst of 520 simulated runs goes from 1.27 to 1.23 x the lower bound
    # (bench/integration_bench.py); it costs a second checkout of the clone, and a second
    # validation running beside the first while branches keep arriving.
    validate_ahead: bool = Field(
        True,
        description="While a batch is validated after merging, validate the branches that "
        "arrive meanwhile on top of it, in a checkout of their own, so they land as soon as "
        "it did; dropped (and tried again on the real base) when that batch does not land "
        "whole. A failure seen while the other validation ran beside it is run again alone "
        "before a branch is sent back. False: one validation at a time (a build that cannot "
        "run twice at once on one machine).",
    )
    approve_when: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RULE),
        description="Tasks that wait for a person after their validation passed, before they "
        "merge: risk:<risk>, level:<level> or task:<id> (default: risk:high, risk:critical; "
        "[] for none). The node's flow run pauses for the answer in the Prefect UI; a "
        "rejection or no answer leaves the task blocked, its branch kept.",
    )
    approval_timeout_s: float = Field(
        86400.0,
        gt=0,
        description="How long a node waits for its approval, in seconds, before it is "
        "blocked (its branch kept).",
    )
    sandbox: Literal["bwrap", "none"] | None = Field(
        None,
        description="Where agent sessions and validation commands run: 'bwrap' (bubblewrap: "
        "the machine read-only but the task's checkout, the origin and ~/.ssh hidden, every "
        "process gone with the session) or 'none'. Unset: bwrap where it works, else none "
        "with a warning.",
    )

    budget_rules: dict[str, Budget] = Field(
        default_factory=dict,
        description='What a task may spend, by its risk or level, e.g. {"risk:high": '
        '{"budget_usd": 5}, "level:research": {"budget_tokens": 200000}}: a task over it is '
        "stopped mid-session and fails, not retried. A task file's own budget_usd:/"
        "budget_tokens: wins over these.",
    )

    @field_validator("budget_rules")
    @classmethod
    def _budget_rule_keys(cls, v: dict[str, Budget]) -> dict[str, Budget]:
        return _known_rule_keys(v)

    @field_validator("validate_commands", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("approve_when", mode="before")
    @classmethod
    def _one_or_many_selectors(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("approve_when")
    @classmethod
    def _known_selectors(cls, v: list[str]) -> list[str]:
        unknown = unknown_selectors(v)
        if unknown:
            raise ValueError(
                f"unknown approval selector(s) {', '.join(unknown)}; use task:<id>, or one of "
                f"{', '.join(sorted(RULE_KEYS))}"
            )
        return v

    @field_validator("validate_commands")
    @classmethod
    def _no_empty_command(cls, v: list[str]) -> list[str]:
        cleaned = [c.strip() for c in v]
        if any(not c for c in cleaned):
            raise ValueError("validate_commands holds an empty command; remove it")
        return cleaned

    @field_validator("tasks_dir")
    @classmethod
    def _tasks_inside_repo(cls, v: str) -> str:
        return _folder_inside_repo(v, "tasks")


def _known_rule_keys(rules: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(rules) - RULE_KEYS)
    if unknown:
        raise ValueError(
            f"unknown rule key(s) {', '.join(unknown)}; use risk:<risk> or level:<level>, "
            f"one of {', '.join(sorted(RULE_KEYS))}"
        )
    return rules


def _folder_inside_repo(v: str, example: str) -> str:
    p = Path(v)
    if not v.strip() or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{v!r} must be a folder inside the repository, e.g. {example}")
    return p.as_posix()


def _run_fields_first(schema: dict[str, Any]) -> None:
    """The UI form lists where and what to run first (pydantic puts inherited fields first)."""
    props = schema.get("properties", {})
    first = [k for k in ("origin", "base", "agent") if k in props]
    schema["properties"] = {k: props[k] for k in first} | {
        k: v for k, v in props.items() if k not in first
    }


# The form's field for agent_command: the string people type (split like a shell by the
# validator below) or the argv list; pydantic's own schema for list[str] | None has no string.
_COMMAND_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string"}},
        {"type": "null"},
    ],
    "title": "Agent Command",
}


class RunConfig(NodeSettings):
    """Everything one run of the task graph needs."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_run_fields_first)

    origin: str = Field(
        description="The repository to work on: a URL or a local path (a bare repository, or a "
        "checkout whose base branch is not checked out). tgflow works in its own clone of it."
    )
    base: str = Field("main", description="Branch the tasks are read from and merged into.")
    agent: Preset | None = Field(
        None,
        description="Coding agent, required unless every task names its own: 'command' runs "
        "agent_command; claude, codex, aider, opencode, opencode-server run that agent's CLI; "
        "'scripted' only runs the demo scripts in task descriptions.",
    )
    agent_command: Annotated[list[str] | None, WithJsonSchema(_COMMAND_SCHEMA)] = Field(
        None,
        description="For agent 'command': the argv template, e.g. "
        '"my-agent --task {task_id} {prompt_file}" (placeholders: {prompt}, {prompt_file}, '
        "{task_id}, {worktree}).",
    )
    model: str | None = Field(None, description="Model name passed to the agent, if it takes one.")
    agent_base_url: str | None = Field(
        None,
        description="Provider endpoint for the agent CLI (OpenAI style, ending in /v1). Unset: "
        "the CLI uses its own configuration and login.",
    )
    agent_api_key_env: str | None = Field(
        None,
        description="Name of the environment variable that holds the provider's API key "
        "(the key itself is never stored or logged).",
    )
    review_agent: bool = Field(
        False,
        description="Review tasks (level: review) also run the agent to report against the "
        "acceptance criteria; it changes nothing, only the validation commands decide.",
    )
    max_parallel: int = Field(
        2, ge=1, le=64, description="Agent sessions running at once (across every machine)."
    )
    node_pool: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="A Prefect work pool to run the nodes on, each as a flow run of its own that "
        "any worker polling the pool picks up, on any machine that can reach the origin (e.g. "
        "tgflow-nodes; merges then wait on each other through Prefect, merge_lock 'prefect'). "
        "Unset: every node runs in this run's process.",
    )
    retries: int = Field(
        1, ge=0, le=10, description="Extra attempts for a node that failed, stalled or timed out."
    )
    retry_delay_s: float = Field(
        10.0, ge=0, description="Wait before the first retry; doubled for each later one."
    )
    agent_rules: dict[str, AgentRule] = Field(
        default_factory=dict,
        description='Agent or model by task risk or level, e.g. {"risk:high": {"model": '
        '"strong-model"}, "level:research": {"agent": "claude"}}. A task file\'s own '
        "agent:/model: wins over these, these over the run's agent and model.",
    )
    budget_usd: float | None = Field(
        None,
        gt=0,
        description="What the whole run may spend on agent sessions, in dollars as the agents "
        "report: once spent no new session starts (the nodes not started are skipped) and the "
        "run fails. Unset: no limit.",
    )
    budget_tokens: int | None = Field(
        None,
        gt=0,
        description="The same in tokens (in + out, as the agents report). Unset: no limit.",
    )
    budget_stop_running: bool = Field(
        False,
        description="Once the run's budget is spent, also stop the sessions running then "
        "(default: they finish, and only new ones are refused).",
    )
    only: list[str] = Field(
        default_factory=list,
        description="Run only these task ids (their dependencies must be completed or listed).",
    )
    workspace_root: str | None = Field(
        None,
        description="Folder for tgflow's clone of this origin and its worktrees "
        "(default: one per origin under ~/.cache/tgflow/workspaces).",
    )
    aar_dir: str = Field(
        "docs/aar", description="Folder on the base branch the after-action review is saved to."
    )
    aar_commit: bool = Field(
        True,
        description="Commit the after-action review to aar_dir on the base branch (it is "
        "always a run artifact).",
    )
    reset: list[str] = Field(
        default_factory=list,
        description="Start these task ids afresh from the current base: their kept branches "
        "are moved aside to a backup ref on the origin (never deleted).",
    )
    strict: bool = Field(
        False,
        description="Refuse the whole graph when any task file has a problem (default: only "
        "the tasks concerned and their descendants are held back).",
    )

    @field_validator("agent_command", mode="before")
    @classmethod
    def _split_command(cls, v: Any) -> Any:
        """Accept the command as one shell-quoted string (what people type) or a list."""
        return shlex.split(v) if isinstance(v, str) else v

    @field_validator("only", "reset", mode="before")
    @classmethod
    def _one_or_many_ids(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("aar_dir")
    @classmethod
    def _aar_inside_repo(cls, v: str) -> str:
        return _folder_inside_repo(v, "docs/aar")

    @field_validator("agent_rules")
    @classmethod
    def _rule_keys(cls, v: dict[str, AgentRule]) -> dict[str, AgentRule]:
        return _known_rule_keys(v)

    def run_budget(self) -> Budget:
        return Budget(budget_usd=self.budget_usd, budget_tokens=self.budget_tokens)

    def agent_settings(self) -> AgentSettings:
        """The run's default agent (a task's rules and frontmatter refine it per task).

        A run without an agent of its own starts only tasks that name theirs
        (``missing_settings`` refuses it otherwise), so no task keeps the preset
        ``AgentSettings`` falls back to then.
        """
        preset = {"preset": self.agent} if self.agent else {}
        return AgentSettings.model_validate(
            {
                **preset,
                "model": self.model,
                "command": self.agent_command,
                "base_url": self.agent_base_url,
                "api_key_env": self.agent_api_key_env,
            }
        )

    def missing_settings(self, tasks: Iterable[Task] | None = None) -> list[str]:
        """What this run lacks to be let loose on a repository, one line each ([]: nothing).

        Nothing picks an agent or the validation for a run: the demo's scripted agent, once
        the default, ran unchecked on a real repository and pushed a failed status to main.
        With ``tasks`` (the graph's), a run needs no agent of its own when every task it
        would start names one (its ``agent:`` or an agent rule); without them it needs one.
        """
        lines = []
        if self.agent is None and (tasks is None or any(self._needs_run_agent(t) for t in tasks)):
            lines.append(
                "no agent: name it with --agent or --agent-command 'CMD {task_id} "
                '{prompt_file}\', agent = "claude" (or "command" and agent_command) in the '
                f"repository's {CONFIG_FILE}, or the agent field of the Run form ('scripted' "
                "only runs the demo's scripts)"
            )
        if not self.validate_commands:
            lines.append(
                "no validation commands: give --validate 'CMD' (repeatable), "
                'validate_commands = ["python -m pytest -q"] in the repository\'s '
                f"{CONFIG_FILE}, or the validate_commands field of the Run form; they check "
                'the agent\'s work before it is merged (["true"] merges it unchecked)'
            )
        return lines

    def _needs_run_agent(self, task: Task) -> bool:
        """Whether this run would start ``task`` with no agent named by it or by a rule."""
        if task.status is Status.COMPLETED or (self.only and task.id not in self.only):
            return False
        keys = (f"risk:{task.risk}", f"level:{task.level}")
        rules = [self.agent_rules.get(key) for key in keys]
        return not task.agent and not any(rule and rule.agent for rule in rules)

    @model_validator(mode="after")
    def _pool_merges_through_prefect(self) -> RunConfig:
        """Nodes on other machines share no process: only Prefect's limit keeps their merges
        apart, so a pool run takes it unless told otherwise, and telling it otherwise is an
        error."""
        if self.node_pool is None:
            return self
        if not self.push:
            raise ValueError(
                f"node_pool {self.node_pool!r}: machines share only the origin, so nodes on a "
                "pool need push; drop push false or node_pool"
            )
        if self.merge_lock == "prefect":
            return self
        if "merge_lock" in self.model_fields_set:
            raise ValueError(
                f"node_pool {self.node_pool!r} runs nodes on many machines, whose merges only "
                "merge_lock 'prefect' keeps apart; drop merge_lock 'process' or node_pool"
            )
        self.merge_lock = "prefect"
        return self

    @model_validator(mode="after")
    def _command_given(self) -> RunConfig:
        if self.agent == "command" and not self.agent_command:
            raise ValueError(
                "agent 'command' needs agent_command (e.g. --agent-command "
                "'my-agent {task_id} {prompt_file}')"
            )
        return self

    @model_serializer(mode="wrap")
    def _only_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Serialise only the fields a caller set: Prefect stores a run's parameters this way,
        so a flow-run Retry re-reads the repository's file for the rest, as the run did."""
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}

    def with_file(self, repo_root: Path) -> RunConfig:
        """This config with the repository's ``.tgflow.toml`` filling what was not set.

        A field set to null counts as not set: the UI form sends null for an optional field
        left empty, which must not hide the repository's own choice (its agent, its model)."""
        from_file = read_config_file(repo_root / CONFIG_FILE)
        if not from_file:
            return self
        explicit = {
            k: v for k, v in self.model_dump(include=self.model_fields_set).items() if v is not None
        }
        try:
            return RunConfig.model_validate({**from_file, **explicit})
        except ValidationError as e:
            raise ConfigError(_describe(e, repo_root / CONFIG_FILE)) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings ({} without a file), checked against the fields they set."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    known = set(RunConfig.model_fields) - _NOT_FROM_FILE
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown or not allowed key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(known))}"
        )
    try:  # validate the file on its own so errors name the file's keys
        RunConfig.model_validate({"origin": ".", "agent_command": ["x"], **data})
    except ValidationError as e:
        raise ConfigError(_describe(e, path)) from None
    return data


def _describe(err: ValidationError, where: Path) -> str:
    return f"{where}: " + "; ".join(describe_validation_error(err))
