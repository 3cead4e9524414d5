"""Seconds per training step: digital vs oracle vs surrogate, for each device kind.

Workload (fixed, so runs are comparable): d = 256, batch B = 128, M = 10 ZO samples, rank r = 16,
sketch s = 64. Two networks are timed, each with the middle Linear (d x d) replaced:

* ``layer``: that Linear alone with a linear read-out (the worst case for the ratio: nothing else
  in the step costs anything);
* ``mlp``: Linear(d, d) - ReLU - [d x d] - ReLU - Linear(d, d) - ReLU - Linear(d, 10), a small
  classifier step with cross-entropy;
* ``cnn``: an MNIST-sized convolutional classifier on 1x28x28 inputs (two 3x3 convolutions with
  32 and 64 channels, max-pooling, Linear(3136, d)) followed by [d x d] and Linear(d, 10): the
  kind of network a photonic layer is placed in.

Every timing is the median over repeated steps after warm-up, measured in this one run, so the
ratios compare like with like. The column ``ZO sim ms`` is the simulator alone: one
``query_batch`` of the ``M`` perturbed parameter sets on the batch (the part of a surrogate step
that a physical device would do in hardware). Run: ``make bench`` or
``python benchmarks/step_time.py``. Keep the machine otherwise idle: with two threads, a second
busy process makes every small tensor operation wait for a time slice, and steps get 10-100x slower.

A second table splits the surrogate step (the mean over the same number of steps, in a separate
run with :class:`hybridlab.timing.SectionTimer` active) into the sections the package marks:
``device`` (the simulator: configure, query, query_batch), ``random`` (ZO directions and sketches),
``upkeep`` (the surrogate's fit and updates, less their device queries and random numbers) and
``rest`` (everything else: the digital network, the ZO algebra, autograd, the optimizer, checks).
The sections are exclusive, so they add up to ``total``; on a GPU every section boundary waits for
the device (``torch.cuda.synchronize``), which makes this run slower than the first table's.
``digital`` is the digital step timed the same way, and ``nondev/dig`` is ``(total - device) /
digital``: the method's own cost in digital steps.

``--compare`` times the surrogate step for several ``directions:upkeep`` pairs in the same run
(``python benchmarks/step_time.py --workloads mlp --compare``), so that their ratios compare like
with like, and splits the part that is not device simulation in two: ``network``, the digital step
of the same network without the replaced layer (the digital work every hybrid step still does), and
``method``, the rest (``total - device - network``: random numbers, upkeep, the ZO algebra, the
layer's bookkeeping). ``layer`` is what the replaced Linear costs in the digital step
(``digital - network``): the method's own work fits in one digital step (``nondev/dig <= 1``)
exactly when ``method <= layer``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from hybridlab.layer import replace_linear
from hybridlab.timing import SectionTimer
from hybridlab.train import make_optimizer


def build(kind: str, d: int) -> nn.Module:
    if kind == "layer":
        return nn.Sequential(nn.Linear(d, d), nn.Linear(d, 10))
    if kind == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(64 * 7 * 7, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 10))
    return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(),
                         nn.Linear(d, 10))


def time_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int = 3) -> float:
    opt = make_optimizer(model, lr=1e-3)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


SPLIT = ("device", "random", "upkeep", "rest")
COMPARE = "gaussian:ksl,packed:ksl,lowrank:ksl,gaussian:forward,packed:forward,lowrank:forward"


def without_replaced(model: nn.Module, name: str) -> nn.Module:
    """``model`` with its Linear ``name`` replaced by the identity (the network a hybrid step still runs)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model


