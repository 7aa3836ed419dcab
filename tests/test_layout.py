"""The house rules of deploypipe's layout (../shared/DESIGN.md), checked on the source itself:
imports point down a declared stack of floors and never in a circle (imports inside functions
count: a lazy import may save start-up time but never hides a cycle), generic code reaches a
backend only through the registry, a runner never pulls in a compiler, no backend imports another,
and no module imports another module's private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "deploypipe"

# Floors, bottom first: a module may import its own floor or any floor below, never above.
FLOORS: list[tuple[str, ...]] = [
    ("errors", "registry", "isa", "toolchains", "progress", "tables", "interrupt"),
    ("model", "targets"),
    ("artifact", "data"),
    ("analysis", "costmodel", "zoo", "net"),
    ("importers", "passes", "backends", "litert"),
    ("api", "bench", "partition", "campaign", "doctor"),
    ("cli", "cliutil", "__main__"),
]
BACKENDS = sorted(p.name for p in (PKG / "backends").iterdir() if p.is_dir() and (p / "__init__.py").exists())


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported deploypipe module, imported names joined, line) for every import that runs."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("deploypipe")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("deploypipe"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in modules else (base, alias.name, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _ in imports_of(name, path, modules):
            # the module named (a package's __init__ only when the package itself is named: Python
            # runs parent packages first, which is no dependency of the child on its parent's code)
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target != name:
                edges[name].add(target)
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def floor_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) >= 4 and parts[1] == "backends" and parts[3] == "cli":
        return len(FLOORS) - 1  # a backend's CLI sub-app sits with the CLI
    top = parts[1] if len(parts) > 1 else "__init__"
    if top == "__init__":
        return 0 if len(parts) == 1 else 0
    for i, floor in enumerate(FLOORS):
        if top in floor:
            return i
    raise AssertionError(f"{module}: its package '{top}' is on no floor of FLOORS: add it")


def violations(edges: dict[str, set[str]]) -> dict[str, list[str]]:
    """Every broken rule, by rule, as readable lines."""
    modules = all_modules()
    found: dict[str, list[str]] = {"cycles": [" <-> ".join(c) for c in find_cycles(edges)], "upward": [],
                                   "generic imports a backend": [], "backend imports another backend": [],
                                   "runner reaches a compiler": [], "private name": []}
    for mod, targets in edges.items():
        if mod == "deploypipe":
            continue
        for t in targets:
            if t != "deploypipe" and floor_of(t) > floor_of(mod):
                found["upward"].append(f"{mod} -> {t}")
            in_backend = mod.startswith("deploypipe.backends.") and mod.split(".")[2] in BACKENDS
            t_backend = t.split(".")[2] if t.startswith("deploypipe.backends.") and t.split(".")[2] in BACKENDS else None
            if t_backend and not in_backend and not (mod.startswith("deploypipe.cli")):
                found["generic imports a backend"].append(f"{mod} -> {t}")
            if t_backend and in_backend and mod.split(".")[2] != t_backend:
                found["backend imports another backend"].append(f"{mod} -> {t}")
    for b in BACKENDS:
        runner = f"deploypipe.backends.{b}.runner"
        if runner not in edges:
            continue
        seen, todo = set(), [runner]
        while todo:
            m = todo.pop()
            for t in edges[m]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        bad = sorted(t for t in seen if t.endswith(".compiler") and t != "deploypipe.backends.compiler"
                     or t.split(".")[1:2] in (["passes"], ["importers"], ["api"]))
        found["runner reaches a compiler"] += [f"{runner} -> {t}" for t in bad]
    for name, path in modules.items():
        for target, names, line in imports_of(name, path, modules):
            if names.startswith("_") and not names.startswith("__") and target != name:
                found["private name"].append(f"{name}:{line} imports {target}.{names}")
    return {k: v for k, v in found.items() if v}


def test_imports_point_down_never_in_a_circle() -> None:
    bad = violations(graph())
    assert not bad, "\n".join(f"{rule}: {line}" for rule, lines in bad.items() for line in lines)


def test_the_rules_catch_what_they_claim() -> None:
    """The checker itself finds a cycle, an upward import and a runner that reaches a compiler."""
    edges = {"deploypipe.model": {"deploypipe.api"}, "deploypipe.api": {"deploypipe.model"},
             "deploypipe.backends.tvm.runner": {"deploypipe.backends.tvm.compiler"},
             "deploypipe.backends.tvm.compiler": set(), "deploypipe.bench.run": {"deploypipe.backends.tvm.facts"},
             "deploypipe.backends.tvm.facts": set()}
    bad = violations(edges)
    assert bad["cycles"] == ["deploypipe.api <-> deploypipe.model"]
    assert "deploypipe.model -> deploypipe.api" in bad["upward"]
    assert bad["runner reaches a compiler"] == ["deploypipe.backends.tvm.runner -> deploypipe.backends.tvm.compiler"]
    assert bad["generic imports a backend"] == ["deploypipe.bench.run -> deploypipe.backends.tvm.facts"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_runner_loads_without_any_compiler_toolchain(backend: str) -> None:
    """Import a backend's runner in a fresh interpreter where every compile-time package is made
    unimportable (a device has only the runner's runtime): it must import, and pull in no
    compiler, pass, importer or build-time toolchain."""
    blocked = ["torch", "torchvision", "onnxslim", "onnxsim", "onnxconverter_common", "nncf", "tensorflow",
               "onnx2tf", "hls4ml", "torch_pruning", "timm", "sklearn", "tvm.relax", "tvm.s_tir", "openvino.tools"]
    code = f"""
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{{name}} is a build-time package: a device does not have it")
sys.meta_path.insert(0, Block())
import deploypipe.backends.{backend}.runner
from deploypipe.backends import RUNNERS
bad = [m for m in sys.modules if m.endswith(".compiler") and m != "deploypipe.backends.compiler"
       or m.split(".")[:2] in (["deploypipe", "passes"], ["deploypipe", "importers"], ["deploypipe", "api"])]
assert not bad, bad
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_every_target_file_validates_into_its_compilers_typed_options() -> None:
    from deploypipe import backends, targets

    for spec in targets.all_targets().values():
        backends.check_target(spec)  # raises, naming file, compiler and key, on a bad option
        for name in spec.compilers:
            assert isinstance(backends.compiler_options(name, spec), backends.compiler_class(name).Options)
