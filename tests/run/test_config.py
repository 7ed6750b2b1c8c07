"""RunConfig: explicit parameters beat the repository's .tgflow.toml, which beats defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks_lib.run.config import ConfigError, RunConfig


def test_file_fills_only_what_was_not_given(tmp_path: Path) -> None:
    (tmp_path / ".tgflow.toml").write_text(
        'max_parallel = 4\nvalidate_commands = ["make test"]\nretries = 3\n'
    )
    config = RunConfig(origin="o", retries=1).with_file(tmp_path)
    assert config.max_parallel == 4  # from the file
    assert config.validate_commands == ["make test"]
    assert config.retries == 1  # given explicitly, even though it is the default
    assert config.agent_timeout_s == 1800  # built-in default


def test_a_field_left_empty_in_the_form_lets_the_file_decide(tmp_path: Path) -> None:
    """The UI form sends null for an empty optional field: the repository's choice stands."""
    (tmp_path / ".tgflow.toml").write_text('agent = "claude"\nmodel = "m"\n')
    form = RunConfig.model_validate({"origin": "o", "agent": None, "model": None, "retries": 0})
    config = form.with_file(tmp_path)
    assert (config.agent, config.model, config.retries) == ("claude", "m", 0)


def test_no_file_changes_nothing(tmp_path: Path) -> None:
    config = RunConfig(origin="o")
    assert config.with_file(tmp_path) is config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_parallel = 0", "max_parallel"),
        ("paralel = 3", "unknown or not allowed key(s) paralel"),
        ('origin = "elsewhere"', "not allowed key(s) origin"),
        ("max_parallel = [", "not valid TOML"),
    ],
)
def test_bad_file_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / ".tgflow.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"\.tgflow\.toml") as err:
        RunConfig(origin="o").with_file(tmp_path)
    assert message in str(err.value)


def test_command_agent_takes_a_shell_string_and_needs_it() -> None:
    config = RunConfig(origin="o", agent="command", agent_command="my-agent --id '{task_id}' x")
    assert config.agent_command == ["my-agent", "--id", "{task_id}", "x"]
    with pytest.raises(ValidationError, match="needs agent_command"):
        RunConfig(origin="o", agent="command")
    with pytest.raises(ValidationError):
        RunConfig(origin="o", agent="gpt-agent")  # not a preset


def test_a_stored_config_holds_only_what_was_given(tmp_path: Path) -> None:
    """Prefect stores the parameters; a flow-run Retry must re-apply the file the same way."""
    from fastapi.encoders import jsonable_encoder  # what Prefect serialises parameters with

    stored = jsonable_encoder(RunConfig(origin="o", retries=2))
    assert stored == {"origin": "o", "retries": 2}
    (tmp_path / ".tgflow.toml").write_text("max_parallel = 5\nretries = 0\n")
    again = RunConfig.model_validate(stored).with_file(tmp_path)
    assert (again.max_parallel, again.retries) == (5, 2)


@pytest.mark.parametrize("folder", ["/etc", "../elsewhere", ""])
def test_folders_must_be_inside_the_repository(folder: str) -> None:
    with pytest.raises(ValidationError, match="inside the repository"):
        RunConfig(origin="o", aar_dir=folder)


def test_agent_rules_by_risk_and_level_come_from_the_file_and_yield_to_the_task(
    tmp_path: Path,
) -> None:
    from tasks_lib.agents.settings import AgentSettings, settings_for_task
    from tasks_lib.graph.taskfile import parse_task

    (tmp_path / ".tgflow.toml").write_text(
        '[agent_rules."risk:high"]\nmodel = "strong"\n'
        '[agent_rules."level:research"]\nagent = "claude"\n'
    )
    config = RunConfig(origin="o", agent="opencode", model="small").with_file(tmp_path)
    default = AgentSettings(preset=config.agent, model=config.model)

    def chosen(meta: str) -> tuple[str, str | None]:
        text = f"---\nid: t\nname: T\n{meta}---\n"
        task, problems, _ = parse_task(text, tmp_path / "tasks" / "t.md")
        assert task is not None, problems
        s = settings_for_task(default, task, config.agent_rules)
        return s.preset, s.model

    assert chosen("") == ("opencode", "small")
    assert chosen("risk: high\n") == ("opencode", "strong")
    assert chosen("level: research\n") == ("claude", "small")
    assert chosen("risk: high\nmodel: mine\n") == ("opencode", "mine")


def test_an_agent_rule_for_an_unknown_risk_is_named(tmp_path: Path) -> None:
    (tmp_path / ".tgflow.toml").write_text('[agent_rules."risk:extreme"]\nmodel = "x"\n')
    with pytest.raises(ConfigError, match=r"\.tgflow\.toml.*unknown rule key\(s\) risk:extreme"):
        RunConfig(origin="o").with_file(tmp_path)


def test_a_node_pool_run_merges_through_prefect_and_pushes(tmp_path: Path) -> None:
    """Machines share only the origin: a pool run takes Prefect's merge limit, even over the
    repository's file, and refuses what cannot work across machines."""
    (tmp_path / ".tgflow.toml").write_text('merge_lock = "process"\n')
    config = RunConfig(origin="o", node_pool="tgflow-nodes")
    assert config.merge_lock == "prefect"
    assert config.with_file(tmp_path).merge_lock == "prefect"
    assert RunConfig.model_validate(config.model_dump()).merge_lock == "prefect"  # as sent
    with pytest.raises(ValidationError, match="merge_lock 'prefect' keeps apart"):
        RunConfig(origin="o", node_pool="tgflow-nodes", merge_lock="process")
    with pytest.raises(ValidationError, match="need push"):
        RunConfig(origin="o", node_pool="tgflow-nodes", push=False)
    with pytest.raises(ValidationError, match="node_pool"):
        RunConfig(origin="o", node_pool="no spaces")
    assert RunConfig(origin="o").merge_lock == "process"
