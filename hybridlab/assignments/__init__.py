"""Classroom assignments: instructor sources, the student release and an offline grader.

The instructor sources (``hybridlab/assignments/source/NN_name.ipynb``) follow the nbgrader
convention (solution regions, hidden-test regions, nbgrader cell metadata), so a course that uses
nbgrader can take them unchanged. Without nbgrader, two commands do the same job::

    python -m hybridlab assignments release --out DIR          # student versions into DIR
    python -m hybridlab assignments grade NOTEBOOK [--json]     # points per graded cell

* :func:`release` / :func:`release_notebook`: solutions replaced by ``# YOUR CODE HERE`` and
  ``raise NotImplementedError()``, hidden tests removed, outputs cleared, metadata kept;
* :func:`grade`: hidden tests put back from the instructor source, the notebook run with a fixed
  seed and a per-cell timeout, a :class:`GradeReport` with the points of every graded cell.

The command-line wiring is :func:`add_subcommands` (adds ``assignments`` to an argparse
subparsers object) and :func:`main` (runs the parsed arguments, returns the exit code).
"""

from __future__ import annotations

import argparse
import sys

from .grader import DEFAULT_SEED, DEFAULT_TIMEOUT, CellResult, GradeReport, grade, grade_notebook
from .notebooks import (
    CODE_STUB,
    SOURCE_DIR,
    Assignment,
    check_source,
    describe,
    find_source,
    load_source,
    release,
    release_notebook,
    restore_locked_cells,
    sources,
    student_markdown,
)

__all__ = [
    "SOURCE_DIR", "CODE_STUB", "Assignment", "sources", "describe", "find_source", "load_source", "check_source",
    "release", "release_notebook", "restore_locked_cells", "student_markdown",
    "CellResult", "GradeReport", "grade", "grade_notebook", "add_subcommands", "main",
]


def add_subcommands(subparsers) -> argparse.ArgumentParser:
    """Add ``assignments release`` and ``assignments grade`` to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "assignments", help="release the classroom assignments or grade a student's notebook",
        description="Classroom assignments (nbgrader-compatible sources shipped with hybridlab): "
                    "write the student versions, or grade a submitted notebook offline.")
    sub = parser.add_subparsers(dest="assignments_command", required=True)
    p = sub.add_parser("release", help="write the student versions (no solutions, no hidden tests)",
                       description="Write the student version of each assignment into a folder.")
    p.add_argument("--out", required=True, help="folder for the student notebooks (created if needed)")
    p.add_argument("names", nargs="*", help="assignments to release, e.g. 01 or 01_sketch_fit (default: all)")
    p = sub.add_parser("grade", help="grade a student's notebook (hidden tests included)",
                       description="Put the hidden tests back, run the notebook (fixed seed, per-cell timeout) "
                                   "and report the points of every graded cell.")
    p.add_argument("notebook", help="the submitted notebook (.ipynb)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--source", help="the instructor source to grade against (default: found from the notebook)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds per cell before it is interrupted (default: {DEFAULT_TIMEOUT:g})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"global random seed (default: {DEFAULT_SEED})")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``assignments release`` / ``assignments grade``; return the exit code (0 ok, 2 bad input)."""
    try:
        if args.assignments_command == "release":
            for path in release(args.out, args.names or None):
                print(path)
            return 0
        if args.timeout <= 0:
            raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
        report = grade(args.notebook, source=args.source, timeout=args.timeout, seed=args.seed)
    except (ValueError, OSError) as err:
        print(f"hybridlab: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.to_text())
    return 0