def split_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int = 3) -> dict[str, float]:
    """Mean seconds per step in each section of :data:`SPLIT` (exclusive; they add up to ``total``)."""
    opt = make_optimizer(model, lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    with SectionTimer(synchronize=torch.cuda.synchronize if x.is_cuda else None) as timer:
        for _ in range(steps):
            with timer.section("rest"):
                step()
    parts = {name: timer.totals.get(name, 0.0) / steps for name in SPLIT}
    parts["total"] = sum(parts.values())
    return parts


def time_zo_queries(device: str, d: int, batch: int, samples: int, dev: torch.device, steps: int) -> float:
    """Median seconds of one batched query of ``samples`` perturbed parameter sets (simulator only)."""
    from hybridlab.devices import make_device

    phys = make_device(device, d, d, seed=0).to(dev)
    g = torch.Generator().manual_seed(1)
    w = phys.init_params(g).to(dev)
    X = torch.randn(batch, d, generator=g).to(dev)
    W = w + 1e-3 * torch.randn(samples, w.numel(), generator=g).to(dev)
    times = []
    for i in range(3 + steps):
        t0 = time.perf_counter()
        phys.query_batch(W, X)
        if X.is_cuda:
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--sketch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--devices", default="ideal,slm,mrr,mzi")
    parser.add_argument("--directions", default="gaussian", help="ZO directions of the surrogate layer")
    parser.add_argument("--direction-rank", type=int, default=1, help="rank of 'lowrank' directions")
    parser.add_argument("--upkeep", default="ksl", help="surrogate upkeep of the surrogate layer")
    parser.add_argument("--workloads", default="layer,mlp,cnn")
    parser.add_argument("--cuda", action="store_true", help="run on the GPU if there is one")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--compare", nargs="?", const=COMPARE, default=None, metavar="KIND:UPKEEP,...",
                        help=f"also time these directions:upkeep pairs in this run (default list: {COMPARE})")
    args = parser.parse_args()
    pairs = [tuple(item.split(":")) for item in args.compare.split(",")] if args.compare else []
    if any(len(pair) != 2 for pair in pairs):
        parser.error(f"--compare takes directions:upkeep pairs separated by commas, e.g. {COMPARE}; "
                     f"got {args.compare!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    inputs = {"layer": torch.randn(args.batch, args.d, generator=g).to(dev),
              "cnn": torch.randn(args.batch, 1, 28, 28, generator=g).to(dev)}
    inputs["mlp"] = inputs["layer"]
    y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {dev}; d={args.d} B={args.batch} "
          f"M={args.samples} r={args.rank} s={args.sketch}; directions={args.directions} "
          f"(rank {args.direction_rank}), upkeep={args.upkeep}; median of {args.steps} steps")
    layer_options = dict(rank=args.rank, samples=args.samples, sketch=args.sketch, seed=0, directions=args.directions,
                         direction_rank=args.direction_rank)
    print(f"{'workload':8} {'device':6} {'digital ms':>10} {'oracle ms':>10} {'surrogate ms':>12} "
          f"{'ZO sim ms':>9} {'oracle/dig':>10} {'surr/dig':>9}")
    zo_sim = {device: time_zo_queries(device, args.d, args.batch, args.samples, dev, args.steps)
              for device in args.devices.split(",")}
    # The d x d Linear of each network is the one replaced.
    replaced = {"layer": "0", "mlp": "2", "cnn": "9"}

    def hybrid(workload: str, device: str, method: str, **overrides) -> nn.Module:
        torch.manual_seed(0)
        model = build(workload, args.d)
        options = layer_options if method != "surrogate" else {**layer_options, "upkeep": args.upkeep}
        replace_linear(model, replaced[workload], device, method=method, **{**options, **overrides})
        return model.to(dev)

    for workload in args.workloads.split(","):
        x = inputs[workload]
        torch.manual_seed(0)
        digital = time_steps(build(workload, args.d).to(dev), x, y, args.steps)
        for device in args.devices.split(","):
            row = {method: time_steps(hybrid(workload, device, method), x, y, args.steps)
                   for method in ("oracle", "surrogate")}
            print(f"{workload:8} {device:6} {digital * 1e3:10.2f} {row['oracle'] * 1e3:10.2f} "
                  f"{row['surrogate'] * 1e3:12.2f} {zo_sim[device] * 1e3:9.2f} {row['oracle'] / digital:10.1f} "
                  f"{row['surrogate'] / digital:9.1f}", flush=True)

    print(f"\nsplit of the surrogate step: mean ms of {args.steps} steps, exclusive sections (they add up to total)")
    print(f"{'workload':8} {'device':6} {'total':>8} " + " ".join(f"{k:>8}" for k in SPLIT)
          + f" {'digital':>8} {'nondev/dig':>10}")
    for workload in args.workloads.split(","):
        x = inputs[workload]
        torch.manual_seed(0)
        digital = split_steps(build(workload, args.d).to(dev), x, y, args.steps)["total"]
        for device in args.devices.split(","):
            parts = split_steps(hybrid(workload, device, "surrogate"), x, y, args.steps)
            print(f"{workload:8} {device:6} {parts['total'] * 1e3:8.3f} "
                  + " ".join(f"{parts[k] * 1e3:8.3f}" for k in SPLIT)
                  + f" {digital * 1e3:8.3f} {(parts['total'] - parts['device']) / digital:10.2f}", flush=True)

    if pairs:
        print(f"\nsurrogate step by ZO directions and upkeep, one run: mean ms of {args.steps} steps; "
              "network = the digital step without the replaced layer, layer = digital - network, "
              "method = total - device - network")
        print(f"{'workload':8} {'device':6} {'directions':10} {'upkeep':8} {'total':>8} {'device':>8} {'method':>8} "
              f"{'network':>8} {'layer':>8} {'surr/dig':>8} {'nondev/dig':>10}")
        for workload in args.workloads.split(","):
            x = inputs[workload]
            torch.manual_seed(0)
            digital = split_steps(build(workload, args.d).to(dev), x, y, args.steps)["total"]
            torch.manual_seed(0)
            network = split_steps(without_replaced(build(workload, args.d), replaced[workload]).to(dev), x, y,
                                  args.steps)["total"]
            for device in args.devices.split(","):
                for kind, upkeep in pairs:
                    model = hybrid(workload, device, "surrogate", directions=kind, upkeep=upkeep)
                    parts = split_steps(model, x, y, args.steps)
                    method = parts["total"] - parts["device"] - network
                    print(f"{workload:8} {device:6} {kind:10} {upkeep:8} {parts['total'] * 1e3:8.3f} "
                          f"{parts['device'] * 1e3:8.3f} {method * 1e3:8.3f} {network * 1e3:8.3f} "
                          f"{(digital - network) * 1e3:8.3f} {parts['total'] / digital:8.2f} "
                          f"{(parts['total'] - parts['device']) / digital:10.2f}", flush=True)


if __name__ == "__main__":
    main()
