"""Reading agents' output into outcomes, and choosing an agent per task (no CLI needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks_lib.agents.aider import Aider
from tasks_lib.agents.base import Outcome
from tasks_lib.agents.claude import ClaudeCode
from tasks_lib.agents.opencode import OpenCodeRun
from tasks_lib.agents.settings import (
    AgentRule,
    AgentSettings,
    AgentSettingsError,
    settings_for_task,
)
from tasks_lib.agents.tally import Tally
from tasks_lib.graph.taskfile import parse_task


def tally_of(preset, lines: list[str]) -> Tally:
    tally = Tally()
    for line in lines:
        preset.parse(line, tally)
    return tally


def test_aider_auth_error_is_a_failure_though_aider_exits_0():
    lines = [
        "Aider v0.86.2",
        "litellm.AuthenticationError: AuthenticationError: OpenAIException - invalid key",
        "The API provider is not able to authenticate you. Check your API key.",
    ]
    outcome, reason = tally_of(Aider(AgentSettings(preset="aider")), lines).verdict("aider")
    assert outcome is Outcome.FAILED
    assert "invalid key" in reason or "authenticate" in reason


def test_aider_tokens_and_cost_line_is_read_as_a_finished_turn():
    line = "Tokens: 2.3k sent, 120 received. Cost: $0.0012 message, $0.0040 session."
    tally = tally_of(Aider(AgentSettings(preset="aider")), ["Applied edit to a.py", line])
    assert tally.verdict("aider") == (Outcome.SUCCEEDED, "")
    assert (tally.tokens_in, tally.tokens_out, tally.cost_usd) == (2300, 120, 0.0012)


def test_aider_retrying_provider_is_cut_after_the_cap():
    preset = Aider(AgentSettings(preset="aider", max_provider_retries=1))
    tally = tally_of(preset, ["Retrying in 0.2 seconds...", "Retrying in 0.5 seconds..."])
    assert preset.should_stop(tally)


def test_opencode_run_stream_errors_count_as_provider_retries_with_the_message():
    preset = OpenCodeRun(AgentSettings(preset="opencode", max_provider_retries=1))
    line = (
        'timestamp=x level=ERROR message="stream error" providerID=fake '
        'error.error="AI_APICallError: quota \\"exceeded\\""'
    )
    tally = tally_of(preset, [line, line])
    assert preset.should_stop(tally)
    assert tally.error == 'provider error, retried 2x: AI_APICallError: quota "exceeded"'


def test_claude_result_with_denials_fails_naming_the_tools():
    result = (
        '{"type":"result","subtype":"success","is_error":false,"result":"done",'
        '"permission_denials":[{"tool_name":"Bash","tool_input":{}}],'
        '"usage":{"input_tokens":5,"output_tokens":2},"total_cost_usd":0.01}'
    )
    tally = tally_of(ClaudeCode(AgentSettings(preset="claude")), [result])
    assert tally.verdict("claude") == (Outcome.FAILED, "claude: permission denied for Bash")
    assert (tally.tokens_in, tally.cost_usd) == (5, 0.01)


def task(tmp_path: Path, meta: str):
    text = f"---\nid: t1\nname: T\n{meta}---\n\n## Description\n\nx\n"
    parsed, problems, _ = parse_task(text, tmp_path / "tasks" / "t1.md")
    assert parsed is not None, problems
    return parsed


def test_task_frontmatter_wins_over_rules_and_the_run_default(tmp_path: Path):
    default = AgentSettings(preset="opencode", model="small", base_url="http://x/v1")
    rules = {"risk:high": AgentRule(model="big"), "level:research": AgentRule(agent="claude")}

    assert settings_for_task(default, task(tmp_path, ""), rules) is default
    high = settings_for_task(default, task(tmp_path, "risk: high\n"), rules)
    assert (high.preset, high.model, high.base_url) == ("opencode", "big", "http://x/v1")
    research = settings_for_task(default, task(tmp_path, "level: research\n"), rules)
    assert (research.preset, research.model) == ("claude", "small")
    own = settings_for_task(default, task(tmp_path, "risk: high\nagent: codex\nmodel: m\n"), rules)
    assert (own.preset, own.model) == ("codex", "m")


def test_unknown_agent_in_a_task_file_says_where_and_what_is_allowed(tmp_path: Path):
    with pytest.raises(AgentSettingsError, match=r"t1\.md: .*task 't1'.*one of scripted, command"):
        settings_for_task(AgentSettings(), task(tmp_path, "agent: gpt-agent\n"))


def test_missing_api_key_variable_is_named_and_the_key_never_shown(monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ValueError, match="MY_KEY"):
        AgentSettings(preset="claude", api_key_env="MY_KEY").api_key()
    monkeypatch.setenv("MY_KEY", "s3cret")
    settings = AgentSettings(preset="claude", api_key_env="MY_KEY")
    assert settings.api_key() == "s3cret"
    assert "s3cret" not in settings.model_dump_json()


def test_command_preset_needs_its_argv():
    with pytest.raises(ValueError, match="needs 'command'"):
        AgentSettings(preset="command")
