"""The import graph of ``fsa_seg`` has no cycle, counting the imports inside functions too.

Every module of the package is parsed with :mod:`ast` (nothing is imported) and every ``import`` and
``from ... import`` statement becomes an edge, wherever it stands: at module level, inside a function, under
``if TYPE_CHECKING:``. Relative imports are resolved against the importing module. ``from pkg import name``
imports ``pkg.name`` when that is a module of the package, else ``pkg`` (the name is an attribute of it).
Only modules of ``fsa_seg`` are nodes. Imports by name at run time (``importlib``, a config's ``custom_imports``,
registry look-ups) are not statements and not edges.

Packages: a package's node is its ``__init__.py``. Importing ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``, but that implicit step is not an edge: an ``__init__`` that imports (re-exports) its own
submodules is not a cycle by itself, since Python runs the package first and the submodules then find it
initialised. What is a cycle: a submodule that names its package explicitly (``import fsa_seg.plugin``,
``from . import helper_defined_in_init``, ``from .. import name``) while the ``__init__`` imports that
submodule, directly or through others, because the submodule then needs a half-initialised package.
"""
from __future__ import annotations

import ast
import os
import os.path as osp
from typing import Dict, List, Optional, Set

import pytest

import fsa_seg

PACKAGE_DIR = osp.dirname(osp.abspath(fsa_seg.__file__))
PACKAGE = "fsa_seg"


def module_files(package_dir: str = PACKAGE_DIR, package: str = PACKAGE) -> Dict[str, str]:
    """Module name -> file of every ``.py`` under ``package_dir`` (``pkg/__init__.py`` is ``pkg``); folders
    without ``__init__.py`` count as namespace packages."""
    out = {}
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        rel = osp.relpath(root, package_dir)
        parts = [package] + ([] if rel == "." else rel.split(os.sep))
        for name in sorted(files):
            if name.endswith(".py"):
                stem = name[:-3]
                out[".".join(parts if stem == "__init__" else parts + [stem])] = osp.join(root, name)
    return out


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    """The absolute module a ``from X import ...`` reads from (``None`` when a relative import leaves the root)."""
    if not node.level:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 > len(base) - 1:
        return None
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, path: str, modules: Set[str]) -> Set[str]:
    """The modules of ``modules`` that ``module`` (source in ``path``) imports anywhere in its body."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = osp.basename(path) == "__init__.py"
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, is_package, node)
            if source is None:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in modules else source)
    out = set()
    for name in found:
        # ``import a.b.c`` where only ``a.b`` is a module of ours (c an attribute, or not ours): the closest one.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def import_graph(package_dir: str = PACKAGE_DIR, package: str = PACKAGE) -> Dict[str, Set[str]]:
    files = module_files(package_dir, package)
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: Dict[str, int] = {}  # 1 on the stack, 2 done
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "fsa_seg.apis.evaluate" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in fsa_seg: " + " -> ".join(cycle)


def _write(root, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_edges_resolve_relative_function_level_and_submodule_imports(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, "__init__.py", "from .sub import a\n")
    _write(pkg, "sub/__init__.py", "")
    _write(pkg, "sub/a.py", "def f():\n    from ..b import thing\n    from . import c\n")
    _write(pkg, "sub/c.py", "import pkg.b\nfrom pkg import sub\n")
    _write(pkg, "b.py", "import os\nfrom typing import List\n")
    graph = import_graph(str(pkg), "pkg")
    assert graph["pkg"] == {"pkg.sub.a"}  # from .sub import a: a is a submodule
    assert graph["pkg.sub.a"] == {"pkg.b", "pkg.sub.c"}  # inside a function; from . import c is the module c
    assert graph["pkg.sub.c"] == {"pkg.b", "pkg.sub"}
    assert graph["pkg.b"] == set()
    assert find_cycle(graph) is None


@pytest.mark.parametrize("planted", ["function", "package"])
def test_a_planted_cycle_is_found(tmp_path, planted):
    pkg = tmp_path / "pkg"
    _write(pkg, "__init__.py", "from . import low\n")  # re-exporting its own submodule: no cycle by itself
    _write(pkg, "low.py", "import json\n")
    _write(pkg, "high.py", "from .low import x\n")
    assert find_cycle(import_graph(str(pkg), "pkg")) is None
    if planted == "function":  # hidden inside a function, as a lazy import would be
        _write(pkg, "low.py", "def f():\n    from .high import y\n")
        expected = {"pkg.high", "pkg.low"}
    else:  # a submodule that needs a helper defined in its package's __init__, which imports it
        _write(pkg, "__init__.py", "from . import low\nhelper = 1\n")
        _write(pkg, "low.py", "from . import helper\n")
        expected = {"pkg", "pkg.low"}
    cycle = find_cycle(import_graph(str(pkg), "pkg"))
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == expected, cycle


def test_the_real_package_with_a_planted_cycle_fails(tmp_path):
    """The check on the real package: one lazy import added to a copy of a low module makes a cycle."""
    import shutil

    copy = tmp_path / "fsa_seg"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "resources"))
    with open(copy / "apis" / "config.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _planted():\n    from .evaluate import evaluate  # noqa: F401\n")
    cycle = find_cycle(import_graph(str(copy), PACKAGE))
    assert cycle is not None and "fsa_seg.apis.config" in cycle and "fsa_seg.apis.evaluate" in cycle
