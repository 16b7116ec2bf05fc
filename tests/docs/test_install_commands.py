"""The README's set-up agrees with pyproject, and its source-install line for each extra resolves.

`pip install --dry-run` runs pip's whole resolution (reading each local plugin's metadata) without
installing anything, so the check is safe on a developer's machine and needs only package indexes.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _source_installs() -> dict[str, str]:
    """extra -> the `pip install ...` command in the README's table of source installs."""
    rows = re.findall(r"^\| `([\w-]+)` \| `(pip install [^`]+)`", README, re.M)
    return dict(rows)


def test_every_extra_has_a_source_install_line():
    extras = set(PYPROJECT["project"]["optional-dependencies"]) - {"test"}
    assert set(_source_installs()) == extras


def test_python_version_agrees_with_requires_python():
    minimum = re.fullmatch(r">=(\d+\.\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    assert f"Python {minimum} or newer" in README


def test_license_file_matches_pyproject():
    assert PYPROJECT["project"]["license"]["text"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_setup_installs_torch_first_and_pinned():
    first = re.search(r"```bash\n\s*(pip install torch[^\n]*)", README).group(1)
    assert first.startswith("pip install torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu &&")


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["cpu", "gaudi", "tpu"])
def test_source_install_resolves(extra):
    args = shlex.split(_source_installs()[extra])[2:]  # after `pip install`
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-build-isolation", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    would = next((line for line in done.stdout.splitlines() if line.startswith("Would install")), "")
    assert f"tokenmill-{extra}-0.1.0" in would, done.stdout[-2000:]
