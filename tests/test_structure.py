"""The shape of the code base: module, recipe and function sizes, and the import graph.

Run as a script (``python tests/test_structure.py``) to print the size distribution quoted in the notes.
"""

import ast
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "deepinv_ext"
MAX_MODULE_LINES = 400
MAX_RECIPE_LINES = 300
MAX_FUNCTION_LINES = 60


def _python_files(folder):
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _function_bodies(path):
    """(qualified name, number of lines of the body without its docstring) for every function in ``path``."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                body = body[1:]
            lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
            out.append((f"{path.relative_to(ROOT)}:{node.name}", lines))
    return out


def _imports(path):
    """Absolute names of the deepinv_ext/recipes/benchmarks/tests modules ``path`` imports."""
    tree = ast.parse(path.read_text())
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in {"deepinv_ext", "recipes", "benchmarks", "tests"}}


def _library_graph():
    modules = {_module_name(p): p for p in _python_files(PACKAGE)}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # "from deepinv_ext.physics import AstraCT" names a module or an attribute of one
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan), ignoring edges into a package's own
    ``__init__`` from its members, which only re-export."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def edges(v):
        return [w for w in graph[v] if not v.startswith(w + ".")]

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges(v):
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_over_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in _python_files(PACKAGE) if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_recipe_over_the_limit():
    long = {p.name: n for p in _python_files(ROOT / "recipes") if (n := len(p.read_text().splitlines())) > MAX_RECIPE_LINES}
    assert not long, f"recipes over {MAX_RECIPE_LINES} lines: {long}"


def test_no_function_over_the_limit():
    long = [
        (name, n)
        for folder in ("deepinv_ext", "recipes")
        for p in _python_files(ROOT / folder)
        for name, n in _function_bodies(p)
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_library_import_graph_has_no_cycle():
    assert _cycles(_library_graph()) == []


def test_library_imports_no_recipe_benchmark_or_test():
    bad = {
        _module_name(p): sorted(i for i in _imports(p) if i.split(".")[0] != "deepinv_ext")
        for p in _python_files(PACKAGE)
    }
    assert {k: v for k, v in bad.items() if v} == {}


def _private_names_imported(path):
    """``module:name`` for each underscore name ``path`` imports from another deepinv_ext module."""
    tree = ast.parse(path.read_text())
    return [
        f"{node.module}:{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("deepinv_ext"))
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]


def test_no_module_imports_another_modules_private_names():
    """Private modules (``_validation``, ``physics/_checks``) hold names meant to be shared; a private name inside a
    module is that module's own."""
    bad = {_module_name(p): names for p in _python_files(PACKAGE) if (names := _private_names_imported(p))}
    assert bad == {}


def test_only_datasets_import_datasets():
    bad = [
        _module_name(p)
        for p in _python_files(PACKAGE)
        if "datasets" not in p.relative_to(PACKAGE).parts
        and any(i == "deepinv_ext.datasets" or i.startswith("deepinv_ext.datasets.") for i in _imports(p))
    ]
    # (the plugin registry names dataset classes by entry-point strings; the package root re-exports lazily)
    assert bad == []


@pytest.mark.parametrize("names", [["a", "b"]])
def test_cycle_finder_finds_a_cycle(names):
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [names]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def report():
    """Print the distribution of module, recipe and function sizes."""
    for label, folder in (("library modules", PACKAGE), ("recipes", ROOT / "recipes")):
        sizes = sorted(len(p.read_text().splitlines()) for p in _python_files(folder))
        print(f"{label}: {len(sizes)} files, median {statistics.median(sizes):.0f} lines, max {sizes[-1]}")
    bodies = [n for folder in ("deepinv_ext", "recipes") for p in _python_files(ROOT / folder) for _, n in _function_bodies(p)]
    bodies.sort()
    quart = statistics.quantiles(bodies, n=4)
    print(
        f"functions: {len(bodies)}, body lines median {statistics.median(bodies):.0f}, quartiles {quart[0]:.0f}/{quart[2]:.0f},"
        f" max {bodies[-1]}, over {MAX_FUNCTION_LINES}: {sum(b > MAX_FUNCTION_LINES for b in bodies)}"
    )
    print("import cycles:", _cycles(_library_graph()) or "none")


if __name__ == "__main__":
    report()
