"""A real run names its agent and its validation: without them nothing runs and main is left
as it was (issue 10: the nightly deployment, given only an origin, ran the demo's scripted
agent without validation and pushed a `failed` status to main)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from helpers.gitrepos import git, make_origin, task_md

from tasks_lib.run.config import RunConfig
from tgflow_cli import run_command
from tgflow_cli.main import main

# A task whose script fails: under the old default the scripted agent ran it, the node
# failed, and its `failed` status was committed to main and pushed.
FILES = {"tasks/a.md": task_md("a", steps=[{"fail": "boom"}])}
SETTINGS = 'agent = "scripted"\nvalidate_commands = ["true"]\n'


def snapshot(origin: Path) -> tuple[str, str]:
    return git(origin, "rev-parse", "main"), git(origin, "ls-tree", "-r", "main")


@pytest.fixture
def no_prefect(monkeypatch: pytest.MonkeyPatch) -> list[RunConfig]:
    """Stands in for the flow: records the configs that got as far as starting Prefect."""
    started: list[RunConfig] = []

    def run(config: RunConfig, console: object, **options: object) -> tuple[object, bool]:
        started.append(config)
        return object(), True  # a record and success, as a run where every node completed

    monkeypatch.setattr(run_command, "run_with_progress", run)
    return started


@pytest.mark.prefect
def test_a_nightly_style_run_with_only_an_origin_changes_nothing_on_main(
    prefect_server: str, tmp_path: Path
) -> None:
    from flows.graph_flow import tgflow_run

    origin = make_origin(tmp_path, FILES)
    before = snapshot(origin)

    state = tgflow_run(
        RunConfig(origin=str(origin), workspace_root=str(tmp_path / "ws")), return_state=True
    )

    assert state.is_failed()
    message = state.message or ""
    assert "nothing was run" in message
    assert "no agent" in message and "--agent" in message and ".tgflow.toml" in message
    assert "no validation commands" in message and "validate_commands" in message
    assert snapshot(origin) == before


def test_tgflow_run_without_an_agent_exits_2_before_prefect_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_prefect: list[RunConfig]
) -> None:
    origin = make_origin(tmp_path, FILES)
    before = snapshot(origin)

    code = main(
        ["run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"), "--validate", "true"]
    )

    err = capsys.readouterr().err
    assert code == 2
    assert no_prefect == []
    assert "no agent" in err and "--agent" in err and "agent = " in err and "form" in err
    assert "validation" not in err  # it was given
    assert snapshot(origin) == before


def test_tgflow_run_without_validation_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_prefect: list[RunConfig]
) -> None:
    origin = make_origin(tmp_path, FILES)

    code = main(["run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"),
                 "--agent", "scripted"])  # fmt: skip

    err = capsys.readouterr().err
    assert code == 2 and no_prefect == []
    assert "no validation commands" in err and "--validate" in err
    assert "validate_commands = " in err


def test_the_repository_file_can_name_the_agent_and_the_validation(
    tmp_path: Path, no_prefect: list[RunConfig]
) -> None:
    origin = make_origin(tmp_path, {**FILES, ".tgflow.toml": SETTINGS})

    assert main(["run", "--origin", str(origin), "--workspace", str(tmp_path / "ws")]) == 0
    assert len(no_prefect) == 1


def test_tasks_that_name_their_own_agent_need_no_run_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_prefect: list[RunConfig]
) -> None:
    own = task_md("b").replace("status: pending", "status: pending\nagent: scripted")
    origin = make_origin(tmp_path, {"tasks/b.md": own})
    argv = [
        "run",
        "--origin",
        str(origin),
        "--workspace",
        str(tmp_path / "ws"),
        "--validate",
        "true",
    ]

    assert main(argv) == 0

    # one task without an agent of its own is enough to need the run's agent
    origin2 = make_origin(tmp_path, {**FILES, "tasks/b.md": own}, name="other.git")
    argv[2] = str(origin2)
    argv[4] = str(tmp_path / "ws2")
    assert main(argv) == 2
    assert "no agent" in capsys.readouterr().err


def test_missing_settings_names_every_place_to_set_them() -> None:
    lines = RunConfig(origin="o").missing_settings()
    assert len(lines) == 2
    agent, validation = lines
    for where in ("--agent", "--agent-command", 'agent = "', ".tgflow.toml", "form"):
        assert where in agent
    for where in ("--validate", "validate_commands = [", ".tgflow.toml", "form"):
        assert where in validation
    assert (
        RunConfig(origin="o", agent="scripted", validate_commands=["true"]).missing_settings() == []
    )


def test_the_agent_is_not_scripted_by_default() -> None:
    assert RunConfig(origin="o").agent is None
    assert RunConfig(origin="o", agent="scripted").agent == "scripted"


def test_the_form_accepts_the_agent_command_as_a_string_or_a_list() -> None:
    schema = RunConfig.model_json_schema()
    for command in ("my-agent --task {task_id} '{prompt_file}'", ["my-agent", "{task_id}"], None):
        jsonschema.validate({"origin": "o", "agent": "command", "agent_command": command}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"origin": "o", "agent_command": 3}, schema)
    config = RunConfig.model_validate(
        {"origin": "o", "agent": "command", "agent_command": "my-agent --task {task_id} 'a b'"}
    )
    assert config.agent_command == ["my-agent", "--task", "{task_id}", "a b"]


def test_the_flow_parameter_schema_accepts_a_string_agent_command() -> None:
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    from flows.graph_flow import tgflow_run

    schema = parameter_schema(tgflow_run).model_dump_for_openapi()
    params = {"config": {"origin": "o", "agent": "command", "agent_command": "my-agent {task_id}"}}
    validate(params, schema, raise_on_error=True, ignore_required=False)


@pytest.mark.prefect
def test_a_deployment_run_with_a_string_agent_command_is_accepted(prefect_server: str) -> None:
    from helpers.prefect_fixtures import _client_call
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    from flows.graph_flow import tgflow_run

    schema = parameter_schema(tgflow_run).model_dump_for_openapi()
    params = {"config": {"origin": "o", "agent": "command", "agent_command": "my-agent {task_id}"}}

    async def submit(client):  # the server checks the parameters as the UI's Run form does
        flow_id = await client.create_flow_from_name("tgflow")
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name="safe-defaults-string-command",
            entrypoint="flows/graph_flow.py:tgflow_run",
            parameter_openapi_schema=schema,
            enforce_parameter_schema=True,
        )
        return await client.create_flow_run_from_deployment(deployment_id, parameters=params)

    flow_run = _client_call(submit)
    assert flow_run.parameters == params
    validate(flow_run.parameters, schema, raise_on_error=True, ignore_required=False)
    started = tgflow_run.validate_parameters(flow_run.parameters)["config"]
    assert started.agent_command == ["my-agent", "{task_id}"]
