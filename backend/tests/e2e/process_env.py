"""The environment of a `trading-agent` process a test starts on its database: the test's admin key and secret key
file, the accelerated clock, and, with a fake OpenRouter, that fake as the model (the caller's own keys left out)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_KEY
from tests.fakes.openrouter_server import FakeOpenRouter

FAKE_KEY = "sk-or-v1-kill-test-0123456789abcdef"


def agent_env(database_url: str, workdir: Path, model: FakeOpenRouter | None, **settings: str) -> dict[str, str]:
    """`settings` (e.g. LOG_LEVEL="INFO") come last and win."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "LLM_BASE_URL", "ASSETS")}
    if model is not None:
        env.update({"OPENROUTER_API_KEY": FAKE_KEY, "OPENROUTER_BASE_URL": model.base_url, "LLM_MODEL": "openai/gpt-5"})
    env.update(
        {
            "DATABASE_URL": database_url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "SIM_SPEED": "3000",
            "LOG_LEVEL": "WARNING",
            "SECRET_KEY_FILE": str(workdir / "secret.key"),
            "SHUTDOWN_GRACE_S": "20",
            **settings,
        }
    )
    return env


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within `grace_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
