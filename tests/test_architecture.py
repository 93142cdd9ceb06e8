"""The package's shape, read from its source with `ast`: no import cycles (imports under
`if TYPE_CHECKING:` and inside functions count: a cycle there is still two modules that know each
other), the asyncio core never imports Qt, credit knows nothing of the network, and the node's
process does not load the model runtime it never runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "app"
PACKAGE = ROOT / "shard"
QT = ("PySide6", "qasync")
ENTRY_POINTS = ("shard.cli", "shard.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(shard modules, other top-level packages) that the module at `path` imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    inside: set[str] = set()
    outside: set[str] = set()

    def resolve(target: str) -> None:
        # the longest prefix that is one of our modules (`shard.a.b.Name` -> `shard.a.b`)
        parts = target.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in known:
                if candidate != name:
                    inside.add(candidate)
                return
            parts.pop()
        outside.add(target.split(".")[0])

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from shard.coop import generator` imports a module
                full = f"{module}.{alias.name}"
                resolve(full if full in known else module)
    return inside, outside


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    known = set(modules)
    edges: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name], external[name] = _imported(name, path, known)
    return edges, external


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _path(edges: dict[str, set[str]], component: list[str]) -> str:
    """The shortest loop through the component's first module, for the failure message."""
    members, start = set(component), component[0]
    came: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(edges[v] & members):
            if w == start:
                trail = [v]
                while trail[-1] != start:
                    trail.append(came[trail[-1]])
                return " -> ".join([*reversed(trail), start])
            if w not in came:
                came[w] = v
                todo.append(w)
    return " <-> ".join(component)


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        for w in edges.get(v, ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_graph_sees_type_checking_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself: a TYPE_CHECKING import and a relative one both make edges."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (pkg / "b.py").write_text("from . import a\nfrom .a import x\n")
    known = {"pkg", "pkg.a", "pkg.b"}
    assert _imported("pkg.a", pkg / "a.py", known)[0] == {"pkg.b"}
    assert _imported("pkg.b", pkg / "b.py", known)[0] == {"pkg.a"}
    assert _cycles({"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg": set()}) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles() -> None:
    edges, _ = _graph()
    cycles = _cycles(edges)
    assert not cycles, "import cycles in app/shard:\n" + "\n".join(
        f"  {len(c)} modules: {_path(edges, c)}" for c in cycles
    )


def test_the_core_never_imports_qt() -> None:
    """Only shard.ui may import PySide6 or qasync, and nothing outside shard.ui imports shard.ui
    but the command line, which chooses between the tray and the headless node."""
    edges, external = _graph()
    wrong = []
    for name in edges:
        if name.startswith("shard.ui") or name in ENTRY_POINTS:
            continue
        wrong += [f"{name} imports {q}" for q in QT if q in external[name]]
        wrong += [f"{name} imports {m}" for m in edges[name] if m.startswith("shard.ui")]
    assert not wrong, "\n".join(wrong)


def test_credit_knows_nothing_of_the_network() -> None:
    """Receipts and vouchers take a signer, not the sidecar: credit is below the network."""
    edges, _ = _graph()
    wrong = [
        f"{name} reaches {m}"
        for name in edges
        if name.startswith("shard.credit")
        for m in sorted(_reachable(edges, name))
        if m.startswith("shard.network")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_node_process_does_not_load_the_model_runtime() -> None:
    """The node never runs a model itself (its verifier child does): importing the core must not
    load llama_cpp or numpy (about 19 MB and 0.6 s)."""
    code = "import sys, shard.node, shard.cli; print(sorted(m for m in ('llama_cpp', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
