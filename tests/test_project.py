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


# ------------------------------------------------------------------------------ package anatomy
PACKAGE = ROOT / "hybridlab"
MAX_MODULE_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The hybridlab modules that ``path`` imports, at the top or inside functions."""
    import ast

    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def test_the_package_imports_flow_one_way_and_only_the_entry_points_import_the_command_line():
    graph = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    importers_of_cli = sorted(m for m, deps in graph.items() if "hybridlab.cli" in deps)
    assert importers_of_cli == ["hybridlab.__main__"], f"modules importing hybridlab.cli: {importers_of_cli}"

    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = path[path.index(d):] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_importing_the_experiments_does_not_import_the_command_line():
    import subprocess
    import sys

    code = "import sys, hybridlab.experiments; print('hybridlab.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_of_the_package_is_long():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


def test_ruff_passes():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    proc = subprocess.run([ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_chapter_uses_the_same_kernel():
    specs = {json.dumps(json.loads(p.read_text())["metadata"].get("kernelspec"), sort_keys=True)
             for p in (ROOT / "chapters").glob("*.ipynb")}
    assert len(specs) == 1, f"chapters use several kernelspecs: {specs}"
