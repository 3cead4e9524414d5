"""The budget explorer's figure: its two sliders compose, in a real browser, and it draws the grid it is given.

The figure is built from synthetic grid points (no training): what is tested is the figure, not the
runs. The browser test opens it in headless Chromium (plotly.js inlined, no network), moves each
slider by dispatching mouse events on its rail, as a pointer would, and reads which runs plotly
then draws: for every (rank, samples) pair, exactly the three runs of that grid point.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile

import pytest

from hybridlab.explorer import budget_explorer_figure
from hybridlab.hardware import TIMINGS

RANKS, SAMPLES, UPKEEPS = (1, 4, 16), (1, 5, 20), ("ksl", "forward", "none")


def fake_points():
    points = []
    for i, (r, m, u) in enumerate(itertools.product(RANKS, SAMPLES, UPKEEPS)):
        q, c = 1000 * (1 + m) + (100 * r if u == "ksl" else 0), 100 * (1 + m)
        points.append({"rank": r, "samples": m, "upkeep": u, "device": "mrr", "accuracy_pct": 50 + i,
                       "queries": q, "reconfigurations": c,
                       "hardware_s": {k: q * t.query + c * t.reconfiguration for k, t in TIMINGS.items()},
                       "history": {"steps": [1, 2, 3], "metric": [0.1, 0.2 + 0.001 * i, 0.3]}})
    return points


def shown(fig):
    """(rank, samples, upkeep) of the point traces that are visible and opaque."""
    fixed = len(fig.data) - 2 * len(fake_points())
    out = set()
    for p, i in zip(fake_points(), range(fixed, len(fig.data), 2)):
        for t in (fig.data[i], fig.data[i + 1]):
            if t.visible is not False and (t.opacity is None or t.opacity > 0):
                out.add((p["rank"], p["samples"], p["upkeep"]))
    return out


def test_the_initial_figure_shows_exactly_the_selected_point_and_the_pareto_front():
    fig = budget_explorer_figure(fake_points(), rank=4, samples=5)
    assert shown(fig) == {(4, 5, u) for u in UPKEEPS}
    front = next(t for t in fig.data if t.name == "Pareto front")
    ys = list(front.y)
    assert ys == sorted(ys) and len(ys) >= 1  # more time, more accuracy along the front
    with pytest.raises(ValueError, match="grid point"):
        budget_explorer_figure(fake_points(), rank=2)


def test_each_slider_step_sets_its_own_attribute_for_every_trace():
    fig = budget_explorer_figure(fake_points())
    n = len(fig.data)
    rank_slider, samples_slider = fig.layout.sliders
    for step in rank_slider.steps:
        assert set(step.args[0]) == {"visible"} and len(step.args[0]["visible"]) == n
    for step in samples_slider.steps:
        assert set(step.args[0]) == {"opacity", "hoverinfo"} and len(step.args[0]["opacity"]) == n


PROBE = """<script>
// plotly applies a slider step on the next animation frame; a headless page under virtual time may
// not paint frames, so frames become zero-delay timers (the only change to the page)
window.requestAnimationFrame = function (cb) { return setTimeout(function () { cb(performance.now()); }, 0); };
window.addEventListener('load', function () { setTimeout(function () {
  var gd = document.querySelector('.js-plotly-plot');
  var rails = gd.querySelectorAll('.slider-rail-touch-rect');
  function move(k, frac) {            // press the k-th slider's rail at a fraction of its width
    var b = rails[k].getBoundingClientRect();
    var x = b.left + frac * b.width, y = b.top + b.height / 2;
    ['mousedown', 'mouseup'].forEach(function (type) {
      rails[k].dispatchEvent(new MouseEvent(type, {bubbles: true, clientX: x, clientY: y, view: window}));
    });
    window.dispatchEvent(new MouseEvent('mouseup', {bubbles: true, clientX: x, clientY: y, view: window}));
  }
  var nr = NR, ns = NS, seen = [];
  function drawn() {
    var out = [];
    gd._fullData.forEach(function (t, i) {
      if (i >= FIXED && t.visible === true && t.opacity > 0) out.push(Math.floor((i - FIXED) / 2));
    });
    return out.filter(function (v, j, a) { return a.indexOf(v) === j; });
  }
  var order = [];
  for (var i = 0; i < nr; i++) for (var j = 0; j < ns; j++) order.push([i, j]);
  order.reverse();  // move both sliders, in an order that leaves each one elsewhere in between
  // plotly applies a slider's step on the next animation frame: wait between moves
  function next(k) {
    if (k === order.length) {
      var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(seen);
      document.body.appendChild(pre);
      return;
    }
    var ij = order[k];
    move(0, (ij[0] + 0.5) / nr);
    setTimeout(function () {
      move(1, (ij[1] + 0.5) / ns);
      setTimeout(function () {
        seen.push({rank: ij[0], samples: ij[1], points: drawn(),
                   active: [gd.layout.sliders[0].active, gd.layout.sliders[1].active]});
        next(k + 1);
      }, 400);
    }, 400);
  }
  next(0);
}, 800); });
</script>"""


def test_moving_the_sliders_in_a_browser_reaches_every_grid_point(tmp_path):
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian package 'chromium')")
    points = fake_points()
    fig = budget_explorer_figure(points, rank=RANKS[0], samples=SAMPLES[0])
    fixed = len(fig.data) - 2 * len(points)
    page = tmp_path / "explorer.html"
    fig.write_html(page, include_plotlyjs=True, full_html=True, default_width=1000)
    probe = PROBE.replace("NR", str(len(RANKS))).replace("NS", str(len(SAMPLES))).replace("FIXED", str(fixed))
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--virtual-time-budget=30000", "--window-size=1100,800", f"--user-data-dir={profile}",
                               "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the probe did not run: {proc.stderr[-1500:]}"
    seen = json.loads(m.group(1).replace("&quot;", '"'))
    assert len(seen) == len(RANKS) * len(SAMPLES)
    for s in seen:
        r, mm = RANKS[s["rank"]], SAMPLES[s["samples"]]
        assert s["active"] == [s["rank"], s["samples"]], s
        want = sorted(k for k, p in enumerate(points) if p["rank"] == r and p["samples"] == mm)
        assert sorted(s["points"]) == want, (r, mm, s)
