"""`tokenmill plugins` as a user runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tokenmill
from tokenmill.cli.main import COMMANDS, main

IN_TREE = {"cpu", "cuda", "rocm", "gaudi", "tpu"}
EXPECTED_PRIORITY = {"cuda": 100, "rocm": 90, "tpu": 80, "gaudi": 70, "cpu": 10, "toy": 1}
REQUIRED_KEYS = {"name", "distribution", "version", "available", "reason", "supplies"}
REQUIRED_PIECES = {"attention", "kv_allocator", "communicator"}


def _tokenmill_script() -> str:
    """The console script installed next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name("tokenmill")
    found = str(beside) if beside.exists() else shutil.which("tokenmill")
    if found is None:
        pytest.fail("the `tokenmill` console script is not installed: pip install -e .")
    return found


def run_cli(*args: str, extra_path: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMILL_")}
    if extra_path:
        clean["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, clean.get("PYTHONPATH")) if p)
    return subprocess.run([_tokenmill_script(), *args], capture_output=True, text=True, timeout=180, env={**clean, **env})


@pytest.fixture(scope="module")
def listing() -> dict[str, dict]:
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(REQUIRED_KEYS <= row.keys() for row in rows), rows
    return {row["name"]: row for row in rows}


def test_lists_the_in_tree_plugins_and_the_toy(listing: dict[str, dict]) -> None:
    assert IN_TREE | {"toy"} <= listing.keys()
    for name, priority in EXPECTED_PRIORITY.items():
        assert listing[name]["priority"] == priority, name
        assert listing[name]["distribution"] == f"tokenmill-{name}"
        assert listing[name]["version"] == "0.1.0"


def test_cpu_and_toy_are_available_and_supply_the_required_pieces(listing: dict[str, dict]) -> None:
    for name in ("cpu", "toy"):
        row = listing[name]
        assert row["available"] is True, row
        assert REQUIRED_PIECES <= set(row["supplies"]), row
    assert listing["cpu"]["selected"] is True  # toy's priority 1 never beats a real device


def test_accelerators_say_why_they_cannot_run_here(listing: dict[str, dict]) -> None:
    hints = {
        "cuda": "cuda",
        "rocm": "torch.version.hip is None",
        "gaudi": "habana_frameworks is not installed",
        # in the torch-xla venv (no PJRT_DEVICE=CPU set) torch_xla is there but finds no TPU
        "tpu": "torch_xla is not installed" if importlib.util.find_spec("torch_xla") is None else "found no TPU",
    }
    for name, hint in hints.items():
        row = listing[name]
        assert row["available"] is False, row
        assert hint.lower() in row["reason"].lower(), row
        assert row["error"] is None, row  # unavailable, not broken


def cli_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [k for k in os.environ if k.startswith("TOKENMILL_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_human_listing_marks_the_selected_device(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli_in_process(capsys, "plugins")
    assert code == 0
    cpu_line = next(line for line in out.splitlines() if line[2:].startswith("cpu "))
    assert cpu_line.startswith("* ") and "available" in cpu_line
    assert "torch.version.hip is None" in out


def test_device_environment_changes_the_selection(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("TOKENMILL_DEVICE", "toy")
    rows = json.loads(cli_in_process(capsys, "plugins", "--json")[1])
    assert [row["name"] for row in rows if row["selected"]] == ["toy"]


def test_allow_list_and_autoload_switch_are_honoured(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("TOKENMILL_PLUGINS", "toy,rocm")
    only = json.loads(cli_in_process(capsys, "plugins", "--json")[1])
    assert sorted(row["name"] for row in only) == ["rocm", "toy"]
    clean_env.delenv("TOKENMILL_PLUGINS")
    clean_env.setenv("TOKENMILL_DISABLE_PLUGIN_AUTOLOAD", "1")
    code, out, _ = cli_in_process(capsys, "plugins")
    assert code == 0 and "TOKENMILL_DISABLE_PLUGIN_AUTOLOAD" in out


def _write_plugin_dist(site: Path, ep_name: str, dist: str, module_source: str) -> str:
    module = f"tm_cli_{ep_name}_{site.name}"
    (site / f"{module}.py").write_text(module_source, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 9.9\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[tokenmill.plugins]\n{ep_name} = {module}\n", encoding="utf-8")
    importlib.invalidate_caches()
    return module


def test_a_plugin_that_fails_to_import_is_still_listed_with_its_error(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _write_plugin_dist(tmp_path, "broken", "acme-broken", "raise ImportError('libacme.so.3: cannot open')\n")
    clean_env.syspath_prepend(str(tmp_path))
    code, out, _ = cli_in_process(capsys, "plugins", "--json")
    sys.modules.pop(module, None)
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    broken = rows["broken"]
    assert broken["available"] is False and broken["distribution"] == "acme-broken" and broken["version"] == "9.9"
    assert "libacme.so.3: cannot open" in broken["reason"] and "ImportError" in broken["error"]
    assert rows["cpu"]["available"] is True  # the others still load


def test_name_clash_is_one_error_line_without_traceback(tmp_path: Path) -> None:
    _write_plugin_dist(tmp_path, "cpu", "acme-cpu", "")
    result = run_cli("plugins", extra_path=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: two plugins claim the name 'cpu'"), result.stderr
    assert "acme-cpu" in result.stderr and "tokenmill-cpu" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out.strip() == f"tokenmill {tokenmill.__version__}"


def test_main_lists_only_commands_whose_module_exists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    commands_dir = Path(tokenmill.__file__).parent / "cli"
    for name in COMMANDS:
        assert (f"    {name}" in help_text) == (commands_dir / f"{name}_cmd.py").exists(), name
