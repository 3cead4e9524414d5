"""Which code made a result: a fingerprint of the package's code, recorded in every benchmark result.

The benchmarks (``benchmarks/resumable.py``) write it into each line of their results files, and the
chapters that read those files (:func:`hybridlab.experiments.show_robustness`) say how many of the
lines the present code made, so that a number computed by older code is never shown as a current one.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["PACKAGE", "code_fingerprint", "provenance"]

#: The package's own folder.
PACKAGE = Path(__file__).resolve().parent


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_fingerprint(package: Path = PACKAGE) -> str:
    """12 hex digits that change with any change of the code of ``package`` (every ``*.py`` below it) and
    not with a change of comments, docstrings or layout (it hashes the syntax trees without docstrings)."""
    h = hashlib.sha256()
    for path in sorted(Path(package).rglob("*.py")):
        tree = _without_docstrings(ast.parse(path.read_text(encoding="utf-8")))
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()[:12]


def provenance(lines: Iterable[dict[str, Any]]) -> str:
    """One sentence on which code made the result ``lines`` (each may hold its fingerprint as ``"code"``)."""
    lines = list(lines)
    code = code_fingerprint()
    current = sum(r.get("code") == code for r in lines)
    sentence = f"{current} of {len(lines)} runs were made by this version of hybridlab's code (fingerprint {code})"
    if current < len(lines):
        sentence += "; the others by other code: run the benchmark again to bring them up to date"
    return sentence
