"""Does each task variant discriminate? A logistic regression against the task's small network.

For each task (vision, audio), variant (easy, hard) and seed, the training split is divided
into a fit part and a validation part (:func:`hybridlab.data.validation_split`, whole groups held
out); every choice is made on validation and the test split is read once per model:

* logistic regression (scikit-learn, standardised flattened features), ``C`` from a grid;
* the task's network (:func:`hybridlab.models.build_model`, digital) trained with
  :func:`hybridlab.train.train_classifier` at each learning rate of a grid (default 1e-2, 3e-3);
  the learning rate and the epoch count (default 15..25) with the best validation accuracy win.

A variant discriminates when the logistic regression stays at most 80 % while the network
reaches 95 %. Run ``python benchmarks/data_variants.py`` (``--jobs 2`` on two cores, ``--quick``
for a smoke run); the data are generated (or read from the cache) first, and the table is
printed in Markdown. Only accuracies are compared; ``load s`` (generation or cache read) is
wall-clock time and depends on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hybridlab.data import load_task, validation_split
from hybridlab.models import build_model
from hybridlab.train import accuracy, train_classifier

C_GRID = (1e-3, 1e-2, 1e-1, 1.0)


def logistic_regression(train, val, c_grid=C_GRID, seed: int = 0) -> dict:
    """Fit on ``val``'s training part for each C, keep the best on validation, score on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_fit, y_fit = val.X_train.flatten(1).numpy(), val.y_train.numpy()
    X_val, y_val = val.X_test.flatten(1).numpy(), val.y_test.numpy()
    best = None
    for c in c_grid:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        clf.fit(X_fit, y_fit)
        score = clf.score(X_val, y_val)
        if best is None or score > best[0]:
            best = (score, c, clf)
    score, c, clf = best
    test = clf.score(train.X_test.flatten(1).numpy(), train.y_test.numpy())
    return {"C": c, "val": score, "test": test}


def network(task: str, train, val, *, lrs, epochs: tuple[int, int], seed: int) -> dict:
    """Train the digital network; choose the learning rate and the epoch count on validation.

    For each learning rate the network trains ``epochs[1]`` epochs with validation accuracy
    after each; the (learning rate, epoch count in ``epochs[0]..epochs[1]``) with the best
    validation accuracy wins (ties: the earlier). Training is a deterministic prefix (no
    schedule depends on the epoch count), so retraining for the chosen count reproduces that
    model, which is then tested once.
    """
    lo, hi = epochs
    best = None
    for lr in lrs:
        model = build_model(task, val, seed=seed)
        hist = train_classifier(model, *val, epochs=hi, lr=lr, seed=seed, progress=False)
        for e in range(lo, hi + 1):
            if best is None or hist.metric[e - 1] > best[0]:
                best = (hist.metric[e - 1], lr, e)
    score, lr, e = best
    model = build_model(task, val, seed=seed)
    again = train_classifier(model, *val, epochs=e, lr=lr, seed=seed, progress=False)
    return {"lr": lr, "epochs": e, "val": score, "val_retrained": again.final,
            "test": accuracy(model, train.X_test, train.y_test)}


def one_row(task: str, variant: str, seed: int, *, lrs, epochs: tuple[int, int], quick: bool,
            val_fraction: float, threads: int = 1) -> dict:
    """Load one (task, variant, seed), split off validation, measure both models."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data = load_task(task, variant=variant, quick=quick, seed=seed)
    load_s = time.perf_counter() - t0
    train, val = validation_split(data, val_fraction, seed)
    row = {
        "task": task, "variant": variant, "seed": seed, "name": data.name,
        "input": "x".join(map(str, data.input_shape)),
        "n_fit": len(val.y_train), "n_val": len(val.y_test), "n_test": len(data.y_test),
        "load_s": load_s,
    }  # fmt: skip
    row |= {f"logreg_{k}": v for k, v in logistic_regression(train, val, seed=seed).items()}
    row |= {f"net_{k}": v for k, v in network(task, train, val, lrs=lrs, epochs=epochs, seed=seed).items()}
    return row


def run(tasks, variants, seeds, *, jobs: int = 1, **settings) -> list[dict]:
    """Every (task, variant, seed) row, in that order; ``jobs`` worker processes (same numbers)."""
    units = [(t, v, s) for t in tasks for v in variants for s in seeds]
    if jobs <= 1:
        rows = []
        for unit in units:
            rows.append(one_row(*unit, **settings))
            print(json.dumps(rows[-1]), flush=True)
        return rows
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs) as pool:
        futures = [pool.submit(one_row, *unit, **settings) for unit in units]
        rows = [f.result() for f in futures]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| task | variant | seed | input | fit / val / test | load s | LR C | LR val | LR test "
            "| net lr | net epochs | net val | net test |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['variant']} | {r['seed']} | {r['input']} | "
            f"{r['n_fit']} / {r['n_val']} / {r['n_test']} | {r['load_s']:.1f} | {r['logreg_C']:g} | "
            f"{100 * r['logreg_val']:.1f} | {100 * r['logreg_test']:.1f} | {r['net_lr']:g} | "
            f"{r['net_epochs']} | "
            f"{100 * r['net_val']:.1f} | {100 * r['net_test']:.1f} |"
        )
    lines.append("")
    lines.append("| task | variant | LR test (mean +- std) | net test (mean +- std) | discriminates |")
    lines.append("|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["variant"]), []).append(r)
    for (task, variant), rs in groups.items():
        lr = [100 * r["logreg_test"] for r in rs]
        net = [100 * r["net_test"] for r in rs]
        sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
        ok = max(lr) <= 80.0 and min(net) >= 95.0
        lines.append(
            f"| {task} | {variant} | {statistics.mean(lr):.1f} +- {sd(lr):.1f} | "
            f"{statistics.mean(net):.1f} +- {sd(net):.1f} | {'yes' if ok else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["vision", "audio"], choices=["vision", "audio"])
    p.add_argument("--variants", nargs="+", default=["easy", "hard"], choices=["easy", "hard"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-2, 3e-3])
    p.add_argument("--epochs", nargs=2, type=int, default=[15, 25], metavar=("MIN", "MAX"),
                   help="the epoch counts the validation chooses from (default 15 25)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--quick", action="store_true", help="the quick datasets and 1-2 epochs (smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (the numbers do not change)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.tasks, args.variants, args.seeds, jobs=args.jobs, lrs=args.lrs,
               epochs=(1, 2) if args.quick else tuple(args.epochs), quick=args.quick,
               val_fraction=args.val_fraction, threads=args.threads)
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
