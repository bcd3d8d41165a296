"""The API reference: every public name documents itself, and the Sphinx site builds from it.

The site (`.ci/docs`, Sphinx with autodoc and napoleon) is built nitpicky with warnings as
errors, so a docstring or a page that names something that does not exist fails the build. The
pure tests below make a new option fail until it is documented: every parameter of a public
callable is named in its docstring (for a class, in the class docstring).
"""

from __future__ import annotations

import enum
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

import actors
from actors.job import Job, JobOptions

DOCS = ROOT / ".ci" / "docs"
# the classes whose public methods and properties are the API, besides the names of __all__
CLASSES = [actors.Supervisor, actors.Client, actors.Handle, actors.Job, actors.Context, actors.Retry,
           actors.RunRecord, actors.Attempt, actors.Store, actors.SQLiteStore, actors.MemoryStore]
STORES = (actors.SQLiteStore, actors.MemoryStore)  # their Store methods are documented on the contract


def own_doc(obj: Any) -> str:
    """The object's own docstring, '' when it has none (a dataclass's generated one, which only
    repeats the signature, counts as none)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not doc or (isinstance(obj, type) and doc.startswith(f"{obj.__name__}(")):
        return ""
    return inspect.cleandoc(doc)


def parameters(fn: Any) -> list[str]:
    """The names a caller passes (self, cls and positional-only `fn` aside)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p.name for p in signature.parameters.values() if p.name not in ("self", "cls")]


def undocumented(names: list[str], doc: str) -> list[str]:
    return [name for name in names if not re.search(rf"(?<![\w.]){re.escape(name)}\b", doc)]


def members(cls: type) -> list[tuple[str, Any]]:
    """The public methods and properties a class defines itself."""
    found = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            found.append((name, value))
    return found


def member_doc(cls: type, name: str, value: Any) -> str:
    doc = own_doc(value.fget if isinstance(value, property) else value)
    if not doc and cls in STORES and hasattr(actors.Store, name):
        doc = own_doc(getattr(actors.Store, name))
    return doc


PUBLIC = [(name, getattr(actors, name)) for name in actors.__all__]
METHODS = [(cls, name, value) for cls in CLASSES for name, value in members(cls)]


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_every_public_name_has_a_docstring_naming_its_parameters(name: str, obj: Any):
    doc = own_doc(obj)
    assert doc, f"actors.{name} has no docstring"
    if isinstance(obj, type) and (issubclass(obj, enum.Enum) or getattr(obj, "_is_protocol", False)
                                  or issubclass(obj, BaseException) and "__init__" not in vars(obj)):
        return  # an enum, a protocol, or an exception that inherits its __init__ (documented there)
    if isinstance(obj, type):
        init = obj.__dict__.get("__init__")
        names = parameters(obj)
        doc += "\n" + (own_doc(init) if init is not None else "")
    else:
        names = parameters(obj)
    missing = undocumented(names, doc)
    assert not missing, f"the docstring of actors.{name} does not name its parameters {missing}"


@pytest.mark.parametrize(("cls", "name", "value"), METHODS,
                         ids=[f"{cls.__name__}.{name}" for cls, name, _ in METHODS])
def test_every_public_method_has_a_docstring_naming_its_parameters(cls: type, name: str, value: Any):
    doc = member_doc(cls, name, value)
    assert doc, f"{cls.__name__}.{name} has no docstring"
    if isinstance(value, property):
        return
    missing = undocumented(parameters(value), doc)
    assert not missing, f"the docstring of {cls.__name__}.{name} does not name its parameters {missing}"


def test_help_of_job_lists_every_option():
    """`@job(**options)` takes the options of `Job`: help(actors.job) names each of them."""
    options = set(parameters(Job)) - {"fn"}
    assert options == set(JobOptions.__annotations__) | {"input", "output"}
    missing = undocumented(sorted(options), own_doc(actors.job))
    assert not missing, f"help(actors.job) does not list the options {missing}"


def test_the_checks_catch_an_undocumented_option():
    def submit(job: str, *, priority: int = 0, colour: str = "red") -> None:
        """Submit `job` with `priority` (default 0)."""

    assert undocumented(parameters(submit), own_doc(submit)) == ["colour"]
    assert undocumented(["at"], "what=... is not at=") == []
    assert undocumented(["at"], "`at` holds it") == []
    assert undocumented(["at"], "self.at and data") == ["at"]


@pytest.mark.timeout(120)
def test_the_documentation_site_builds_with_every_reference_resolved(tmp_path: Path):
    """`-n` reports every cross-reference that does not resolve and `-W` makes it an error."""
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-n", "-W", "--keep-going", "-q", str(DOCS),
         str(tmp_path / "html")],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert done.returncode == 0, f"the docs build failed:\n{done.stdout}\n{done.stderr}"
    page = (tmp_path / "html" / "api.html").read_text()
    for name in actors.__all__:
        assert f'id="actors.{name}"' in page, f"actors.{name} is missing from the API reference"
