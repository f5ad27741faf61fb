"""The package's structure, read from its imports (those inside functions too).

- no import cycles between modules;
- nothing outside ``seqpipe.<task>.stages`` imports a stage (the pipeline finds a stage by its
  module name);
- the layers of ``../shared/GUIDE.md`` §1: core <- common, models, data <- mt, asr <- use,
  tools <- cli; MT and ASR never import each other; ``core`` imports no torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "seqpipe"

# lower number = lower layer; a module may import its own layer's packages and those below
LAYERS = {
    "errors": 0,
    "core": 1,
    "common": 2,
    "models": 2,
    "data": 2,
    "mt": 3,
    "asr": 3,
    "use": 4,
    "tools": 4,
    "cli": 5,
    "__main__": 6,
    "__init__": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """seqpipe modules that ``name`` imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t in modules and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {n: imports_of(n, p, modules) for n, p in modules.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def is_stage(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 3 and parts[2] == "stages"


def layer(name: str) -> tuple[str, int]:
    top = name.split(".")[1] if "." in name else "__init__"
    return top, LAYERS[top]


def test_every_module_is_in_a_layer():
    assert [n for n in graph() if layer(n)[0] not in LAYERS] == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_nothing_imports_a_stage():
    bad = [
        f"{a} imports {b}"
        for a, deps in graph().items()
        for b in deps
        if is_stage(b) and not is_stage(a)
    ]
    assert bad == []


def test_layers_import_downwards_only():
    bad = []
    for a, deps in graph().items():
        ta, la = layer(a)
        for b in deps:
            tb, lb = layer(b)
            if lb > la or (la == lb and ta != tb and la in (3, 4)):
                bad.append(f"{a} imports {b}")
    assert bad == []


def test_core_does_not_import_torch():
    bad = []
    for name, path in all_modules().items():
        if layer(name)[0] not in ("core", "errors"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad += [f"{name} imports {m}" for m in mods if m.split(".")[0] in ("torch", "numpy")]
    assert bad == []


def test_the_checker_sees_function_level_imports_and_cycles():
    """The checks above can fail: a cycle through a function-level import is found."""
    g = {"seqpipe.a": {"seqpipe.b"}, "seqpipe.b": {"seqpipe.c"}, "seqpipe.c": {"seqpipe.a"}}
    assert cycles(g) == [["seqpipe.a", "seqpipe.b", "seqpipe.c"]]
    src = "def f():\n    from seqpipe.mt.stages import train\n"
    tree_mods = {"seqpipe.mt.stages.train": Path("x"), "seqpipe.mt.stages": Path("y")}
    tmp = Path(__file__).with_name("_import_probe.py")
    try:
        tmp.write_text(src)
        assert "seqpipe.mt.stages.train" in imports_of("seqpipe.tools.x", tmp, tree_mods)
    finally:
        tmp.unlink()
