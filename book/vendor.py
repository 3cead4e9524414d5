"""Fetch the book's third-party JavaScript into the ignored folder ``book/_vendor/``.

The built book must work offline, so the scripts that the default Jupyter Book setup loads
from CDNs are fetched here, at build time, and published with the site as ``_vendor/``:

* ``require.js``                  -- RequireJS (npm ``requirejs``), needed by the widget embedder;
* ``html-manager/embed-amd.js``   -- ``@jupyter-widgets/html-manager``: renders saved ipywidgets
                                     state (sliders, tqdm progress bars) in static HTML; with the
                                     icon fonts its style sheet asks for (``html-manager/<hash>.woff2``
                                     and the other formats, webpack assets of the package);
* ``mathjax/``                    -- MathJax 3 (``tex-mml-chtml.js``, the component Sphinx uses by
                                     default, plus everything it may load lazily: TeX extensions,
                                     CHTML fonts, the menu, accessibility and speech modules);
* ``plotly.min.js``               -- copied from the installed ``plotly`` Python package (no npm).

The npm packages are fetched with ``npm pack`` into a temporary folder and only the needed files
are extracted.  Nothing is committed to git: ``book/_vendor/`` is in ``.gitignore``.

The script is idempotent (it skips what is already present at the pinned version) and never
fails the build: without npm or network it prints a warning and the book falls back to the
CDN URLs (see ``book/_ext/offline_assets.py``, which decides per asset at build time).

Usage:  python book/vendor.py [--force]
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

VENDOR = Path(__file__).resolve().parent / "_vendor"

# Pinned npm packages.  html-manager 1.0.x is the embedder for ipywidgets 8.
NPM_PACKAGES = {
    "requirejs": "2.3.8",
    "@jupyter-widgets/html-manager": "1.0.15",
    "mathjax": "3.2.2",
}

# MathJax 3 files the page may load: the combined component, and what it loads lazily.
MATHJAX_KEEP = (
    "es5/tex-mml-chtml.js",
    "es5/input/",          # TeX extensions loaded by autoload ([tex]/...)
    "es5/output/chtml/",   # CHTML fonts (woff-v2)
    "es5/ui/",             # menu, lazy, safe
    "es5/a11y/",           # explorer, semantic enrichment (loaded from the menu)
    "es5/sre/",            # speech rule engine + mathmaps (needed by a11y)
    "es5/adaptors/",
    "LICENSE",
)

# What must exist for each asset group to count as present (checked by the Sphinx extension too).
REQUIRED = {
    "requirejs": ["require.js"],
    # one of the icon fonts (its webpack hash is fixed by the pinned version)
    "@jupyter-widgets/html-manager": ["html-manager/embed-amd.js", "html-manager/1551f4f60c37af51121f.woff2"],
    "mathjax": ["mathjax/tex-mml-chtml.js", "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff"],
    "plotly": ["plotly.min.js"],
}
MANIFEST = VENDOR / "VERSIONS.json"


def _log(msg: str) -> None:
    print(f"[vendor] {msg}", flush=True)


def _manifest() -> dict:
    try:
        return json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return {}


def _present(name: str, version: str, manifest: dict) -> bool:
    return manifest.get(name) == version and all((VENDOR / f).is_file() for f in REQUIRED[name])


def _extract(tgz: Path, mapping) -> int:
    """Extract members of an npm tarball; ``mapping(relpath) -> dest relative path or None``."""
    n = 0
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            rel = PurePosixPath(member.name)
            if rel.parts[:1] != ("package",) or ".." in rel.parts:
                continue
            dest = mapping(str(PurePosixPath(*rel.parts[1:])))
            if dest is None:
                continue
            target = VENDOR / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            n += 1
    return n


def _map_requirejs(rel: str):
    return "require.js" if rel == "require.js" else None


def _map_html_manager(rel: str):
    # embed-amd.js is self-contained (base, controls, output and the CSS are bundled inside);
    # third-party widget modules, which the book does not use, would be fetched from a CDN.
    if rel == "dist/embed-amd.js":
        return "html-manager/embed-amd.js"
    if rel == "dist/embed.js.LICENSE.txt":
        return "html-manager/LICENSE.txt"
    name = PurePosixPath(rel)
    if name.parent == PurePosixPath("dist") and name.suffix in (".woff2", ".woff", ".ttf", ".eot", ".svg"):
        return f"html-manager/{name.name}"  # icon fonts, found through window.__jupyter_widgets_assets_path__
    return None


def _map_mathjax(rel: str):
    for keep in MATHJAX_KEEP:
        if rel == keep or (keep.endswith("/") and rel.startswith(keep)):
            return "mathjax/" + (rel[len("es5/"):] if rel.startswith("es5/") else rel)
    return None


MAPPERS = {
    "requirejs": _map_requirejs,
    "@jupyter-widgets/html-manager": _map_html_manager,
    "mathjax": _map_mathjax,
}


def _npm_pack(specs: list[str], dest: Path) -> list[Path]:
    subprocess.run(
        ["npm", "pack", "--silent", *specs],
        cwd=dest, check=True, timeout=600,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    return sorted(dest.glob("*.tgz"))


def vendor_npm(force: bool) -> bool:
    manifest = _manifest()
    todo = {n: v for n, v in NPM_PACKAGES.items() if force or not _present(n, v, manifest)}
    for name in NPM_PACKAGES:
        if name not in todo:
            _log(f"{name}@{NPM_PACKAGES[name]}: present, skipped")
    if not todo:
        return True
    specs = [f"{n}@{v}" for n, v in todo.items()]
    _log("npm pack " + " ".join(specs))
    with tempfile.TemporaryDirectory(prefix="book-vendor-") as tmp:
        try:
            tarballs = _npm_pack(specs, Path(tmp))
        except FileNotFoundError:
            _log("WARNING: npm not found; the book will load MathJax, RequireJS and the widget "
                 "embedder from CDNs (blank formulas and widgets when read offline).")
            return False
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            detail = (getattr(err, "stderr", "") or "").strip().splitlines()[-3:]
            _log(f"WARNING: npm pack failed ({type(err).__name__}: {' / '.join(detail)}); the book "
                 "will load MathJax, RequireJS and the widget embedder from CDNs.")
            return False
        ok = True
        for name, version in todo.items():
            # npm names the tarball <scope>-<name>-<version>.tgz
            stem = name.lstrip("@").replace("/", "-") + f"-{version}.tgz"
            tgz = Path(tmp) / stem
            if not tgz.is_file():
                _log(f"WARNING: {stem} not produced by npm pack (got {[t.name for t in tarballs]})")
                ok = False
                continue
            # start clean for this package so stale files of another version do not linger
            for f in REQUIRED[name]:
                top = VENDOR / PurePosixPath(f).parts[0]
                if top.is_dir():
                    shutil.rmtree(top)
                elif top.is_file():
                    top.unlink()
            n = _extract(tgz, MAPPERS[name])
            manifest[name] = version
            _log(f"{name}@{version}: extracted {n} files")
        MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return ok


def vendor_plotly(force: bool) -> bool:
    try:
        import plotly
        from plotly.offline import get_plotlyjs_version
    except ImportError:
        _log("WARNING: plotly is not installed; plotly.js will come from its CDN")
        return False
    version = get_plotlyjs_version()
    manifest = _manifest()
    if not force and _present("plotly", version, manifest):
        _log(f"plotly.js {version}: present, skipped")
        return True
    src = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if src.is_file():
        shutil.copyfile(src, VENDOR / "plotly.min.js")
    else:  # layout of other plotly versions
        from plotly.offline import get_plotlyjs
        (VENDOR / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
    manifest = _manifest()
    manifest["plotly"] = version
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _log(f"plotly.js {version}: copied from the plotly package")
    return True


#: a Font Awesome @font-face rule of the embedder's bundled CSS that points at ``../webfonts/`` (a folder
#: the package does not ship): the same families and weights are also declared with the bundled
#: (hashed) font files, so these rules only make the browser request missing files
_UNBUNDLED_FONT_FACE = re.compile(r"@font-face\{[^{}]*\.\./webfonts/[^{}]*\}")


def drop_unbundled_font_faces() -> int:
    """Remove the embedder's @font-face rules whose fonts the package does not ship (idempotent).

    Without this, every page with a widget asks for ``../webfonts/fa-*.woff2`` and gets a 404,
    although the icons render from the bundled copies. Returns the number of rules removed.
    """
    path = VENDOR / "html-manager" / "embed-amd.js"
    if not path.is_file():
        return 0
    text = path.read_text(encoding="utf-8")
    cleaned, n = _UNBUNDLED_FONT_FACE.subn("", text)
    if n:
        path.write_text(cleaned, encoding="utf-8")
        _log(f"html-manager: removed {n} @font-face rules that point at fonts the package does not ship")
    return n


def main(argv: list[str]) -> int:
    force = "--force" in argv
    VENDOR.mkdir(parents=True, exist_ok=True)
    try:
        ok_plotly = vendor_plotly(force)
        ok_npm = vendor_npm(force)
        drop_unbundled_font_faces()
    except Exception as err:  # never fail the build because of the offline assets
        _log(f"WARNING: vendoring failed ({type(err).__name__}: {err}); CDN fallback")
        return 0
    _log(f"done: {VENDOR}" + ("" if ok_npm and ok_plotly else " (incomplete: CDN fallback for the rest)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
