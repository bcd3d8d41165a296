"""The user's script as worker processes see it: imported again, under the name `__mp_main__`.

Every worker starts by running the script that started the supervisor once more, as a module
named `__mp_main__` (multiprocess's spawn preparation, `spawn.prepare`, does it with runpy before
the worker's own code runs), because the registry sends models by reference: the worker finds
them by name at the top level of that import. Two newcomer mistakes follow, and each is caught
here with one message that says what to do:

- No `if __name__ == "__main__":` guard. Each worker would run the script's top level again:
  build a second Supervisor on the same store (`StoreLocked`), submit, serve, and die before
  its handshake, once per worker and restart. `unguarded()` finds, on the call stack, top-level
  code of the script outside such a guard that makes or serves a Supervisor; `serve()` then
  refuses to start any worker (making a Supervisor there is allowed: a script that only submits
  or inspects starts none). `reimported()` is the backstop inside a worker (or a fork server)
  whose import of the script reached `Supervisor(...)` anyway: it raises there, before the store.
- A model defined inside the guard, or inside a function. The worker's import never defines it,
  and unpickling the registry fails with "Can't get attribute 'In' on <module '__mp_main__'>".
  `misplaced()` reads the script with `ast` and says where the model is instead. (A package's
  `__main__.py` run with `python -m pkg` is never imported again at all: `package_main()`.)

What `ast` cannot follow is given the benefit of the doubt: a script that cannot be read or
parsed, one that binds names through a star import, `exec`, `globals()` or `vars()`, an `if`
on `__name__` of another shape than `__name__ == "__main__"`. Nothing is refused then.
"""

from __future__ import annotations

import ast
import functools
import os
import sys
import tokenize
import typing
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any

GUARD = 'if __name__ == "__main__":'
ADVICE = f"put Supervisor(...), submit and serve under `{GUARD}` and keep jobs and models at the top level of the script"
REIMPORTED = (
    "the script's top level ran again in a worker process (workers import the script again, as "
    f"__mp_main__, to find its jobs and models) because it has no `{GUARD}` guard: {ADVICE}"
)


def unguarded_message(where: tuple[str, int], what: str) -> str:
    path, line = where
    return (
        f"{what} from the top level of {path} (line {line}), outside an `{GUARD}` guard: each worker "
        "process imports the script again (as __mp_main__, to find its jobs and models) and would run "
        f"that top level again, so serve() started no worker. {ADVICE[0].upper()}{ADVICE[1:]}. "
        "Runs already submitted stay queued in the store."
    )


def misplaced_message(job: str, model: type, where: str) -> str:
    return (
        f"job {job!r}: its model {model.__name__} is defined {where}, so worker processes, which import "
        "the script again as __mp_main__, cannot find it; define models at the top level of the script "
        f"(outside `{GUARD}`)"
    )


def package_main() -> str | None:
    """The file of `__main__` where it is a `__main__` module run by name (`python -m pkg`, a
    zip application): workers never import it again, so nothing defined there reaches them."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(getattr(main, "__spec__", None), "name", None)
    if path is None or spec is None or not (spec == "__main__" or spec.endswith(".__main__")):
        return None
    return str(path)


def package_main_message(job: str, model: type, path: str) -> str:
    return (
        f"job {job!r}: its model {model.__name__} is defined in {path}, a __main__ module run by name "
        "(python -m pkg), which worker processes do not import again, so they cannot find it; define "
        "models in another module and import them from there"
    )


def reimported() -> bool:
    """Whether this process is running the script's top level again as `__mp_main__`: a
    multiprocess (or multiprocessing) child in its start-up, or a module named `__mp_main__`
    executing its top level on this thread's stack."""
    for name in ("multiprocess.process", "multiprocessing.process"):
        module = sys.modules.get(name)
        if module is not None and getattr(module.current_process(), "_inheriting", False):
            return True
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            return True
        frame = frame.f_back
    return False


def rerun_by_workers(main: ModuleType | None) -> bool:
    """Whether workers run this `__main__` again (as multiprocess's `spawn.prepare` decides):
    a script or a module run with -m, not a package's `__main__`, nor IPython's launcher."""
    path = getattr(main, "__file__", None)
    if path is None:
        return False
    spec = getattr(getattr(main, "__spec__", None), "name", None)
    if spec is not None:
        return spec != "__main__" and not spec.endswith(".__main__")
    return os.path.splitext(os.path.basename(path))[0] != "ipython"


