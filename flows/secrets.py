"""Agent API keys from Prefect Secret blocks, for workers whose environment lacks them.

An agent reads its key from the environment variable its settings name (``api_key_env``).
On a worker started without that variable, the key can live in the Prefect server instead,
as a Secret block named ``tgflow-<variable, lower case, - for _>`` (for ``OPENAI_API_KEY``:
``tgflow-openai-api-key``). The flow-run process copies it into its own environment, which
the agent processes inherit; only variable names are ever returned or logged, never values.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prefect.blocks.system import Secret

BLOCK_PREFIX = "tgflow-"


def block_name(env_name: str) -> str:
    return BLOCK_PREFIX + env_name.lower().replace("_", "-")


def export_secrets(env_names: Iterable[str]) -> list[str]:
    """Set each unset variable from its Secret block, if one exists; the names set."""
    loaded: list[str] = []
    for name in env_names:
        if os.environ.get(name):
            continue  # the worker's own environment wins
        try:
            secret = Secret.load(block_name(name))
        except ValueError:  # no such block: the agent reports the missing variable itself
            continue
        assert isinstance(secret, Secret)  # called from sync code: the block, not a coroutine
        os.environ[name] = str(secret.get())
        loaded.append(name)
    return loaded
