"""Layering of the library, read from the source files' imports (AST; nothing is imported).

Bottom to top: the root package's modules ``supportrl.files``, ``supportrl.outputs``,
``supportrl.policy`` (the Policy protocol), ``supportrl.privacy`` and ``supportrl.ray_runtime``
(the one Ray start-up); then ``envs``
(customer-model protocol, env, collector) and ``agents.base`` (shared policy parts); then
``simulators``, ``agents`` and ``ope``; then ``experiments`` and ``serving``. A package
imports only its own layer or lower ones, the package graph has no cycle, no module
imports one that imports it back (sub-packages included), ``envs`` does not import
``agents``, ``simulators`` and ``agents`` stay independent of each other (except the
shared ``agents.base``), Hydra is for ``experiments`` only, ``serving`` loads without
torch, Ray, Hydra or pandas, and docs/architecture.md draws exactly these dependencies.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

ROOT = REPO
PACKAGES = ("envs", "agents", "simulators", "ope", "serving", "experiments")
ROOT_MODULES = ("files", "outputs", "policy", "privacy", "ray_runtime")
"""Modules of the root package ``supportrl`` below every sub-package (one node, ``supportrl``)."""
LEAVES = {"supportrl.serving.json_limits": "serving.json_limits"}
"""Leaf modules (standard library and numpy only) that are their own node below the root
package: the JSON nesting check ships with serving, which installs alone, and
``supportrl.files`` uses it too."""
LAYER = {
    "serving.json_limits": -2,
    "supportrl": -1,
    "envs": 0,
    "agents.base": 0,
    "simulators": 1,
    "agents": 1,
    "ope": 1,
    "experiments": 2,
    "serving": 2,
}
HYDRA = ("hydra", "omegaconf")
SERVING_FORBIDDEN = ("torch", "ray", "hydra", "omegaconf", "pandas")


def node_of(module: str) -> str | None:
    """Layer node of a ``supportrl.*`` module name (``agents.base`` is its own node)."""
    parts = module.split(".")
    if ".".join(parts[:3]) in LEAVES:
        return LEAVES[".".join(parts[:3])]
    if len(parts) >= 2 and parts[0] == "supportrl" and parts[1] in ROOT_MODULES:
        return "supportrl"
    if len(parts) < 2 or parts[0] != "supportrl" or parts[1] not in PACKAGES:
        return None
    if parts[1] == "agents" and len(parts) > 2 and parts[2] == "base":
        return "agents.base"
    return parts[1]


def imports_of(path: Path) -> list[str]:
    """Every module a source file imports, at any depth (function-level imports too)."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            # `from supportrl.agents import base` names a submodule
            out.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def source_files() -> list[tuple[str, Path]]:
    files = [(f"supportrl.{name}", ROOT / "supportrl" / f"{name}.py") for name in ROOT_MODULES]
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            module = "supportrl." + ".".join(rel.parts)
            files.append((module.removesuffix(".__init__"), path))
    return files


def edges() -> dict[tuple[str, str], list[str]]:
    """(from node, to node) -> the files that make that dependency."""
    found: dict[tuple[str, str], list[str]] = {}
    for module, path in source_files():
        src = node_of(module)
        for target in imports_of(path):
            dst = node_of(target)
            if src and dst and dst != src:
                found.setdefault((src, dst), []).append(str(path.relative_to(ROOT)))
    return found


def test_the_layering_scan_sees_the_known_dependencies() -> None:
    """The scanner is not blind: dependencies that must exist are found."""
    graph = edges()
    assert ("simulators", "envs") in graph
    assert ("experiments", "simulators") in graph
    assert ("agents", "agents.base") in graph
    assert ("envs", "supportrl") in graph


def test_no_package_imports_a_higher_layer() -> None:
    bad = {
        f"{src} -> {dst}": files for (src, dst), files in edges().items() if LAYER[dst] > LAYER[src]
    }
    assert not bad, f"imports of a higher layer: {bad}"


def test_the_policy_protocol_is_below_envs() -> None:
    """The collector steps any Policy without importing agents: the protocol lives in
    ``supportrl.policy``, below envs."""
    graph = edges()
    assert ("envs", "agents.base") not in graph, graph.get(("envs", "agents.base"))
    assert ("envs", "agents") not in graph, graph.get(("envs", "agents"))
    assert ("agents.base", "supportrl") in graph


def test_simulators_and_agents_are_independent() -> None:
    graph = edges()
    assert ("simulators", "agents") not in graph, graph.get(("simulators", "agents"))
    assert ("agents", "simulators") not in graph, graph.get(("agents", "simulators"))
    assert ("envs", "simulators") not in graph, graph.get(("envs", "simulators"))


