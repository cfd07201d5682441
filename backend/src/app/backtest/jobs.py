"""Backtests the API runs as jobs: one process per run (`trading-agent backtest --job ID`), so a long backtest
never slows the API's event loop, watched until it exits.

A job gets the server's settings in its environment (every setting, the database URL included: a server built with
explicit settings has them in no environment of its own), runs at a lower CPU priority than the API, and logs to
`job.log` in its run's folder. A run its process left unfinished (the process died, or refused before it began) is
marked failed with the log's last line; at shutdown the jobs still running are interrupted, and marked so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.backtest import store
from app.core.clock import Clock
from app.core.config import Settings
from app.db.session import sqlite_file

log = logging.getLogger(__name__)

MAX_RUNNING = 2  # jobs of this server at once (each takes a core)
JOB_NICENESS = 10  # the API keeps answering while jobs run
STOP_GRACE_S = 10.0  # after SIGINT at shutdown, before SIGKILL
SERVER_STOPPED = "interrupted: the API server stopped"


class JobStartError(RuntimeError):
    """The job's process could not be started (the run is marked failed)."""


class JobsFullError(RuntimeError):
    """As many jobs run as may at once."""


def reports_root(settings: Settings) -> Path:
    """Where runs' files go (`run-<id>/`): beside the SQLite database, else in the data folder (the secret key's)."""
    database = sqlite_file(settings.database_url)
    base = database.parent if database is not None else Path(settings.secret_key_file).parent
    return base / "backtests"


def settings_env(settings: Settings) -> dict[str, str]:
    """This process's environment with every setting as `settings` has it (None: unset)."""
    env = dict(os.environ)
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        key = name.upper()
        if value is None:
            env.pop(key, None)
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, list):
            env[key] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        else:
            env[key] = str(value)
    return env


@dataclass
class _Job:
    process: asyncio.subprocess.Process
    watcher: asyncio.Task[None]


class BacktestJobs:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        wall_clock: Clock,
        *,
        max_running: int = MAX_RUNNING,
    ) -> None:
        self.sessions = sessions
        self.wall_clock = wall_clock
        self.max_running = max_running
        self.root = reports_root(settings)
        self._env = settings_env(settings)
        self._jobs: dict[int, _Job] = {}
        self._starting = 0
        self._closing = False
        self.render_lock = asyncio.Lock()  # reports drawn one at a time (matplotlib is slow and memory-hungry)

    @property
    def running(self) -> int:
        return len(self._jobs)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Room for one more job while it is queued and started; JobsFullError when there is none."""
        if self._closing or len(self._jobs) + self._starting >= self.max_running:
            raise JobsFullError(
                f"{len(self._jobs) + self._starting} backtests are running, as many as may at once on this server; "
                "start this one when one of them is done"
            )
        self._starting += 1
        try:
            yield
        finally:
            self._starting -= 1

    def folder(self, run_id: int) -> Path:
        return self.root / f"run-{run_id}"

    def command(self, run_id: int) -> list[str]:
        return [sys.executable, "-m", "app.cli", "backtest", "--job", str(run_id), "--out", str(self.root)]

    async def start(self, run_id: int) -> int:
        """Start the queued run's process; its pid. JobStartError (the run marked failed) when it cannot start."""
        folder = self.folder(run_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / "job.log").open("wb") as output:
                process = await asyncio.create_subprocess_exec(
                    *self.command(run_id),
                    env=self._env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
        except OSError as exc:
            reason = f"the job process could not be started: {exc}"
            await store.fail_unfinished(self.sessions, [run_id], reason, now=self.wall_clock.now())
            raise JobStartError(reason) from exc
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, process.pid, JOB_NICENESS)
        await store.set_pid(self.sessions, run_id, process.pid, now=self.wall_clock.now())
        watcher = asyncio.create_task(self._watch(run_id, process), name=f"backtest-job-{run_id}")
        self._jobs[run_id] = _Job(process, watcher)
        return process.pid

    async def _watch(self, run_id: int, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._jobs.pop(run_id, None)
        if self._closing:
            reason = SERVER_STOPPED
        else:
            last = self._last_line(run_id)
            reason = f"the job process exited with code {code}" + (f": {last}" if last else "")
        try:
            failed = await store.fail_unfinished(self.sessions, [run_id], reason, now=self.wall_clock.now())
        except Exception:
            log.exception("could not mark backtest %s failed", run_id)
            return
        if failed:
            log.warning("backtest %s failed: %s", run_id, reason)

    def _last_line(self, run_id: int) -> str:
        try:
            with (self.folder(run_id) / "job.log").open("rb") as output:
                output.seek(0, os.SEEK_END)
                output.seek(max(0, output.tell() - 4096))
                tail = output.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return lines[-1][:500] if lines else ""

    async def close(self) -> None:
        """Interrupt the jobs still running (SIGINT: a job marks its run failed and cleans up; SIGKILL after
        `STOP_GRACE_S`) and wait for their watchers, which mark what is left unfinished."""
        self._closing = True
        jobs = list(self._jobs.values())
        for job in jobs:
            with contextlib.suppress(ProcessLookupError):
                job.process.send_signal(signal.SIGINT)
        if not jobs:
            return
        _, pending = await asyncio.wait([job.watcher for job in jobs], timeout=STOP_GRACE_S)
        for job in jobs:
            if job.watcher in pending:
                with contextlib.suppress(ProcessLookupError):
                    job.process.kill()
        if pending:
            await asyncio.wait(pending, timeout=STOP_GRACE_S)
