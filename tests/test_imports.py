"""Imports run one way: every module of `lm` imports in a fresh interpreter, and no two packages import each
other (counting imports inside functions, which is how a cycle usually hides)."""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The node of the package graph: `lm.x` for lm/x/ and for a top-level module lm/x.py; `lm` for lm/__init__."""
    return ".".join(module.split(".")[:2])


def imported_modules(path: Path, root: Path = REPO) -> list[tuple[str, int]]:
    """(module, line) of every `lm` import in the file, at any depth (function bodies included)."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            # `from lm.x import y` imports the module lm.x.y when there is one, else a name of lm.x
            found += [(submodule if (root / Path(*submodule.split("."))).with_suffix(".py").is_file()
                       or (root / Path(*submodule.split("."))).is_dir() else source, node.lineno)
                      for submodule in (f"{source}.{a.name}" for a in node.names)]
    return [(m, line) for m, line in found if m == "lm" or m.startswith("lm.")]


@functools.cache
def import_graph(root: Path = REPO, node=package_of) -> dict[str, dict[str, list[str]]]:
    """{node: {imported node: ["lm/x/file.py:line", ...]}} over root/lm/, without self-edges; a node is a
    package (`package_of`) or, with node=str, a module."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted((root / "lm").rglob("*.py")):
        source = node(module_name(path, root))
        for target, line in imported_modules(path, root):
            if node(target) != source:
                graph[source][node(target)].append(f"{path.relative_to(root)}:{line}")
    return graph


def package_graph(root: Path = REPO):
    return import_graph(root, package_of)


def cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def describe(graph, component: list[str]) -> str:
    return "; ".join(f"{a} -> {b} ({', '.join(dict.fromkeys(graph[a][b]))})" for a in component for b in component
                     if b in graph.get(a, {}))


def test_cycle_finder_sees_a_cycle_and_a_function_level_import(tmp_path):
    graph = {"lm.a": {"lm.b": ["x"]}, "lm.b": {"lm.c": ["y"]}, "lm.c": {"lm.a": ["z"]}, "lm.d": {"lm.a": ["w"]}}
    assert cycles(graph) == [["lm.a", "lm.b", "lm.c"]]
    hidden = tmp_path / "lm" / "eval" / "hidden.py"
    hidden.parent.mkdir(parents=True)
    hidden.write_text("import os\nfrom .gsm8k import score\n\ndef f():\n    from lm.align.tasks import Task\n"
                      "    import lm.model\n")
    assert imported_modules(hidden, tmp_path) == [("lm.eval.gsm8k", 2), ("lm.align.tasks", 5), ("lm.model", 6)]


def test_no_cycle_between_packages():
    graph = package_graph()
    assert not cycles(graph), "package import cycles: " + " | ".join(describe(graph, c) for c in cycles(graph))


def test_no_cycle_between_modules():
    graph = import_graph(REPO, str)
    assert not cycles(graph), "module import cycles: " + " | ".join(describe(graph, c) for c in cycles(graph))


ALL_MODULES = sorted(module_name(p) for p in (REPO / "lm").rglob("*.py"))
# GPU-only dependencies (the `gpu` extra) that a module may import at the top; absent on a CPU machine.
OPTIONAL = ("triton", "jax_triton")
IMPORT_ALL = """
import importlib, json, os, sys
optional, missing = sys.argv[1].split(","), []
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name.split(".")[0] not in optional:
            raise
        missing.append(name)
from jax._src import xla_bridge
print(json.dumps({"XLA_FLAGS": os.environ.get("XLA_FLAGS"), "missing_optional": missing,
                  "backend_started": xla_bridge.backends_are_initialized()}))
"""


@pytest.fixture(scope="module")
def fresh_import():
    """Import every module of lm, in order, in a new interpreter whose environment has no XLA_FLAGS."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LM_XLA_DEFAULTS")}
    return subprocess.run([sys.executable, "-c", IMPORT_ALL, ",".join(OPTIONAL), *ALL_MODULES], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_module_imports_in_a_fresh_interpreter(fresh_import):
    assert len(ALL_MODULES) > 50 and "lm.model.attention" in ALL_MODULES
    assert fresh_import.returncode == 0, fresh_import.stderr[-3000:]
    missing = json.loads(fresh_import.stdout.splitlines()[-1])["missing_optional"]
    assert set(missing) <= {"lm.kernels.rms_norm_triton"}, missing  # only the Triton kernel may need the GPU extra


def test_importing_lm_sets_no_xla_flags_and_starts_no_backend(fresh_import):
    """Flags are the entry points' business (`lm.cli_env`), and they can still apply them after these imports
    because no module computes anything (which would start the backend) when imported."""
    out = json.loads(fresh_import.stdout.splitlines()[-1])
    assert out["XLA_FLAGS"] is None
    assert out["backend_started"] is False
