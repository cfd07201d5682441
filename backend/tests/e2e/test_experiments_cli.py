"""`trading-agent experiments ...` as a user types it, offline (no key: the baseline is every variant's model), on
a fresh SQLite file: create, list, results and stop, in tables and as JSON; a refusal exits 1 with the reason and
stores nothing; a malformed option exits 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.test_cli import BIN, _env

VARIANTS = [
    "--variant",
    "control:model=baseline,strategy=conservative",
    "--variant",
    "aggr:model=baseline,strategy=aggressive,prompt=lean,temperature=0.3",
]
CREATE = [
    "experiments",
    "create",
    "--name",
    "s",
    "--assignment",
    "shadow",
    "--metric",
    "mean_return",
    "--min-samples",
    "50",
    *VARIANTS,
]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN, *args], env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )


def test_create_list_results_and_stop_offline(tmp_path: Path) -> None:
    created = run(tmp_path, *CREATE)
    assert created.returncode == 0, created.stderr
    for needle in ("experiment 1 's' running: shadow on account(s) 1", "expected daily cost 0.0000 USD", "aggr"):
        assert needle in created.stdout, created.stdout

    busy = run(tmp_path, *CREATE)
    assert busy.returncode == 1 and "already in the running experiment 1" in busy.stderr, busy.stderr

    listed = run(tmp_path, "experiments", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (experiment,) = json.loads(listed.stdout)
    assert (experiment["id"], experiment["name"], experiment["status"], experiment["min_samples"]) == (
        1,
        "s",
        "running",
        50,
    )
    aggr = experiment["variants"][1]
    assert (aggr["strategy_id"], aggr["prompt_version"], aggr["temperature"], aggr["is_control"]) == (
        "aggressive",
        "lean",
        0.3,
        False,
    )
    table = run(tmp_path, "experiments", "list")
    assert table.returncode == 0 and "control (control)" in table.stdout and "shadow" in table.stdout

    results = run(tmp_path, "experiments", "results", "1")
    assert results.returncode == 0, results.stderr
    assert "not yet" in results.stdout and "0/50" in results.stdout and "50 more needed" in results.stdout
    as_json = json.loads(run(tmp_path, "experiments", "results", "1", "--json").stdout)
    assert [v["verdict"] for v in as_json["variants"]] == [None, "not yet"]

    stopped = run(tmp_path, "experiments", "stop", "1", "--reason", "done")
    assert stopped.returncode == 0 and "experiment 1 (s) stopped: done" in stopped.stdout, stopped.stderr
    again = run(tmp_path, "experiments", "stop", "1")
    assert again.returncode == 1 and "already stopped" in again.stderr
    final = json.loads(run(tmp_path, "experiments", "list", "--json", "--status", "stopped").stdout)
    assert [(e["id"], e["stop_reason"]) for e in final] == [(1, "done")]
    missing = run(tmp_path, "experiments", "results", "9")
    assert missing.returncode == 1 and "experiment 9 does not exist" in missing.stderr


def test_a_spec_file_with_options_over_it(tmp_path: Path) -> None:
    spec = {
        "name": "from a file",
        "assignment": "shadow",
        "min_samples": 30,
        "horizon": 12,
        "variants": [{"name": "a", "model": "baseline"}, {"name": "b", "model": "baseline", "strategy_id": "swing"}],
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    created = run(tmp_path, "experiments", "create", "--file", str(path), "--min-samples", "40", "--json")
    assert created.returncode == 0, created.stderr
    view = json.loads(created.stdout)
    assert (view["name"], view["min_samples"], view["horizon"]) == ("from a file", 40, 12)
    assert [v["strategy_id"] for v in view["variants"]] == [None, "swing"]


def test_refusals_exit_with_the_reason_and_store_nothing(tmp_path: Path) -> None:
    keyless = run(tmp_path, *CREATE[:-2], "--variant", "gpt:model=openai/gpt-5")
    assert keyless.returncode == 1 and "no LLM is configured" in keyless.stderr, keyless.stderr
    too_few = run(tmp_path, *CREATE[:-2])  # one variant
    assert too_few.returncode == 2 and "variants" in too_few.stderr, too_few.stderr
    bad_option = run(tmp_path, *CREATE[:-1], "aggr:colour=blue")
    assert bad_option.returncode == 2 and "key one of model" in bad_option.stderr, bad_option.stderr
    small = run(tmp_path, *CREATE[:-2], *CREATE[-2:], "--min-samples", "5")
    assert small.returncode == 2 and "min_samples" in small.stderr
    assert json.loads(run(tmp_path, "experiments", "list", "--json").stdout) == []
