"""The embedded default corpus: real English that every Python installation carries.

`pydoc_data.topics` (the language reference's help topics) plus the docstrings
of the standard library's modules, classes and functions, read with `ast` so no
module is imported. About 2 MB; documents are separated by `<|endoftext|>` in
a fixed order, so the corpus is the same on every run of the same Python.
"""

from __future__ import annotations

import ast
import os
import sysconfig
from pathlib import Path

EOT = "<|endoftext|>"
_SKIP_PARTS = {"test", "tests", "site-packages", "idlelib", "lib2to3", "turtledemo"}


def embedded_documents(min_chars: int = 80) -> list[str]:
    """The documents of the embedded corpus, in a fixed order."""
    import pydoc_data.topics

    docs = [pydoc_data.topics.topics[k].strip() for k in sorted(pydoc_data.topics.topics)]
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if _SKIP_PARTS.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars and EOT not in doc:
                    docs.append(doc.strip())
    return [d for d in docs if d]


def write_embedded_corpus(path: str | os.PathLike) -> Path:
    """Write the corpus to `path` (once; an existing file is reused)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(EOT.join(embedded_documents()), encoding="utf-8")
    tmp.replace(path)
    return path
