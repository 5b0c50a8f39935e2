"""The package layers: nemo_flm's subpackages and top-level modules import each other in one
direction only (no package back-edges, no cycles), so each layer can be read, tested and replaced
without the ones above it. Read from the sources with `ast` (imports inside functions count)."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "nemo_flm"


def _node(module: str) -> str:
    """nemo_flm.growth.ramp -> 'growth'; nemo_flm.parallel -> 'parallel'; nemo_flm -> 'nemo_flm'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module an ImportFrom names, relative imports (`from ..training import x`) resolved."""
    if node.level == 0:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path, package: str) -> set:
    """The nemo_flm modules that the file at `path`, in package `package`, imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            names = [module] if module != "nemo_flm" else [f"nemo_flm.{a.name}" for a in node.names]
            found.update(n for n in names if n.split(".")[0] == "nemo_flm")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "nemo_flm")
    return found


def package_graph(root: Path = PACKAGE) -> dict:
    """node -> {imported node: [importing module, ...]} between different nodes."""
    graph = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for imported in _imports(path, package):
            if _node(imported) != _node(module):
                graph[_node(module)][_node(imported)].append(module)
    return graph


def find_cycle(graph: dict):
    """A list of nodes forming an import cycle, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, {}):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_no_package_imports_back():
    graph = package_graph()
    cycle = find_cycle(graph)
    if cycle:
        links = [f"{a} -> {b} ({', '.join(sorted(set(graph[a][b])))})" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle between nemo_flm packages: " + "; ".join(links))


def test_a_back_edge_is_found(tmp_path):
    """The check itself: a module of a lower package importing a higher one is a cycle."""
    for name, text in {
        "training/run.py": "from nemo_flm.growth.ramp import MaskRamp\n",
        "growth/ramp.py": "def f():\n    from ..training import curves\n",  # relative imports count
        "model/gpt.py": "import nemo_flm.parallel\n",
    }.items():
        (tmp_path / "nemo_flm" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "nemo_flm" / name).write_text(text)
    graph = package_graph(tmp_path / "nemo_flm")
    assert find_cycle(graph) in (["growth", "training", "growth"], ["training", "growth", "training"])
    assert dict(graph["model"]) == {"parallel": ["nemo_flm.model.gpt"]}
