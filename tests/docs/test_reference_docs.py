"""The reference pages stay complete: every flag, metric and TOKENMILL_* variable is documented,
and every relative link in the docs and the README points at a file that exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tokenmill.cli.main import build_parser
from tokenmill.engine.stats import EngineStats
from tokenmill.server.metrics import ServerMetrics

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", ["serve", "generate", "chat"])
def test_every_flag_is_in_the_reference(command):
    page = (DOCS / "configuration.md").read_text()
    parser = _subparsers(build_parser())[command]
    missing = [opt for a in parser._actions if a.help != argparse.SUPPRESS
               for opt in a.option_strings if opt.startswith("--") and opt != "--help" and f"`{opt}`" not in page]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_every_metric_is_in_the_reference():
    metrics = ServerMetrics()
    metrics.watch_engine(lambda: EngineStats(*([0] * len(EngineStats.__slots__))))
    types = re.findall(r"^# TYPE (\S+) ", metrics.render().decode(), re.M)
    exposed = {name for name in types if not name.endswith("_created")}  # prometheus-client's own
    page = (DOCS / "metrics.md").read_text()
    documented = set(re.findall(r"`(tokenmill:[a-z0-9_]+)", page))
    assert exposed == documented


def test_every_vllm_name_is_in_the_reference():
    metrics = ServerMetrics(model_name="m", naming="vllm")
    metrics.watch_engine(lambda: EngineStats(*([0] * len(EngineStats.__slots__))))
    types = re.findall(r"^# TYPE (vllm:\S+) (\S+)", metrics.render().decode(), re.M)
    exposed = {name if kind != "counter" or name.endswith("_total") else name + "_total"
               for name, kind in types if not name.endswith("_created")}
    table = (DOCS / "metrics.md").read_text().split("## vLLM's names")[1]
    documented = set(re.findall(r"^\| `(vllm:[a-z0-9_]+)", table, re.M))
    assert len(exposed) == 12 and exposed == documented


def test_every_environment_variable_is_in_the_reference():
    used = set()
    for path in [*ROOT.glob("core/tokenmill/**/*.py"), *ROOT.glob("plugins/*/tokenmill_*/**/*.py")]:
        used |= set(re.findall(r"\"(TOKENMILL_[A-Z_]+)\"", path.read_text()))
    page = (DOCS / "configuration.md").read_text()
    assert used and not [name for name in used if f"`{name}`" not in page]


def test_relative_links_resolve():
    broken = []
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert not broken
