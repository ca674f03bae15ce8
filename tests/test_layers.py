"""The package's architecture as a specification (docs/architecture.md): data flows one way, config ->
plan -> backend -> trainer -> record -> report, so a lower layer never imports a higher one and no
modules import each other in a circle; a run folder's files are named only inside abcx/record/; a
backend's name is compared only inside abcx/launch/, a strategy's only inside
abcx/sweep/strategies/, a run state or stop kind only through abcx.record.states.

The imports are read from the source (ast), function-level (lazy) imports included: a lazy import
still makes the lower module depend on the higher one."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "abcx"

# Lowest first. A module may import its own layer and those before it, never one after it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("abcx", "abcx.errors", "abcx.libraries", "abcx.paths", "abcx.progress", "abcx.secrets",
                     "abcx.yaml_io")),
    ("methods", ("abcx.methods",)),
    ("tasks", ("abcx.tasks",)),
    ("record", ("abcx.record",)),
    ("testbed", ("abcx.testbed",)),
    ("config", ("abcx.config",)),
    ("evaluation", ("abcx.evaluation",)),
    ("training", ("abcx.training",)),
    ("launch", ("abcx.launch",)),
    ("sweep", ("abcx.sweep",)),
    ("report", ("abcx.report",)),
    ("cli", ("abcx.cli",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The abcx modules a file imports anywhere in it (top level or inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) for name, path in mods.items()}


def layer_of(module: str) -> int:
    best = None
    for i, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "abcx" and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add its package to LAYERS (and docs/architecture.md)"
    return best[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_circle():  # the check above can fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_layer_imports_a_higher_one():
    up = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
          for a, targets in graph().items() for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert up == []


def test_record_never_imports_training_and_launch_never_imports_sweep():
    edges = graph()
    assert not [b for a, bs in edges.items() if a.startswith("abcx.record") for b in bs if b.startswith("abcx.training")]
    assert not [b for a, bs in edges.items() if a.startswith("abcx.launch") for b in bs if b.startswith("abcx.sweep")]


def test_the_package_root_holds_at_most_ten_modules():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 10, root


def _strings(path: Path) -> list[tuple[int, str, ast.AST]]:
    """(line, value, parent node) of each string constant that is not a docstring."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, ast.Constant) and isinstance(child.value, str) and id(child) not in docs:
                out.append((child.lineno, child.value, parent))
    return out


def _outside(folder: str) -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if not str(p.relative_to(REPO)).startswith(folder)]


def test_no_run_folder_file_is_named_outside_the_record_package():
    from abcx.record import layout

    # W&B names its own folder (and "wandb" is also the library's name): only abcx's own files are checked.
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)} - {layout.WANDB}
    named = [f"{p.relative_to(REPO)}:{line} {value!r}" for p in _outside("abcx/record/")
             for line, value, parent in _strings(p) if value in names and not isinstance(parent, ast.JoinedStr)]
    assert named == []


def _compared(path: Path, values: set[str], about: str = "") -> list[str]:
    """String constants from `values` used in a comparison (==, !=, in) in this file; with `about`, only
    comparisons whose source mentions it (a stop kind is compared with something's `kind`)."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare) and about in ast.unparse(node):
            for side in [node.left, *node.comparators]:
                elements = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                hits += [f"{path.relative_to(REPO)}:{node.lineno} {e.value!r}" for e in elements
                         if isinstance(e, ast.Constant) and e.value in values]
    return hits


def test_backend_names_are_compared_only_inside_launch():
    from abcx.launch.backend import BACKENDS

    assert [hit for p in _outside("abcx/launch/") for hit in _compared(p, set(BACKENDS))] == []


def test_strategy_names_are_compared_only_inside_the_strategies_package():
    from abcx.sweep.strategies import STRATEGIES

    assert [hit for p in _outside("abcx/sweep/strategies/") for hit in _compared(p, set(STRATEGIES))] == []


def test_run_states_and_stop_kinds_are_compared_through_their_enums():
    from abcx.record.states import State, StopKind

    states, kinds = {s.value for s in State}, {k.value for k in StopKind}
    assert [hit for p in _outside("abcx/record/states.py") for hit in _compared(p, states)] == []
    assert [hit for p in _outside("abcx/record/states.py") for hit in _compared(p, kinds, about="kind")] == []


def test_every_backend_has_its_launcher_group_and_no_group_lacks_a_backend():
    from abcx.config.schema import group_options
    from abcx.launch.backend import BACKENDS

    assert sorted(group_options("launcher")) == sorted(BACKENDS)


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_the_architecture_doc_names_every_layer(layer):
    doc = (REPO / "docs" / "architecture.md").read_text()
    packages = dict(LAYERS)[layer]
    assert any(f"`{p.replace('.', '/')}" in doc for p in packages), (layer, packages)