def unguarded(frame: FrameType | None) -> tuple[str, int] | None:
    """The file and line of the script's top-level code, outside its main guard, that is running
    on the stack from `frame` outwards; None where there is none or it cannot be told."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or not rerun_by_workers(main):
        return None
    namespace = main.__dict__
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>" and frame.f_globals is namespace and _same_file(code.co_filename, path):
            script = _read(code.co_filename)
            if script is None:
                return None
            line = frame.f_lineno
            if any(first <= line <= last for first, last in script.guarded_lines):
                return None
            return code.co_filename, line
        frame = frame.f_back
    return None


def misplaced(model: type) -> str | None:
    """Where a class of the script's `__main__` is defined, if a worker's import of the script
    does not define it (inside the main guard, inside a function); None if it does or where that
    cannot be told."""
    qualname = getattr(model, "__qualname__", model.__name__)
    if "<locals>" in qualname:
        return f"inside a function ({qualname})"
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    script = _read(path)
    name = qualname.partition(".")[0]
    if path is None or script is None or script.open or not name.isidentifier() or name in script.top:
        return None
    if name in script.guarded:
        return f"inside the `{GUARD}` block of {os.path.basename(path)}"
    return None


def main_classes(types: Iterable[Any]) -> Iterator[type]:
    """The classes of `__main__` in these models and types: themselves, their type arguments
    (`list[Made]`), and the types of a pydantic model's fields, recursively."""
    seen: set[int] = set()
    todo = deque(types)
    while todo:
        item = todo.popleft()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, type):
            if item.__module__ == "__main__":
                yield item
            fields = getattr(item, "model_fields", None)
            if isinstance(fields, dict):
                todo.extend(getattr(field, "annotation", None) for field in fields.values())
        todo.extend(typing.get_args(item))


# -- reading the script ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    top: frozenset[str]  # names bound when the script is imported under another name
    guarded: frozenset[str]  # names bound under its main guard
    open: bool  # it binds names in ways ast cannot follow
    guarded_lines: tuple[tuple[int, int], ...]  # (first, last) line of each guarded block


def _same_file(a: str, b: str) -> bool:
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _read(path: str | None) -> Script | None:
    if not path:
        return None
    try:
        stamp = os.stat(path).st_mtime_ns
    except (OSError, ValueError):
        return None
    return _parse(path, stamp)


@functools.lru_cache(maxsize=8)
def _parse(path: str, stamp: int) -> Script | None:
    try:
        with tokenize.open(path) as file:
            tree = ast.parse(file.read(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    found = _Bindings()
    found.block(tree.body, guarded=False)
    return Script(frozenset(found.top), frozenset(found.guarded - found.top), found.open, tuple(found.lines))


class _Bindings:
    """The names a module's top level binds, split by whether they are under its main guard."""

    def __init__(self) -> None:
        self.top: set[str] = set()
        self.guarded: set[str] = set()
        self.open = False
        self.lines: list[tuple[int, int]] = []

    def block(self, statements: list[ast.stmt], guarded: bool) -> None:
        for statement in statements:
            self.visit(statement, guarded)

    def visit(self, node: ast.AST, guarded: bool) -> None:
        names = self.guarded if guarded else self.top
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            return  # their bodies bind nothing at the top level
        if isinstance(node, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    self.open = True
                else:
                    names.add(alias.asname or alias.name.partition(".")[0])
            return
        if isinstance(node, ast.If) and _mentions_name(node.test):
            kind = _guard(node.test)
            if kind is not None:
                under, beside = (node.body, node.orelse) if kind else (node.orelse, node.body)
                if under:
                    self.lines.append((under[0].lineno, under[-1].end_lineno or under[-1].lineno))
                self.visit(node.test, guarded)
                self.block(under, guarded=True)
                self.block(beside, guarded)
                return
            self.lines.append((node.lineno, node.end_lineno or node.lineno))  # some other test: not judged
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "globals", "vars"):
            self.open = True
        for child in ast.iter_child_nodes(node):
            self.visit(child, guarded)


def _mentions_name(test: ast.expr) -> bool:
    return any(isinstance(node, ast.Name) and node.id == "__name__" for node in ast.walk(test))


def _guard(test: ast.expr) -> bool | None:
    """True for `__name__ == "__main__"` (or `and` with more), False for `__name__ != "__main__"`,
    None for any other test."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return True if any(_guard(value) is True for value in test.values) else None
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    sides = (test.left, test.comparators[0])
    if not any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides):
        return None
    if not any(isinstance(side, ast.Constant) and side.value == "__main__" for side in sides):
        return None
    op = test.ops[0]
    if isinstance(op, ast.Eq | ast.Is):
        return True
    if isinstance(op, ast.NotEq | ast.IsNot):
        return False
    return None