def test_no_package_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for src, dst in edges():
        graph.setdefault(src, set()).add(dst)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = [node for node in graph if node in reach(node)]
    assert not cycles, f"package cycles through {cycles}: {graph}"


MODULE_CYCLES_ALLOWED: set[frozenset[str]] = set()
"""Module cycles that still exist, in files another change owns (to shrink, never grow)."""


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The library modules ``path`` imports when it runs (function-level imports too; not
    those under ``if TYPE_CHECKING:``, which never run). ``from a.b import c`` counts as an
    import of ``a.b.c`` when that is a module (importing it first imports ``a.b``, which
    is harmless unless ``a.b`` imports the importer back: then it is a cycle here too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
    return out & modules


def module_cycles() -> list[frozenset[str]]:
    """Groups of library modules that import each other (strongly connected components)."""
    paths = dict(source_files())
    modules = set(paths)
    graph = {m: runtime_imports(p, modules) - {m} for m, p in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(frozenset(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_module_cycle_scan_sees_a_cycle(tmp_path: Path) -> None:
    """The scanner is not blind: two modules importing each other are one cycle, and an
    import under ``if TYPE_CHECKING:`` is none."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import supportrl.envs.b\n")
    b.write_text("def f():\n    from supportrl.envs import a\n")
    known = {"supportrl.envs.a", "supportrl.envs.b"}
    assert runtime_imports(a, known) == {"supportrl.envs.b"}
    assert runtime_imports(b, known) == {"supportrl.envs.a"}
    b.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import supportrl.envs.a\n"
    )
    assert runtime_imports(b, known) == set()


def test_no_module_imports_one_that_imports_it_back() -> None:
    """No import cycle between modules, inside a package or across sub-packages (e.g.
    ``ope.meta`` and ``ope.streaming``; a package ``__init__`` and a module that imports the
    package back)."""
    cycles = [sorted(c) for c in module_cycles() if c not in MODULE_CYCLES_ALLOWED]
    assert not cycles, f"modules importing each other: {cycles}"


def documented_edges() -> set[tuple[str, str]]:
    """The arrows of the diagram under "## Layers" in docs/architecture.md, as nodes."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layers", 1)[1].split("```mermaid", 1)[1].split("```", 1)[0]
    names = {
        "root": "supportrl",
        "agents_base": "agents.base",
        "json_limits": "serving.json_limits",
    }
    found = set()
    for line in block.splitlines():
        if "-->" not in line:
            continue
        src, dst = (part.strip().split("[")[0] for part in line.split("-->"))
        found.add((names.get(src, src), names.get(dst, dst)))
    return found


def test_the_architecture_page_draws_every_dependency_and_no_other() -> None:
    drawn, actual = documented_edges(), set(edges())
    assert drawn, "docs/architecture.md: no diagram under ## Layers"
    assert not actual - drawn, f"dependencies missing from docs/architecture.md: {actual - drawn}"
    assert not drawn - actual, f"arrows in docs/architecture.md the code lacks: {drawn - actual}"


def test_hydra_only_in_experiments() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for module, path in source_files()
        if not module.startswith("supportrl.experiments")
        and any(name.split(".")[0] in HYDRA for name in imports_of(path))
    ]
    assert not offenders, offenders


def test_serving_loads_without_torch_ray_hydra_or_pandas() -> None:
    modules = [m for m, _ in source_files() if m.startswith("supportrl.serving")]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(sorted(m for m in {SERVING_FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"serving pulled {out.stdout.strip()}"


@pytest.mark.parametrize("module", ["supportrl.envs", "supportrl.agents.base"])
def test_the_bottom_layer_loads_without_simulators_torch_or_pandas(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "print(sorted(m for m in ('torch', 'pandas', 'supportrl.simulators', 'hydra', 'onnxruntime') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{module} pulled {out.stdout.strip()}"


def test_one_namespace_and_no_generic_top_level_modules(tmp_path: Path) -> None:
    """Outside the project folder (as a user's code runs), ``import supportrl`` works and
    registers the env ids, and the generic folder names are not importable top-level."""
    code = (
        "import importlib.util, gymnasium as gym, supportrl\n"
        "generic = [m for m in ('envs', 'agents', 'ope', 'serving', 'experiments', 'simulators')"
        " if importlib.util.find_spec(m) is not None]\n"
        "assert not generic, generic\n"
        "env = gym.make('supportrl/SupportEnv-v1')\n"
        "assert type(env.unwrapped).__module__ == 'supportrl.envs.support_env'\n"
        "assert gym.make('SupportEnv-v0').spec.id == 'SupportEnv-v0'\n"
        "assert gym.make('supportrl/SupportEnv-v0').spec.kwargs == {'scalar': False}\n"
        "print(supportrl.envs.ENV_ID, supportrl.SUBPACKAGES)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "supportrl/SupportEnv-v1" in proc.stdout
