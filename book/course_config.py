"""Write the configuration of the book's course edition: every exercise solution hidden.

``make book`` builds the book for self-study, with each exercise's solution in a dropdown under
it. ``make course`` builds the same book for a course in which the exercises are homework: this
script copies ``_config.yml`` with sphinx-exercise's ``hide_solutions`` switched on (solutions
are left out of the HTML altogether) and a title that says which edition it is::

    python book/course_config.py _build/course_config.yml
    jupyter-book build --all --config _build/course_config.yml --path-output _build/course .

Paths of local Sphinx extensions are resolved relative to the configuration file, so they are
made absolute here; every other path in the configuration is relative to the book's folder and
stays as it is.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def course_config(config: dict, root: Path = ROOT) -> dict:
    """The course edition of a Jupyter Book configuration (``config`` is left unchanged).

    Args:
        config: the parsed ``_config.yml``.
        root: the folder that ``config`` came from (its local extension paths are relative to it).
    """
    config = copy.deepcopy(config)
    sphinx = config.setdefault("sphinx", {})
    sphinx.setdefault("config", {})["hide_solutions"] = True
    extensions = sphinx.get("local_extensions") or {}
    if extensions:
        sphinx["local_extensions"] = {name: str((Path(root) / path).resolve()) for name, path in extensions.items()}
    config["title"] = f"{config.get('title', 'Book')} (course edition)"
    return config


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python book/course_config.py OUT.yml [BOOK_FOLDER]", file=sys.stderr)
        return 2
    root = Path(argv[2]).resolve() if len(argv) == 3 else ROOT
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    out = Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(course_config(config, root), sort_keys=False), encoding="utf-8")
    print(f"wrote {out} (the book at {root} with every exercise solution hidden)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
