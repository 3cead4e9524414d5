"""Project conventions a reader or CI would trip over."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_are_pinned_and_torch_is_the_cpu_build_on_disk():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [line for line in lines if line]
    assert "torch==2.13.0" in reqs
    unpinned = [r for r in reqs if "==" not in r]
    assert not unpinned, f"unpinned requirements: {unpinned}"
    assert not any(r.startswith(("torchvision", "torchaudio")) for r in reqs)


def test_readme_gives_the_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Set-up on a fresh machine", 1)[1].split("##", 1)[0]
    commands = [line.strip().split("#")[0].strip() for line in block.splitlines() if line.startswith("    ")]
    assert commands == ["make book", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call the README's test command"


def test_chapters_are_committed_without_outputs_and_have_a_quick_parameters_cell():
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in code), f"{path.name} has outputs"
        params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
        assert re.search(r"^QUICK\s*=\s*False", "".join(params[0]["source"]), re.M), \
            f"{path.name}: the parameters cell must set QUICK = False (the book runs chapters in full)"


def test_no_hard_coded_cpu_in_the_package():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "hybridlab").rglob("*.py")
                 if re.search(r"""device\s*=\s*["']cpu["']|torch\.device\(["']cpu["']\)""", p.read_text())]
    assert not offenders, f"hard-coded CPU in {offenders}"
