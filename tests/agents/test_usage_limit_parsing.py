"""A provider's usage limit read from each CLI's own output (the formats they print, found in
their issue trackers and by running OpenCode against the fake model), and the session it
ends; no CLI needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tasks_lib.agents.aider import Aider
from tasks_lib.agents.claude import ClaudeCode
from tasks_lib.agents.codex import Codex
from tasks_lib.agents.limits import reset_time, usage_limit
from tasks_lib.agents.opencode import OpenCodeRun
from tasks_lib.agents.settings import AgentSettings
from tasks_lib.agents.tally import Tally

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def tally_of(preset, lines: list[str]) -> Tally:
    tally = Tally()
    for line in lines:
        preset.parse(line, tally)
    return tally


def test_opencode_logs_the_providers_429_message_as_a_stream_error_and_is_cut_at_once():
    """As ``opencode run --print-logs`` printed it against the fake model's 429 (it would
    itself wait for Retry-After and retry, holding the session)."""
    preset = OpenCodeRun(AgentSettings(preset="opencode", max_provider_retries=5))
    line = (
        'timestamp=2026-12-02T06:54:13.482Z level=ERROR run=c87b8724 message="stream error" '
        "providerID=tgflow modelID=fake-model session.id=ses_x small=false agent=build "
        'mode=primary error.error="AI_APICallError: usage limit reached; resets at 1796194473"'
    )
    tally = tally_of(preset, [line])
    assert tally.limit is not None
    assert tally.limit.reset_at == datetime.fromtimestamp(1796194473, UTC)
    assert preset.should_stop(tally)  # the first one, not after max_provider_retries


def test_opencode_other_provider_errors_are_no_usage_limit():
    preset = OpenCodeRun(AgentSettings(preset="opencode", max_provider_retries=5))
    line = 'message="stream error" error.error="AI_APICallError: overloaded"'
    tally = tally_of(preset, [line])
    assert tally.limit is None and not preset.should_stop(tally)


def test_claude_codes_plan_limit_result_carries_the_reset_as_epoch_seconds():
    result = {
        "type": "result", "subtype": "success", "is_error": True,
        "result": "Claude AI usage limit reached|1755615600",
    }  # fmt: skip
    tally = tally_of(ClaudeCode(AgentSettings(preset="claude")), [json.dumps(result)])
    assert tally.limit is not None
    assert tally.limit.reset_at == datetime(2025, 8, 19, 15, 0, tzinfo=UTC)


def test_claude_codes_rejected_request_carries_the_providers_message_and_its_reset():
    """As Claude Code printed it against the fake model's 429."""
    said = "API Error: Request rejected (429) · usage limit reached; resets at 1796195500"
    result = {"type": "result", "subtype": "success", "is_error": True, "result": said}
    tally = tally_of(ClaudeCode(AgentSettings(preset="claude")), [json.dumps(result)])
    assert tally.limit is not None
    assert tally.limit.reset_at == datetime.fromtimestamp(1796195500, UTC)


def test_claude_codes_api_429_is_a_limit_without_a_reset():
    said = (
        'API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"This '
        "request would exceed your account's rate limit. Please try again later.\"}}"
    )
    result = {"type": "result", "subtype": "success", "is_error": True, "result": said}
    tally = tally_of(ClaudeCode(AgentSettings(preset="claude")), [json.dumps(result)])
    assert tally.limit is not None and tally.limit.reset_at is None


def test_codex_usage_limit_says_the_local_clock_time_to_try_again_at():
    """As Codex printed the fake model's ``usage_limit_reached`` (the reset to the minute, in
    the machine's time zone): the reset is the end of that minute, today or else tomorrow."""
    said = "You’ve hit your usage limit. Try again at 7:11 AM."
    now = datetime(2026, 12, 2, 7, 10, 30).astimezone()
    tally = tally_of(
        Codex(AgentSettings(preset="codex")), [json.dumps({"type": "error", "message": said})]
    )
    assert tally.limit is not None
    assert reset_time(tally.limit.message, now) == now.replace(minute=12, second=0)
    tomorrow = now.replace(minute=12, second=0) + timedelta(days=1)
    assert reset_time(said, now.replace(hour=19)) == tomorrow  # past 7:12 AM today
    assert reset_time("Try again at 7:11 PM.", now) == now.replace(hour=19, minute=12, second=0)


def test_codex_usage_limit_says_when_to_try_again():
    said = (
        "You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) "
        "or try again in 2 hours 5 minutes."
    )
    tally = tally_of(
        Codex(AgentSettings(preset="codex")), [json.dumps({"type": "error", "message": said})]
    )
    assert tally.limit is not None and tally.limit.reset_at is not None
    assert tally.error == f"codex: {said}"


def test_aiders_litellm_rate_limit_error_is_a_limit():
    line = "litellm.RateLimitError: RateLimitError: OpenAIException - Error code: 429"
    tally = tally_of(Aider(AgentSettings(preset="aider")), [line])
    assert tally.limit is not None


def test_a_reset_is_read_as_an_epoch_an_iso_time_or_a_delay_from_now():
    assert reset_time("resets_at: 1796194473") == datetime.fromtimestamp(1796194473, UTC)
    assert reset_time("limit resets at 2026-12-02T07:30:00Z") == NOW + timedelta(minutes=90)
    openai = "Rate limit reached for gpt-4o on tokens per min (TPM). Please try again in 6.5s."
    assert reset_time(openai, NOW) == NOW + timedelta(seconds=6.5)
    assert reset_time("try again in 1 day 3 hours", NOW) == NOW + timedelta(hours=27)
    assert reset_time("This request would exceed your account's rate limit.", NOW) is None


def test_errors_that_are_not_limits_are_not_read_as_one():
    for said in ("invalid api key", "context length exceeded", "model not found"):
        assert usage_limit(said) is None


def test_a_429_for_billing_is_no_limit_to_wait_for():
    """OpenAI answers an unpaid quota with 429 too; no reset ends it, so the node fails."""
    said = (
        "429 You exceeded your current quota, please check your plan and billing details. "
        "(insufficient_quota)"
    )
    assert usage_limit(said) is None
