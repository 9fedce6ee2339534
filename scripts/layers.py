"""Count the imports that run against the layers of STYLE.md, import cycles, and imports of other apps' views.

Layers, from the ground up (an app may import its own layer and the ones below):
``byok_portal`` (kernel) < ``audit`` < ``accounts`` < ``keystores`` < ``keys`` < ``approvals`` < ``tokens``
< ``notifications`` < ``reports`` < ``jobs``.
Every ``import``/``from … import`` statement in app code counts (module level, inside
functions and under ``TYPE_CHECKING`` alike), except migrations. Each (module, imported
module) pair counts once. The project's composition roots, which Django loads by name
and which put the apps together (the root URLconf ``byok_portal/urls.py`` and
``api_urls.py``, ``settings.py``, ``celery.py``, ``asgi.py``, ``wsgi.py``), sit above
every app, not in the kernel.

    .venv/bin/python scripts/layers.py            # summary and every upward import
    .venv/bin/python scripts/layers.py --runtime  # leave out imports under TYPE_CHECKING
    .venv/bin/python scripts/layers.py --json     # the same, for tests (tests/test_layers.py)

Exit status 0 always: this measures, it does not judge.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = (
    "byok_portal",
    "audit",
    "accounts",
    "keystores",
    "keys",
    "approvals",
    "tokens",
    "notifications",
    "reports",
    "jobs",
)
RANK = {app: rank for rank, app in enumerate(LAYERS)}
COMPOSITION_ROOTS = {f"byok_portal.{name}" for name in ("urls", "api_urls", "settings", "celery", "asgi", "wsgi")}
TOP = len(LAYERS)


def _rank(module: str) -> int:
    return TOP if module in COMPOSITION_ROOTS else RANK[module.split(".")[0]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of statements inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for inner in ast.walk(child):
                    if hasattr(inner, "lineno"):
                        lines.add(inner.lineno)
    return lines


def _imports(path: Path, runtime_only: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = _type_checking_lines(tree) if runtime_only else set()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if node.lineno in skip if hasattr(node, "lineno") else False:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from keys import services`` imports the module keys.services.
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                as_module = (
                    ROOT.joinpath(*candidate.split(".")).with_suffix(".py").exists()
                    or ROOT.joinpath(*candidate.split("."), "__init__.py").exists()
                )
                found.append((node.lineno, candidate if as_module else node.module))
    return found


def _app_files() -> list[Path]:
    files: list[Path] = []
    for app in LAYERS:
        files += [p for p in sorted((ROOT / app).rglob("*.py")) if "migrations" not in p.parts]
    return files


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", action="store_true", help="leave out imports under TYPE_CHECKING")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args()
    upward: set[str] = set()
    views_imports: set[str] = set()
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p) for p in _app_files()}
    for path in _app_files():
        source = _module_name(path)
        source_app = source.split(".")[0]
        for _line, target in _imports(path, args.runtime):
            target_app = target.split(".")[0]
            if target_app not in RANK:
                continue
            if target in modules:
                graph.setdefault(source, set()).add(target)
            where = str(path.relative_to(ROOT))
            # Within one app there are no layers (the kernel's package __init__ loads its Celery app).
            if target_app != source_app and _rank(target) > _rank(source):
                upward.add(f"{where}  {source} -> {target}")
            if target_app != source_app and target.split(".")[-1] == "views" and source not in COMPOSITION_ROOTS:
                views_imports.add(f"{where}  {source} -> {target}")
    cycles = _cycles(graph)
    if args.json:
        edges = sorted(entry.split("  ", 1)[1] for entry in upward)
        views = sorted(entry.split("  ", 1)[1] for entry in views_imports)
        print(json.dumps({"upward": edges, "cycles": cycles, "views_imports": views}))
        return 0
    print(f"upward imports: {len(upward)}")
    for entry in sorted(upward):
        print(f"  {entry}")
    pairs = {(e.split()[1].split(".")[0], e.split()[3].split(".")[0]) for e in upward}
    print(f"upward app pairs: {len(pairs)} {sorted(pairs)}")
    print(f"import cycles (module level, incl. function-local imports): {len(cycles)}")
    for component in cycles:
        print(f"  {' <-> '.join(component)}")
    print(f"imports of another app's views module: {len(views_imports)}")
    for entry in sorted(views_imports):
        print(f"  {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
