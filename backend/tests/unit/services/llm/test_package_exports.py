"""`app.services.llm`: the seed's package interface, loaded lazily (no import cycle, no start-up cost)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import app.services.llm as llm


def test_every_exported_name_is_the_object_of_its_module() -> None:
    assert {"DecisionEngine", "LLMService", "DecisionValidator", "StrategyManager", "LLMAPIError"} <= set(llm.__all__)
    for name in llm.__all__:
        module = importlib.import_module(f"app.services.llm.{llm._EXPORTS[name]}")
        assert getattr(llm, name) is getattr(module, name), name
    assert set(llm.__all__) == set(llm._EXPORTS)
    assert set(llm.__all__) <= set(dir(llm))


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        llm.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_importing_the_package_or_one_module_loads_nothing_else() -> None:
    probe = (
        "import json, sys, app.services.llm, app.services.llm.response_parser; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('app.services.llm.'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(done.stdout)
    assert "app.services.llm.decision_engine" not in loaded
    assert "app.services.llm.llm_service" not in loaded


def test_from_import_star_and_a_cold_named_import_work() -> None:
    probe = (
        "from app.services.llm import *; from app.services.llm import DecisionEngine; print(DecisionEngine.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "DecisionEngine"
