"""Sphinx configuration of the API reference (built by tests/test_docs.py and CI).

Build: `python -m sphinx -b html -n -W --keep-going .ci/docs docs-html`. `-n` (nitpicky) makes
every cross-reference that does not resolve a warning, and `-W` turns warnings into errors, so
a docstring naming a class, method or option that does not exist fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the checkout's actors, installed or not

project = "actors"
author = "actors contributors"
release = version = "0.1.0"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

# `name` in a docstring reads as inline code (the docstrings are also read by help()); an
# explicit :class:`Handle` / :meth:`Supervisor.submit` is a checked cross-reference.
default_role = "code"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False  # True breaks the signatures of dataclasses with field(default_factory=...)
autodoc_default_options = {"members": True, "show-inheritance": True}

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as field lists, not second targets beside autodoc's

nitpicky = True
# No intersphinx (the build runs offline): names from the standard library and from pydantic
# in signatures are not documented here, so they are the only ones allowed not to resolve.
nitpick_ignore_regex = [
    ("py:class", r"(typing|collections\.abc|datetime|os|random|logging|types|enum|pathlib)\..*"),
    ("py:class", r"pydantic(_core)?\..*"),
    ("py:exc", r"pydantic(_core)?\..*"),
    ("py:class", r"(Any|Callable|Iterable|Sequence|Coroutine|Generator|datetime|timedelta|PathLike"
                 r"|LoggerAdapter|Random|BaseException|Exception|TypeVar)"),
    ("py:class", r"actors\.(job|handle|client|context|supervisor\.supervisor)\.(In|Out|T)"),
    ("py:class", r"(In|Out|T)"),
    # the stores' durable-execution mixins: internal halves of SQLiteStore, shown as their bases
    ("py:class", r"actors\.stores\.(sqlite|postgres)_durable\.Durable(SQLite|Postgres)"),
    ("py:obj", r"(actors\.[a-z.]+\.)?(In|Out|T)"),
    # aliases that exist only for type checkers (`if TYPE_CHECKING:` in actors/job.py)
    ("py:class", r"(AsyncJobFunction|JobFunction)"),
]


def _factory_defaults(app, what, name, obj, options, signature, return_annotation):  # type: ignore[no-untyped-def]
    """A dataclass field with `default_factory` shows `= <factory>`, which is not Python, and
    Sphinx then splits the signature at every comma (`list[tuple[int` as a type): show `...`."""
    if signature and "<factory>" in signature:
        signature = signature.replace("<factory>", "...")
    return signature, return_annotation


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-process-signature", _factory_defaults)
