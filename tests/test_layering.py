"""The package's layers: no module imports one from a layer above its own.

Order (low to high): errors; config; utils; data / tokenizer / tasks; models;
checkpoint / parallel; train / generate / rewards; rl / eval / export / interop / planner;
pipeline / launch / bench; cli (and `python -m mindxh`). Imports inside functions count
too (a lazy import is still a dependency). Same-layer imports are allowed, as long as the
packages of a layer do not import each other in a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mindxh"

LAYERS = [
    {"errors", "__init__"},
    {"config"},
    {"utils"},
    {"data", "tokenizer", "tasks"},
    {"models"},
    {"checkpoint", "parallel"},
    {"train", "generate", "rewards"},
    {"rl", "eval", "export", "interop", "planner"},
    {"pipeline", "launch", "bench"},
    {"cli", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _component(module: str) -> str:
    """'mindxh.train.trainer' -> 'train'; 'mindxh' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute mindxh module) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    own = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, m) for line, m in found if m == "mindxh" or m.startswith("mindxh.")]


def violations(root: Path = PACKAGE) -> list[str]:
    """Every import of a higher layer, and every unknown top-level component."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        own = _component(".".join(rel.with_suffix("").parts))
        if own not in RANK:
            bad.append(f"{rel}: component '{own}' has no layer in tests/test_layering.py")
            continue
        for line, module in _imports(path, root):
            other = _component(module)
            if other not in RANK:
                bad.append(f"{rel}:{line}: imports {module}, whose component has no layer")
            elif RANK[other] > RANK[own]:
                bad.append(f"{rel}:{line}: {own} (layer {RANK[own]}) imports {module} "
                           f"({other}, layer {RANK[other]})")
    return bad


def package_cycles(root: Path = PACKAGE) -> list[str]:
    """Same-layer packages that import each other, directly or through others."""
    edges: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        own = _component(".".join(path.relative_to(root.parent).with_suffix("").parts))
        for _, module in _imports(path, root):
            other = _component(module)
            if other != own:
                edges.setdefault(own, set()).add(other)
    cycles = []
    for start in edges:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join(trail + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    return sorted(set(cycles))


def test_no_module_imports_a_higher_layer():
    assert violations() == []


def test_no_import_cycles_between_packages():
    assert package_cycles() == []


@pytest.mark.parametrize("source, expected", [
    ("from mindxh.train.trainer import Trainer\n", "models (layer 4) imports mindxh.train.trainer"),
    ("def f():\n    from mindxh.cli import main\n", "models (layer 4) imports mindxh.cli"),
    ("from ...pipeline import runner\n", "imports mindxh.pipeline"),
])
def test_the_check_catches_a_wrong_import(tmp_path, source, expected):
    """A copy of the package with one deliberately wrong import fails the check."""
    import shutil

    copy = tmp_path / "mindxh"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "models" / "llama" / "bad.py").write_text(source)
    found = violations(copy)
    assert any(expected in v for v in found), found


def test_the_cycle_check_catches_a_same_layer_circle(tmp_path):
    import shutil

    copy = tmp_path / "mindxh"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "rewards" / "bad.py").write_text("from mindxh.generate import Generator\n")
    (copy / "generate" / "bad.py").write_text("from mindxh.rewards import math\n")
    assert any("generate" in c and "rewards" in c for c in package_cycles(copy))
