"""Fixtures shared by the test modules.

``quick_chapters`` (session scope) executes each chapter at most once per test session, the way the
book build runs it, in QUICK mode: papermill injects ``QUICK = True`` after the cell tagged
``parameters``, a fresh ``python3`` kernel runs it with ``chapters/`` as the working directory and
the environment the build gives its kernels (:data:`BOOK_BUILD_ENV`, set by
``book/_ext/offline_assets.py``: plotly figures as HTML only, no progress bars), and this checkout's
``hybridlab`` first on the kernel's path (the package the test process imports, also where a
virtual environment shared by several checkouts has another one installed).  The executed
notebooks serve both the chapter checks (``test_chapters.py``, ``test_book_content.py``) and the
rendered book (``test_book.py``), which is built from them.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 300  # seconds; a hung cell fails the chapter instead of blocking the suite
sys.path.insert(0, str(ROOT / "book" / "_ext"))
from offline_assets import KERNEL_ENV as BOOK_BUILD_ENV  # noqa: E402  what the build gives its kernels


@dataclass(frozen=True)
class QuickRun:
    """One chapter executed in QUICK mode."""

    notebook: Any   # the executed notebook (nbformat.NotebookNode)
    seconds: float  # wall time of the execution, kernel start included
    path: Path      # where the executed notebook was written


class QuickChapters:
    """Executes chapters in QUICK mode, each at most once; a chapter that fails fails every time it is asked
    for, without running again."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._runs: dict[Path, QuickRun | Exception] = {}

    def run(self, path: Path) -> QuickRun:
        """The QUICK run of the chapter notebook ``path`` (executed on the first call)."""
        path = path.resolve()
        if path not in self._runs:
            try:
                self._runs[path] = self._execute(path)
            except Exception as exc:  # remembered: a failing chapter is not run again
                self._runs[path] = exc
        result = self._runs[path]
        if isinstance(result, Exception):
            raise result
        return result

    def _execute(self, path: Path) -> QuickRun:
        papermill = pytest.importorskip("papermill")
        out = self.folder / path.name
        with pytest.MonkeyPatch.context() as env:  # inherited by the kernel papermill starts
            for key, value in BOOK_BUILD_ENV.items():
                env.setenv(key, value)
            # the package of this checkout, as in the test process, even where another copy is installed
            env.setenv("PYTHONPATH", str(ROOT), prepend=os.pathsep)
            start = time.perf_counter()
            nb = papermill.execute_notebook(
                str(path), str(out), parameters={"QUICK": True}, kernel_name="python3",
                cwd=str(path.parent), progress_bar=False, execution_timeout=CELL_TIMEOUT,
            )
            seconds = time.perf_counter() - start
        return QuickRun(nb, seconds, out)


@pytest.fixture(scope="session")
def quick_chapters(tmp_path_factory) -> QuickChapters:
    """The chapters executed in QUICK mode as the book build runs them, once per test session."""
    return QuickChapters(tmp_path_factory.mktemp("quick_chapters"))
