"""Imports point one way (STYLE practice 2), checked by parsing the sources with ast:

- `actors.protocol`, `actors.job` and `actors.errors` import nothing from `actors.supervisor` or
  `actors.worker`, directly or through the modules they import;
- nothing under `actors/worker/` imports `actors.stores`, directly or transitively;
- nothing in `actors/` but the package's `__init__.py` imports `actors.client` (a `Handle` talks
  to a `RunOwner` from `actors.handle`, so the supervisor never needs the client);
- the supervisor's tracker (runs in flight) imports neither the pool (processes) nor the loop,
  directly or transitively, so its tests start no process (checked once the file exists).

Only the edges written in the source count: that importing `actors.x.y` also runs the package
`actors/__init__.py` is Python's doing, not a dependency of the module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "actors"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(path: Path) -> set[str]:
    """Absolute names of the actors modules this file imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from . import x` / `from .pkg import mod` may name submodules
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if (target == "actors" or target.startswith("actors.")) and module_path(target) is not None:
                found.add(target)
    return found


def closure(start: str) -> dict[str, list[str]]:
    """Every actors module reachable from `start` by source imports, with the path that reached it."""
    seen: dict[str, list[str]] = {start: [start]}
    todo = [start]
    while todo:
        current = todo.pop()
        path = module_path(current)
        assert path is not None, current
        for target in imports_of(path):
            if target not in seen:
                seen[target] = [*seen[current], target]
                todo.append(target)
    return seen


def forbidden(reached: dict[str, list[str]], *prefixes: str) -> list[str]:
    return [
        " -> ".join(chain)
        for target, chain in reached.items()
        if any(target == p or target.startswith(p + ".") for p in prefixes)
    ]


def test_the_import_parser_sees_relative_and_absolute_imports():
    assert "actors.protocol" in imports_of(PACKAGE / "worker" / "main.py")
    assert "actors.worker.execute" in imports_of(PACKAGE / "worker" / "main.py")
    assert "actors.supervisor.supervisor" in imports_of(PACKAGE / "__init__.py")
    assert "actors.client" in imports_of(PACKAGE / "__init__.py")
    assert "actors.stores" in imports_of(PACKAGE / "supervisor" / "supervisor.py")
    assert forbidden(closure("actors.supervisor.supervisor"), "actors.stores")  # it does use the store


@pytest.mark.parametrize("module", ["actors.protocol", "actors.job", "actors.errors"])
def test_core_modules_import_nothing_from_supervisor_or_worker(module):
    assert forbidden(closure(module), "actors.supervisor", "actors.worker") == []


WORKER_MODULES = sorted(module_name(p) for p in (PACKAGE / "worker").rglob("*.py"))


def test_the_worker_package_has_modules():
    assert "actors.worker.main" in WORKER_MODULES and "actors.worker.execute" in WORKER_MODULES


@pytest.mark.parametrize("module", WORKER_MODULES)
def test_worker_never_imports_the_store(module):
    assert forbidden(closure(module), "actors.stores") == []


PACKAGE_MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


# the faces over the public API: the package, the command and the dashboard
FACES = ("actors", "actors.cli", "actors.dashboard")


def test_nothing_but_the_package_faces_import_the_client():
    importers = [m for m in PACKAGE_MODULES if not m.startswith(FACES) and "actors.client" in imports_of(module_path(m))]
    assert importers == []


# rules for modules being written: each is checked once its file exists
APART = {"actors.supervisor.tracker": ("actors.supervisor.pool", "actors.supervisor.loop")}


@pytest.mark.parametrize("module", sorted(APART))
def test_the_tracker_imports_neither_the_pool_nor_the_loop(module):
    if module_path(module) is not None:
        assert forbidden(closure(module), *APART[module]) == []


def test_import_actors_loads_nothing_that_only_serving_needs():
    """A submitting process (a Client, the CLI, a web handler) pays for none of the serving
    machinery; `actors.Supervisor` loads it when first used."""
    import subprocess
    import sys

    serving = ("actors.supervisor.supervisor", "actors.supervisor.loop", "uvloop", "multiprocess", "dill", "psutil",
               "croniter", "asyncio")
    code = ("import sys, actors\n"
            f"print(sorted(m for m in {serving!r} if m in sys.modules))\n"
            "actors.Supervisor\n"
            "print('actors.supervisor.supervisor' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout
