"""Sphinx configuration for the streamproto docs site: `python3 dev.py docs` builds it.

The source directory is the repository root, not ``docs/``: the pages link to ``spec/``,
``fuzz/`` and ``examples/`` by their relative paths (so they read the same on a forge), and
those links only resolve when Sphinx sees the same tree. ``include_patterns`` keeps it to the
Markdown pages; everything else the pages link to becomes a download.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import streamproto  # noqa: E402 - after the path is set
import transports  # noqa: E402

project = "streamproto"
author = "the streamproto authors"
copyright = "the streamproto authors"
release = streamproto.__version__
version = release

root_doc = "docs/index"
include_patterns = ["docs/*.md", "docs/**/*.md", "spec/*.md", "fuzz/README.md"]
exclude_patterns = [".venv", "build", "**/node_modules", "docs/_build"]

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinxcontrib.mermaid",
]

source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
# Anchors like spec/PROTOCOL.md#14-limits are the forge's heading slugs; make the same ones.
myst_heading_anchors = 4
# The state diagrams are ```mermaid fences (generated from the tables); draw them.
myst_fence_as_directive = ["mermaid"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"streamproto {release}"
html_extra_path = ["_extra"]  # relative to this directory: the redirect to docs/index.html

#: Modules the API page ends with, each under a short introduction: their names repeat some
#: that ``streamproto`` and ``transports`` export, which are described once, above them.
EXTRA_MODULES = {
    "transports.adapter": "The public API for adapter authors: backends' base classes and URL "
    "schemes (see [writing an adapter](adapters.md)).",
    "transports.embedding": "Helpers for embedding the hub in another framework.",
}
#: The error pages nest under their index in the navigation; the toctree is added here so
#: that the page reads cleanly on a forge too.
ERROR_PAGES_TOCTREE = "\n\n```{toctree}\n:hidden:\n:glob:\n\n*\n```\n"


def _documented_above(name: str) -> list[str]:
    """The classes and functions module ``name`` exports that docs/api.md already documents
    under the package that exports them too (``transports.Url`` and an adapter module's
    ``Url`` are one class)."""
    module = importlib.import_module(name)
    seen = {
        id(obj)
        for package in (streamproto, transports)
        for attr in package.__all__
        if isinstance(obj := getattr(package, attr), type) or inspect.isfunction(obj)
    }
    return [attr for attr in getattr(module, "__all__", ()) if id(getattr(module, attr)) in seen]


def _complete_sources(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname == "docs/index":
        unlisted = [
            path.stem
            for path in sorted((ROOT / "docs").glob("*.md"))
            if path.stem != "index" and not re.search(rf"^{re.escape(path.stem)}$", source[0], re.M)
        ]
        if unlisted:  # a page added without a place in the navigation still gets one
            entries = "\n".join(unlisted)
            source[0] += f"\n```{{toctree}}\n:caption: More\n:maxdepth: 1\n\n{entries}\n```\n"
    elif docname == "docs/api":
        for name, text in EXTRA_MODULES.items():
            source[0] += f"\n## `{name}`\n\n{text}\n\n```{{eval-rst}}\n"
            source[0] += f".. automodule:: {name}\n   :members:\n"
            again = _documented_above(name)
            if again:  # one description per object, or Sphinx warns of a duplicate
                source[0] += f"   :exclude-members: {', '.join(again)}\n"
            source[0] += "```\n"
    elif docname == "docs/errors/index":
        source[0] += ERROR_PAGES_TOCTREE


def _skip_module_docstrings(  # noqa: PLR0917 - the event's signature
    app: object, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    # Module docstrings hold each file's rules for its maintainers (h11's habit), not API text;
    # docs/api.md introduces each module itself.
    if what == "module":
        lines.clear()


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-docstring", _skip_module_docstrings)
    app.connect("source-read", _complete_sources)
