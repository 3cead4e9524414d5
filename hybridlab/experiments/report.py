"""The reporting shared by the task chapters (7 vision, 8 audio, 9 text): one call shows a comparison.

:func:`report` turns the results of :func:`~hybridlab.experiments.tasks.compare_devices` into what each
task chapter shows: the table (with the exact numbers attached for the tests), the method against the
digital network, against the static surrogate and against the frozen device, seed by seed, the
learning curves and the hardware budget. :func:`robustness_rows` summarises the results file of
``benchmarks/robustness.py`` (easy and hard data, every device kind, oracle, surrogate, static and
frozen), which the chapters read rather than retrain. The chapters then spend their own cells on
what is specific to their data.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..provenance import provenance
from .tasks import TARGETS, check_targets, comparison_rows, metric_scale

__all__ = ["ROBUSTNESS_METHODS", "compare_to", "linear_baseline", "report", "robustness_rows", "show_robustness"]

#: the training methods of the robustness benchmark, besides the digital network
ROBUSTNESS_METHODS: tuple[str, ...] = ("oracle", "surrogate", "static", "frozen")


def compare_to(rows: Sequence[dict[str, Any]], method: str, baseline: str) -> list[dict[str, Any]]:
    """Per device, ``method`` against ``baseline`` seed by seed (same seed: same weights, device, batches).

    ``rows`` are :func:`comparison_rows` rows (they carry the metric, which says which way is better).

    Returns:
        ``{"device", "diff" (mean of the per-seed differences, table units, positive = ``method``
        better), "per_seed", "better" (seeds where ``method`` is better), "seeds"}`` per device with both.
    """
    by = {(r["method"], r["device"]): r for r in rows}
    out = []
    for r in rows:
        if r["method"] != method or (baseline, r["device"]) not in by:
            continue
        base = by[(baseline, r["device"])]
        sign = 1.0 if r["metric"] == "accuracy" else -1.0  # fewer bits is better
        diff = sign * (np.asarray(r["values"]) - np.asarray(base["values"]))
        out.append({"device": r["device"], "diff": float(diff.mean()), "per_seed": diff.tolist(),
                    "better": int((diff > 0).sum()), "seeds": len(diff)})
    return out


def report(results: Sequence[dict[str, Any]], config: dict[str, Any], *, title: str | None = None) -> list[dict]:
    """Show a task chapter's comparison; returns the rows of :func:`comparison_rows`.

    Displays: the results table (cell output metadata: ``{"config": config, "rows": rows}``); the
    method against digital (the task's target, :data:`TARGETS`), static and frozen, seed by seed; the
    learning curves; the hardware budget per run and per step.
    """
    from .. import plots

    rows = comparison_rows(results)
    metric = results[0]["metric"]
    unit = "test accuracy (%)" if metric == "accuracy" else "bits per character"
    gap = "vs digital (points)" if metric == "accuracy" else "vs digital (bits)"
    seeds = config.get("seeds", [])
    print(f"{config.get('data', '')}; mean and std over {len(seeds)} seed(s) {tuple(seeds)}"
          + (" (QUICK: tiny runs)" if config.get("quick") else ""))
    plots.show_table(rows, {"run": "run", "seeds": "seeds", "mean": unit, "std": "± std", "gap": gap,
                            "queries": "queries / run", "reconfigurations": "reconfigurations / run",
                            "seconds": "s / run"},
                     {"mean": "{:.2f}" if metric == "accuracy" else "{:.4f}",
                      "std": "{:.2f}" if metric == "accuracy" else "{:.4f}",
                      "gap": "{:+.2f}" if metric == "accuracy" else "{:+.4f}", "queries": "{:,.0f}",
                      "reconfigurations": "{:,.0f}", "seconds": "{:.1f}"},
                     data={"config": config, "rows": rows})
    task = results[0]["task"]
    kind, margin = TARGETS[task]
    what = f"at most {margin:g} points below digital" if kind == "points" else f"at most {margin:g} x digital's bits"
    print(f"target: the method {what} on average" + (" (not meant for QUICK runs)" if config.get("quick") else ""))
    digits = 2 if metric == "accuracy" else 4  # points; bits per character
    for c in check_targets(rows, task):
        print(f"  {c['device']:5s}: method {c['surrogate']:.{digits}f}, digital {c['digital']:.{digits}f} -> target "
              f"{'met' if c['meets_target'] else 'NOT met'}")
    for baseline in ("static", "frozen"):
        for c in compare_to(rows, "surrogate", baseline):
            print(f"  {c['device']:5s}: method - {baseline} = {c['diff']:+.{digits}f} (per seed "
                  f"{', '.join(f'{v:+.{digits}f}' for v in c['per_seed'])}; better on {c['better']} of "
                  f"{c['seeds']})")
    plots.learning_curves_figure(results, title=title or f"{config.get('data', task)}: validation metric during "
                                                          "training").show()
    plots.budget_figure([r for r in rows if r["method"] != "digital"] or rows[:1],
                        title="What one run asks of the device").show()
    return rows


def _load(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `python benchmarks/robustness.py` to produce it")
    by = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by[(r["task"], r["variant"], r["device"], r["method"], r["seed"])] = r
    return list(by.values())


def robustness_rows(results: str | Path | Sequence[dict[str, Any]], task: str | None = None) -> list[dict[str, Any]]:
    """One row per (task, variant, device) of the robustness benchmark: mean and std of every method.

    Args:
        results: the benchmark's results (its JSON lines file or the loaded lines).
        task: keep this task only.

    Returns:
        Rows ``{"task", "variant", "device", <method>, <method>_std, <method>_n ..., "gap",
        "trained_vs_frozen", "oracle_vs_frozen"}`` in table units (accuracy in %, bits per character
        as is). ``gap``: the method minus digital (points; text: percent of digital's bits, positive =
        more bits); ``trained_vs_frozen`` and ``oracle_vs_frozen``: how much training the device
        helped (points; text: percent fewer bits), positive = training helped.
    """
    lines = _load(results) if isinstance(results, (str, Path)) else list(results)
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in lines:
        if task is not None and r["task"] != task:
            continue
        v = metric_scale(r["metric"]) * r["test"]
        groups[(r["task"], r["variant"], "-" if r["method"] == "digital" else r["device"], r["method"])].append(v)
    rows = []
    for t, variant in dict.fromkeys((k[0], k[1]) for k in groups):
        digital = groups.get((t, variant, "-", "digital"), [])
        for device in dict.fromkeys(k[2] for k in groups if k[:2] == (t, variant) and k[2] != "-"):
            row: dict[str, Any] = {"task": t, "variant": variant, "device": device}
            for m, vals in [("digital", digital)] + [(m, groups.get((t, variant, device, m), []))
                                                     for m in ROBUSTNESS_METHODS]:
                row[m] = float(np.mean(vals)) if vals else None
                row[f"{m}_std"] = float(np.std(vals)) if vals else None
                row[f"{m}_n"] = len(vals)
            text = t == "text"

            row["gap"] = None
            if row["surrogate"] is not None and row["digital"] is not None:
                row["gap"] = (100 * (row["surrogate"] / row["digital"] - 1) if text
                              else row["surrogate"] - row["digital"])
            row["trained_vs_frozen"] = _helped(row, "surrogate", text)
            row["oracle_vs_frozen"] = _helped(row, "oracle", text)
            rows.append(row)
    return rows


def _helped(row: dict[str, Any], method: str, text: bool) -> float | None:
    """How much better ``method`` did than the frozen device: points, or percent fewer bits."""
    if row[method] is None or row["frozen"] is None:
        return None
    return 100 * (1 - row[method] / row["frozen"]) if text else row[method] - row["frozen"]


def linear_baseline(data: Any, *, seed: int = 0) -> float:
    """Test accuracy (%) of a logistic regression (scikit-learn) on a dataset's raw features.

    How much room a task leaves: where a linear model on the inputs comes close to the network,
    the comparison of training methods on it says little.
    """
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=1000, random_state=seed)
    model.fit(data.X_train.flatten(1).cpu().numpy(), data.y_train.cpu().numpy())
    return 100 * float(model.score(data.X_test.flatten(1).cpu().numpy(), data.y_test.cpu().numpy()))


def show_robustness(results: str | Path | Sequence[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """Display :func:`robustness_rows` of one task as a table, then per row what training the device
    bought over the frozen device (the method and the oracle); returns the rows."""
    from .. import plots

    lines = _load(results) if isinstance(results, (str, Path)) else list(results)
    rows = robustness_rows(lines, task)
    acc = task != "text"
    fmt = "{:.2f}" if acc else "{:.4f}"
    cols = {"variant": "data", "device": "device", "digital": "digital", "oracle": "oracle",
            "surrogate": "method", "static": "static", "frozen": "frozen device",
            "gap": "method vs digital" + (" (points)" if acc else " (% bits)"),
            "trained_vs_frozen": "trained vs frozen" + (" (points)" if acc else " (% fewer bits)"),
            "oracle_vs_frozen": "oracle vs frozen"}
    formats = {k: fmt for k in ("digital", "oracle", "surrogate", "static", "frozen")}
    formats.update({k: "{:+.2f}" for k in ("gap", "trained_vs_frozen", "oracle_vs_frozen")})
    shown = [{k: "—" if r.get(k) is None else formats[k].format(r[k]) if k in formats else r[k] for k in cols}
             for r in rows]
    plots.show_table(shown, cols, data={"task": task, "rows": rows})
    unit = "points" if acc else "% fewer bits"
    for r in rows:
        if r["trained_vs_frozen"] is not None and r["oracle_vs_frozen"] is not None:
            print(f"{r['variant']:4s} {r['device']:3s}: training the device bought {r['trained_vs_frozen']:+.2f} "
                  f"(the method), {r['oracle_vs_frozen']:+.2f} (the oracle) {unit} over the frozen device")
    print(provenance(r for r in lines if r["task"] == task))
    return rows
