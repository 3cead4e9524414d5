"""Data-parallel training (hybridlab.parallel): two gloo processes on the CPU give the one-process run.

The two ranks each train on half of every batch under DistributedDataParallel; after 20 steps their
parameters (digital and device) must equal those of one process trained on the whole batches. The
runs are in float64 so that the comparison measures the method, not the order of float32 sums.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridlab import parallel
from hybridlab.layer import BlackBoxLinear, replace_linear
from hybridlab.train import History, make_optimizer

D_IN, HIDDEN, CLASSES, BATCH, STEPS = 6, 8, 3, 12, 20
# one configuration per upkeep family: probes only (ksl, cached) and the batch's own pairs (forward);
# the gain is calibrated on the first batch in each
CONFIGS = [dict(device="slm", upkeep="ksl", directions="gaussian"),
           dict(device="mzi", upkeep="forward", directions="lowrank"),
           dict(device="mrr", upkeep="cached", directions="packed")]


def build(config: dict) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                          nn.Linear(HIDDEN, CLASSES)).double()
    replace_linear(model, "2", config["device"], method="surrogate", rank=2, samples=4, sketch=6, seed=3,
                   upkeep=config["upkeep"], directions=config["directions"])
    return model


def train(model: nn.Module, ranks: parallel.Ranks | None = None) -> dict[str, torch.Tensor]:
    """20 Adam steps on fixed random batches; returns the parameters and the device's configured w."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(STEPS, BATCH, D_IN, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (STEPS, BATCH), generator=g)
    opt = make_optimizer(model, lr=1e-2, lr_device=3e-2)
    for t in range(STEPS):
        xb, yb = (X[t], y[t]) if ranks is None else (parallel.shard(X[t], ranks), parallel.shard(y[t], ranks))
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    module = getattr(model, "module", model)
    out = {name: p.detach().clone() for name, p in module.named_parameters()}
    layer = module[2]
    out["2.physical.w"] = layer.physical.w.clone()
    out["2.surrogate"] = layer.surrogate_matrix()
    return out


def _worker(ranks: parallel.Ranks, path: str) -> None:
    torch.set_num_threads(1)
    results = {}
    for i, config in enumerate(CONFIGS):
        model = parallel.prepare(build(config), ranks)
        assert isinstance(model, nn.parallel.DistributedDataParallel)
        results[i] = train(model, ranks)
        parallel.check_in_sync(model)
    results["budget"] = parallel.hardware_budget(model)
    results["local_queries"] = model.module[2].physical.queries
    results["gathered"] = parallel.all_gather_rows(torch.full((ranks.rank + 1, 2), float(ranks.rank)))
    k = ranks.rank + 1
    results["merged"] = parallel.merge_history(History(steps=[4], train_loss=[float(k)], metric=[0.5], val_loss=[0.25],
                                                       queries=[10 * k], reconfigurations=[k]))
    # a layer that drifted apart on one rank is caught
    if ranks.rank == 1:
        with torch.no_grad():
            model.module[2].U.mul_(1.0 + 1e-12)
    try:
        parallel.check_in_sync(model)
        results["caught"] = False
    except RuntimeError as err:
        results["caught"] = "rank 1" in str(err)
    torch.save(results, os.path.join(path, f"rank{ranks.rank}.pt"))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def test_two_gloo_ranks_train_like_one_process_on_the_whole_batch(tmp_path):
    parallel.launch_local(_worker, 2, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for i, config in enumerate(CONFIGS):
        one = train(build(config))
        for rank in ranks:
            assert rank[i].keys() == one.keys()
            errors = {name: relative_error(rank[i][name], one[name]) for name in one}
            assert max(errors.values()) <= 1e-5, (config, errors)
        for name in one:  # and the ranks agree with each other exactly
            assert torch.equal(ranks[0][i][name], ranks[1][i][name]), (config, name)
    # the budget is summed over the ranks
    assert ranks[0]["budget"] == ranks[1]["budget"]
    assert ranks[0]["budget"]["queries"] == ranks[0]["local_queries"] + ranks[1]["local_queries"]
    expected = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])  # rank 0's one row, then rank 1's two
    assert all(torch.equal(r["gathered"], expected) for r in ranks)
    assert all(r["caught"] for r in ranks)
    # the merged history: losses averaged, counters summed, evaluations kept
    for r in ranks:
        h = r["merged"]
        assert (h.train_loss, h.queries, h.reconfigurations, h.metric, h.val_loss) == ([1.5], [30], [3], [0.5], [0.25])


def test_single_process_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = parallel.setup_from_env()
    assert (ranks.rank, ranks.world_size, ranks.distributed, ranks.is_main) == (0, 1, False, True)
    model = build(CONFIGS[0])
    assert parallel.prepare(model, ranks) is model
    assert model[2].batch_gather is None
    x = torch.arange(12).reshape(6, 2)
    two = [parallel.Ranks(rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat([parallel.shard(x, r) for r in two]), x)
    with pytest.raises(ValueError, match="divisible by 4"):
        parallel.shard(x, parallel.Ranks(rank=0, world_size=4))
    assert torch.equal(parallel.all_gather_rows(x), x)
    history = History(train_loss=[1.0], queries=[3])
    assert parallel.merge_history(history) is history
    parallel.check_in_sync(model)  # nothing to compare with
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        parallel.setup_from_env()


def test_split_batch_cuts_any_batch_in_rank_order_and_weights_the_mean_losses():
    x = torch.arange(10.0)
    for world in (1, 2, 3, 4):
        parts = [parallel.split_batch(x, parallel.Ranks(rank=r, world_size=world)) for r in range(world)]
        assert torch.equal(torch.cat([p for p, _ in parts]), x)
        assert max(len(p) for p, _ in parts) - min(len(p) for p, _ in parts) <= 1
        # the average of the weighted mean losses is the whole batch's mean
        losses = [weight * p.pow(2).mean() for p, weight in parts]
        assert (sum(losses) / world).item() == pytest.approx(x.pow(2).mean().item(), rel=1e-12)
    even = parallel.split_batch(x, parallel.Ranks(rank=1, world_size=2))
    assert torch.equal(even[0], parallel.shard(x, parallel.Ranks(rank=1, world_size=2))) and even[1] == 1.0
    with pytest.raises(ValueError, match="cannot be split over 12 ranks"):
        parallel.split_batch(x, parallel.Ranks(rank=0, world_size=12))


def test_whole_batch_calibration_is_used_when_a_gather_is_set():
    # the gather is all the layer needs: a fake one that doubles the batch changes nothing
    # (the rms of two copies is the rms of one), a fake that adds other rows does
    x = torch.randn(5, 4, dtype=torch.float64)
    gains = []
    for gather in (None, lambda t: torch.cat([t, t]), lambda t: torch.cat([t, 3 * t[:1]])):
        layer = BlackBoxLinear(4, 4, "slm", rank=2, dtype=torch.float64)
        layer.batch_gather = gather
        layer(x)
        gains.append(layer.gain.item())
    assert gains[0] == pytest.approx(gains[1], rel=1e-12) and gains[2] != pytest.approx(gains[0], rel=1e-3)
