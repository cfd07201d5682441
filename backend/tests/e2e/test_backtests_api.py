"""`/api/v1/backtests` over a real socket: a backtest started as a job (a real `trading-agent backtest --job`
process) answers at once, its progress is followed to the end, its report is served as JSON, a self-contained page
and a PNG; the job's trades are those of the same backtest run in-process. Every refusal says why and stores
nothing; admin keys only; a job that fails, or whose process is gone, is shown failed with the reason."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from app.backtest import store
from app.backtest.jobs import reports_root
from app.backtest.results import BacktestConfig
from app.backtest.runner import Backtester, config_json
from app.bootstrap import Agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.schemas.backtests import Timeframe
from app.services.llm.strategy_checks import VENUE_TIMEFRAMES
from tests.conftest import ADMIN_KEY
from tests.e2e.server import serve
from tests.e2e.test_api import simulated

pytestmark = pytest.mark.db

ADMIN = {"X-API-Key": ADMIN_KEY}
URL = "/api/v1/backtests"
# Two days of 1h candles: 49 cycles, a few seconds of the real engine.
BODY: dict[str, Any] = {
    "assets": ["BTC", "ETH"],
    "interval": "1h",
    "long_interval": "4h",
    "from": "2025-03-01",
    "to": "2025-03-03",
    "strategy": "aggressive",
    "model": "baseline",
    "data": "simulated",
    "seed": 5,
}
CONFIG = BacktestConfig(
    assets=("BTC", "ETH"),
    interval="1h",
    long_interval="4h",
    start=datetime(2025, 3, 1, tzinfo=UTC),
    end=datetime(2025, 3, 3, tzinfo=UTC),
    strategy="aggressive",
    seed=5,
)
HANG_GUARD_S = 180  # a job that has not ended by then is a failure, not a slow machine
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Api:
    def __init__(self, client: httpx.AsyncClient, app: FastAPI, settings: Settings) -> None:
        self.client = client
        self.app = app
        self.agent: Agent = app.state.agent
        self.settings = settings

    async def account_key(self) -> dict[str, str]:
        created = await self.client.post("/api/v1/accounts", json={"name": "viewer"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        key = await self.client.post(f"/api/v1/accounts/{created.json()['id']}/keys", headers=ADMIN)
        assert key.status_code == 201, key.text
        return {"X-API-Key": key.json()["key"]}

    async def runs(self) -> int:
        async with self.agent.sessions() as session:
            return await session.scalar(select(func.count()).select_from(models.BacktestRun)) or 0

    def job_log(self, run_id: int) -> str:
        path = reports_root(self.settings) / f"run-{run_id}" / "job.log"
        return path.read_text() if path.exists() else "(no job log)"

    async def until_ended(self, run_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Poll the run until it is no longer queued or running: (its last view, every view seen)."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            answer = await self.client.get(f"{URL}/{run_id}", headers=ADMIN)
            assert answer.status_code == 200, answer.text
            seen.append(answer.json())
            if seen[-1]["status"] not in ("queued", "running"):
                return seen[-1], seen
            await asyncio.sleep(0.2)
        raise AssertionError(f"backtest {run_id} still {seen[-1]['status']}:\n{self.job_log(run_id)[-3000:]}")


@asynccontextmanager
async def running(settings: Settings, clock: ManualClock) -> AsyncIterator[Api]:
    app = create_app(settings, agent_factory=simulated(clock))
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        yield Api(client, app, settings)


@pytest.fixture
async def api(settings: Settings, clock: ManualClock) -> AsyncIterator[Api]:
    async with running(settings, clock) as served:
        yield served


async def test_a_backtest_job_runs_to_its_report(api: Api, tmp_path: Path) -> None:
    created = await api.client.post(URL, json=BODY, headers=ADMIN)
    assert created.status_code == 202, created.text
    run_id = created.json()["id"]
    links = {
        "self": f"{URL}/{run_id}",
        "report": f"{URL}/{run_id}/report",
        "report_html": f"{URL}/{run_id}/report.html",
        "report_png": f"{URL}/{run_id}/report.png",
    }
    assert created.json() == {"id": run_id, "status": "queued", "links": links}
    assert created.headers["location"] == links["self"]

    view, seen = await api.until_ended(run_id)
    assert view["status"] == "done", f"{view['error']}\n{api.job_log(run_id)[-3000:]}"
    done = [v["cycles_done"] for v in seen]
    assert done == sorted(done), "progress never goes back"
    assert all(v["cycles_total"] in (0, 49) and 0 <= v["percent"] <= 100 for v in seen)
    assert (view["cycles_done"], view["cycles_total"], view["percent"], view["eta_s"]) == (49, 49, 100.0, None)
    assert view["parts"] == [] and view["error"] is None and view["spent_usd"] == 0.0
    assert view["estimated_cost_usd"] == 0.0
    assert view["config"]["assets"] == ["BTC", "ETH"] and view["config"]["with_baseline"] is True
    assert view["summary"]["cycles"] == 49 and view["summary"]["fingerprints"]["trades"] == view["trade_fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{64}", view["data_fingerprint"]) and view["links"] == links

    # the job's trades are those of the same backtest in this process
    loaded = await store.load_result(api.agent.sessions, run_id)
    again = await Backtester(api.settings, api.agent.sessions, workspace_dir=str(tmp_path)).run(loaded.config)
    assert again.result.trade_fingerprint == view["trade_fingerprint"] == loaded.trade_fingerprint
    assert again.result.fills == loaded.fills and again.result.fills, "it traded"

    listed = await api.client.get(URL, headers=ADMIN)
    assert listed.status_code == 200
    assert [v["id"] for v in listed.json()] == [again.run_id, run_id]  # newest first
    assert listed.json()[1]["summary"] is None and listed.json()[1]["status"] == "done"

    report = await api.client.get(links["report"], headers=ADMIN)
    assert report.status_code == 200 and report.json() == view["summary"]

    png = await api.client.get(links["report_png"], headers=ADMIN)
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png" and png.content.startswith(PNG_SIGNATURE)
    assert (await api.client.get(links["report_png"], headers=ADMIN)).content == png.content  # kept on disk

    page = await api.client.get(links["report_html"], headers=ADMIN)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    text = page.text
    assert text.startswith("<!DOCTYPE html>") and "data:image/png;base64," in text
    addresses = re.findall(r"(?:src|href|action)\s*=\s*[\"']?([^\"'\s>]*)", text, flags=re.IGNORECASE)
    assert addresses and all(a.startswith("data:") for a in addresses), "it loads nothing from elsewhere"
    assert not re.search(r"https?://|url\(|@import", text, flags=re.IGNORECASE), "no external address"
    files = sorted(p.suffix for p in (reports_root(api.settings) / f"run-{run_id}").glob("report-*"))
    assert files == [".html", ".png"]

    async with api.agent.sessions() as session:
        details = (await session.scalars(select(models.AuditEntry.detail).where(models.AuditEntry.path == URL))).all()
    assert any(d and d.startswith(f"backtest {run_id} started: baseline / aggressive on BTC,ETH 1h") for d in details)


async def test_a_run_with_parts_shows_the_progress_of_all(api: Api, tmp_path: Path) -> None:
    """The masked-dates run beside the strategy counts in the cycles and is listed; a queued run shows 0% and has
    no report yet."""
    config = replace(CONFIG, mask_dates=True)
    ran = await Backtester(api.settings, api.agent.sessions, workspace_dir=str(tmp_path)).run(config)
    view = (await api.client.get(f"{URL}/{ran.run_id}", headers=ADMIN)).json()
    assert (view["status"], view["cycles_done"], view["cycles_total"], view["percent"]) == ("done", 98, 98, 100.0)
    assert [(p["label"], p["status"], p["cycles_done"]) for p in view["parts"]] == [("dates masked", "done", 49)]
    assert view["summary"]["masked"] is not None
    parts = (await api.client.get(URL, params={"parent_id": ran.run_id}, headers=ADMIN)).json()
    assert [p["id"] for p in parts] == [view["parts"][0]["id"]]
    assert [v["id"] for v in (await api.client.get(URL, headers=ADMIN)).json()] == [ran.run_id]

    queued = await store.create_queued(
        api.agent.sessions,
        config_json(replace(config, model="openai/gpt-5", mask_dates=True)),
        now=api.agent.wall_clock.now(),
        cycles_total=49,
    )
    waiting = (await api.client.get(f"{URL}/{queued}", headers=ADMIN)).json()
    # the strategy, the masked dates and the baseline (a model other than it): 3 x 49 cycles to come
    assert (waiting["status"], waiting["cycles_done"], waiting["cycles_total"], waiting["percent"]) == (
        "queued",
        0,
        147,
        0.0,
    )
    assert (waiting["eta_s"], waiting["summary"], waiting["parts"]) == (None, None, [])
    for link in ("report", "report_html", "report_png"):
        refused = await api.client.get(waiting["links"][link], headers=ADMIN)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"].startswith(f"backtest {queued} is queued")


async def test_a_job_that_fails_says_why(api: Api) -> None:
    """A period the simulated history cannot decide on (it starts in 2020, with weeks of warm-up): the job refuses
    before it begins, and the run shows the reason it printed."""
    created = await api.client.post(URL, json={**BODY, "from": "2020-01-02", "to": "2020-01-03"}, headers=ADMIN)
    assert created.status_code == 202, created.text
    view, _ = await api.until_ended(created.json()["id"])
    assert view["status"] == "failed"
    assert "the job process exited with code 1" in view["error"] and "too early" in view["error"], view["error"]
    refused = await api.client.get(f"{URL}/{view['id']}/report", headers=ADMIN)
    assert refused.status_code == 409 and "failed: the job process exited" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"from": "yesterday"}, "from: Value error, 'yesterday' is not an ISO 8601 date or time"),
        ({"to": 1735689600}, "to: Value error, a time is ISO 8601"),
        ({"interval": "7m"}, "interval: Input should be '1m'"),
        ({"assets": []}, "assets: List should have at least 1 item"),
        ({"assets": ["BTC!"]}, "assets.0: String should match pattern"),
        ({"data": "csv"}, "data: Input should be 'simulated', 'stored' or 'folder'"),
        ({"temperature": 3}, "temperature: Input should be less than or equal to 2"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"initial_balance": 0}, "initial_balance: Input should be greater than 0"),
        ({"surprise": True}, "surprise: Extra inputs are not permitted"),
    ],
)
async def test_a_body_outside_the_schema_is_refused_with_its_reason(
    api: Api, changes: dict[str, Any], needle: str
) -> None:
    refused = await api.client.post(URL, json={**BODY, **changes}, headers=ADMIN)
    assert refused.status_code == 422, refused.text
    assert needle in refused.json()["detail"] and refused.json()["errors"]
    assert await api.runs() == 0


@pytest.mark.parametrize(
    ("changes", "status", "detail"),
    [
        (
            {"from": "2025-03-03", "to": "2025-03-01"},
            409,
            "to (2025-03-01T00:00:00+00:00) is before from (2025-03-03T00:00:00+00:00)",
        ),
        (
            {"from": "2020-01-01", "to": "2023-01-01"},
            409,
            "26,305 cycles of 1h from 2020-01-01T00:00:00+00:00 to 2023-01-01T00:00:00+00:00: at most 20,000; shorten "
            "the period or take a longer interval",
        ),
        (
            {"interval": "4h", "long_interval": "1h"},
            409,
            "long_interval (1h) must be a whole multiple of interval (4h), longer than it",
        ),
        ({"assets": ["BTC", "BTCUSDT"]}, 409, "an asset is listed twice: BTC"),
        ({"mask_assets": True}, 409, "mask_assets goes with mask_dates"),
        ({"data": "folder"}, 409, "data folder needs data_dir, a folder of CSV files on the server"),
        ({"data_dir": "/tmp"}, 409, "data_dir goes with data folder, not simulated"),
        ({"data_source": "binanceusdm"}, 409, "data_source goes with data stored, not simulated"),
        (
            {"data": "folder", "data_dir": "/no/such/folder"},
            404,
            "data_dir '/no/such/folder': no such folder on the server",
        ),
        ({"strategy": "no_such_strategy"}, 404, "unknown strategy 'no_such_strategy'"),
    ],
)
async def test_a_request_the_server_refuses_says_why_and_stores_nothing(
    api: Api, changes: dict[str, Any], status: int, detail: str
) -> None:
    """Between fields (what no schema states: 409, as for an experiment's conflicting variants) or against what
    the server has (404)."""
    refused = await api.client.post(URL, json={**BODY, **changes}, headers=ADMIN)
    assert (refused.status_code, refused.json()) == (status, {"detail": detail})
    assert await api.runs() == 0


async def test_no_more_jobs_than_may_run_at_once(api: Api) -> None:
    api.app.state.backtest_jobs.max_running = 0  # as many jobs running as may at once
    full = await api.client.post(URL, json=BODY, headers=ADMIN)
    assert full.status_code == 409 and "as many as may at once" in full.json()["detail"], full.text
    assert await api.runs() == 0


async def test_unknown_runs_are_404_and_account_keys_403(api: Api) -> None:
    for path in ("", "/report", "/report.html", "/report.png"):
        missing = await api.client.get(f"{URL}/424242{path}", headers=ADMIN)
        assert (missing.status_code, missing.json()) == (404, {"detail": "backtest 424242 does not exist"}), path
    assert (await api.client.get(f"{URL}/0", headers=ADMIN)).status_code == 422

    account = await api.account_key()
    for method, path in [("POST", URL), ("GET", URL), ("GET", f"{URL}/1"), ("GET", f"{URL}/1/report.png")]:
        answer = await api.client.request(method, path, json=BODY if method == "POST" else None, headers=account)
        assert (answer.status_code, answer.json()) == (403, {"detail": "this needs an admin API key"}), path
        assert (await api.client.request(method, path)).status_code == 401
    assert await api.runs() == 0


def test_the_schema_offers_the_venue_timeframes() -> None:
    assert set(typing.get_args(Timeframe)) == set(VENUE_TIMEFRAMES)


async def test_runs_left_by_a_stopped_process_are_failed_at_start(settings: Settings, clock: ManualClock) -> None:
    """A job killed with its server (or on its own) leaves its run `running`: the next start marks it failed."""
    async with running(settings, clock) as first:
        left = await store.create_queued(first.agent.sessions, config_json(CONFIG), now=first.agent.wall_clock.now())
        ended = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await ended.wait()
        async with first.agent.sessions.begin() as session:
            await session.execute(
                update(models.BacktestRun).where(models.BacktestRun.id == left).values(status="running", pid=ended.pid)
            )
        assert (await first.client.get(f"{URL}/{left}", headers=ADMIN)).json()["status"] == "running"
    async with running(settings, clock) as second:
        view = (await second.client.get(f"{URL}/{left}", headers=ADMIN)).json()
        assert (view["status"], view["error"]) == ("failed", store.INTERRUPTED)


async def test_a_job_running_when_the_server_stops_is_interrupted(settings: Settings, clock: ManualClock) -> None:
    """The server interrupts its jobs as it stops: the process ends and its run is failed, not left running."""
    async with running(settings, clock) as api:
        long = {**BODY, "from": "2023-01-01", "to": "2025-03-01"}  # 18,961 cycles: far from done when stopped
        created = await api.client.post(URL, json=long, headers=ADMIN)
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        deadline = time.monotonic() + HANG_GUARD_S
        view = created.json()
        while not (view["status"] == "running" and view["cycles_done"] > 0):
            assert view["status"] in ("queued", "running") and time.monotonic() < deadline, api.job_log(run_id)
            await asyncio.sleep(0.2)
            view = (await api.client.get(f"{URL}/{run_id}", headers=ADMIN)).json()
        assert 0 < view["percent"] < 100 and view["eta_s"] is not None and view["eta_s"] > 0
        row = await store.get_run(api.agent.sessions, run_id)
        assert row is not None and row.pid is not None
        pid = row.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended, and reaped by the server
    async with running(settings, clock) as again:
        view = (await again.client.get(f"{URL}/{run_id}", headers=ADMIN)).json()
        assert view["status"] == "failed" and view["error"].startswith("interrupted"), view["error"]
        assert view["cycles_done"] < 18_961
