"""Data-parallel training with ``torch.distributed``: one process per rank, ``DistributedDataParallel``.

Every rank holds a whole copy of the model and trains on its own slice of each batch;
:class:`torch.nn.parallel.DistributedDataParallel` (DDP) averages the gradients. For the
digital layers that is ordinary DDP. For a :class:`~hybridlab.layer.BlackBoxLinear` it gives the
one-process gradient of the whole batch because both of its gradients are sums over the batch's
rows:

* ``dL/dx = v U S V^T`` is computed row by row from the surrogate, which every rank holds;
* the zero-order ``dL/dw`` is ``1/(M mu) sum_i <f(X; w + mu u_i) - f(X; w), V>_F u_i``; the inner
  product is a sum over rows, so with **the same directions ``u_i`` on every rank** the average of
  the ranks' estimates (DDP's all-reduce, with ``V`` scaled by the local batch size) is the
  estimate of the whole batch, exactly.

What must agree across ranks, and how it does:

* parameters: DDP broadcasts rank 0's when it wraps the model, then every rank applies the same
  averaged gradients;
* the layer's random draws (ZO directions, sketches) and its device (fabrication errors,
  configured parameters, generator states): :func:`prepare` broadcasts rank 0's whole
  ``state_dict`` (it holds the generators' states) before wrapping, and from then on every rank
  draws the same numbers in the same order, because none of these draws depends on the batch;
* the surrogate: the ``'ksl'``, ``'cached'``, ``'rebuild'`` and ``'none'`` upkeeps query fixed
  probes (the surrogate's own directions, a sketch), not the batch, so every rank computes the
  same update with no communication. The ``'forward'`` upkeep corrects the surrogate from the
  batch's ``(X, Y)`` pairs: :func:`prepare` sets the layer's ``batch_gather`` to
  :func:`all_gather_rows`, so that every rank corrects it with the whole batch (one all-gather of
  ``B (d_in + d_out)`` numbers per step);
* the gain calibrated on the first batch: computed from the whole first batch, gathered the same way.

Restrictions (each rank's result is then still correct, but not bit-for-bit the one-process run):

* read-out noise and MZI phase noise are drawn by each rank's simulated device for its own rows
  (like separate physical devices); the gradients agree with the one-process run in distribution;
* the method ``zo_only`` draws its per-row input directions for the local rows, which moves the
  generator by an amount that depends on the local batch size;
* ``BatchNorm`` normalises with the local batch's statistics unless converted to
  ``SyncBatchNorm`` (:func:`prepare` does that on GPUs; PyTorch's ``SyncBatchNorm`` has no CPU
  kernel);
* DDP averages the ranks' mean losses: the global batch must split evenly (:func:`shard`), or each
  rank's loss is weighted by its share of the batch (:func:`split_batch`, for a last partial batch);
* device counters (queries, reconfigurations) are per rank: :func:`hardware_budget` sums them.
  The upkeep's probe queries are made by every rank, so the sum counts them ``world_size`` times.

Physical deployment: with **one device per rank**, each rank's device answers the queries of its
own rows; the devices must be identical (or the ranks' surrogates and gradients describe
different matrices), and each runs the upkeep queries itself. With **one shared device**, the
ranks' queries go to one device in turn: the same ``M + 1`` configurations per step as one
process, each with the whole batch, and the upkeep's probes need to be read once, not per rank.

Under ``torchrun`` (one process per rank; it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``)::

    ranks = setup_from_env()                     # gloo on CPUs, nccl on GPUs; a no-op for one process
    model = build_model(seed).to(ranks.torch_device)   # the same seed on every rank
    model = prepare(model, ranks)                # before the optimizer is made
    optimizer = make_optimizer(model, ...)
    for xb, yb in batches:                       # the same global batches, in the same order, on every rank
        loss = F.cross_entropy(model(shard(xb, ranks)), shard(yb, ranks))
        ...
    budget = hardware_budget(model)              # summed over the ranks
    cleanup()

``python -m hybridlab train`` does this under ``torchrun`` (:func:`hybridlab.recipes.run` with
``ranks``), with :func:`split_batch` for batches of any size: every rank evaluates the whole
validation and test splits itself (identical models give identical numbers, so every rank keeps
the same best state without communication), and :func:`merge_history` turns the ranks' histories
into the whole run's.

:func:`launch_local` starts ``N`` such processes on this machine without ``torchrun`` (tests,
notebooks).
"""

from __future__ import annotations

import inspect
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import checks
from .layer import BlackBoxLinear
from .train import History
from .train import hardware_budget as local_hardware_budget

__all__ = ["Ranks", "setup_from_env", "prepare", "shard", "split_batch", "all_gather_rows", "hardware_budget",
           "merge_history", "check_in_sync", "cleanup", "launch_local"]


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: this process's rank, ``0 .. world_size - 1``.
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        torch_device: where this rank's model lives (``cuda:<local_rank>`` with GPUs, else torch's
            default device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    torch_device: torch.device = field(default_factory=torch.get_default_device)

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints and saves."""
        return self.rank == 0


def setup_from_env(backend: str | None = None) -> Ranks:
    """Join the process group that ``torchrun`` describes in the environment.

    Reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and, through ``init_process_group``,
    ``MASTER_ADDR`` and ``MASTER_PORT``). Without ``WORLD_SIZE`` (or with 1) nothing is initialised
    and rank 0 of 1 is returned, so the same script runs as one plain process.

    Args:
        backend: ``'gloo'`` or ``'nccl'``; default ``'nccl'`` when CUDA is available, else ``'gloo'``.

    Returns:
        The :class:`Ranks` of this process; with CUDA, the current GPU is set to ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Ranks(torch_device=torch.device("cuda") if cuda else torch.get_default_device())
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: start the script with "
                         "`torchrun --nproc-per-node N ...` (or use launch_local)")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = backend or ("nccl" if cuda else "gloo")
    checks.choice(backend, "backend", ("gloo", "nccl"))
    # (gloo lets several ranks share a GPU, as in a test on a one-GPU machine; nccl does not)
    device = torch.device("cuda", local_rank % torch.cuda.device_count()) if cuda else torch.get_default_device()
    if backend == "nccl":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return Ranks(rank, world, local_rank, device)


def prepare(model: nn.Module, ranks: Ranks, *, sync_batchnorm: bool = True) -> nn.Module:
    """Make every rank's model identical to rank 0's and wrap it in ``DistributedDataParallel``.

    Call it after :func:`setup_from_env` and before making the optimizer. With one process the
    model is returned as it is.

    * the model moves to ``ranks.torch_device``;
    * rank 0's whole ``state_dict`` (parameters, buffers, and the generators' states of the black-box
      layers and their devices) is broadcast and loaded on every other rank;
    * every :class:`~hybridlab.layer.BlackBoxLinear` gets ``batch_gather = all_gather_rows``;
    * on GPUs, ``BatchNorm`` layers become ``SyncBatchNorm`` (``sync_batchnorm=True``);
    * DDP is made with ``forward_sync_buffers=False``: the layers' buffers agree by construction, and
      ranks may then run evaluation forwards alone (rank 0 only, for example).

    Returns:
        The DDP-wrapped model (its ``.module`` is the model itself, for saving).
    """
    if not ranks.distributed:
        return model
    model = model.to(ranks.torch_device)
    state = [{k: v.cpu() if isinstance(v, Tensor) else v for k, v in model.state_dict().items()}
             if ranks.is_main else None]
    dist.broadcast_object_list(state, src=0, device=_collective_device(ranks))
    if not ranks.is_main:
        model.load_state_dict(state[0])
    for layer in _layers(model):
        layer.batch_gather = all_gather_rows
    if sync_batchnorm and ranks.torch_device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ranks.torch_device.index] if ranks.torch_device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # no buffer broadcast at every forward (torch < 2.13 spells it broadcast_buffers)
    no_sync = "forward_sync_buffers"
    if no_sync not in inspect.signature(ddp).parameters:
        no_sync = "broadcast_buffers"
    # A convolution with one input channel returns its weight's gradient with a stride that differs from
    # DDP's bucket view only along that size-1 dimension (the same memory layout); DDP warns all the same.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return ddp(model, device_ids=device_ids, **{no_sync: False})


def shard(batch: Tensor, ranks: Ranks) -> Tensor:
    """This rank's contiguous slice of a global batch (rank ``k`` takes rows ``k b .. (k + 1) b - 1``).

    The slices concatenated in rank order are the batch, the order :func:`all_gather_rows` restores.

    Raises:
        ValueError: the batch's rows do not split evenly over the ranks (DDP averages the ranks'
            mean losses, which is the mean over the batch only for equal slices).
    """
    n = batch.shape[0]
    if n % ranks.world_size:
        raise ValueError(f"a batch of {n} rows does not split evenly over {ranks.world_size} ranks: "
                         f"use a batch size divisible by {ranks.world_size}")
    b = n // ranks.world_size
    return batch[ranks.rank * b:(ranks.rank + 1) * b]


def split_batch(batch: Tensor, ranks: Ranks) -> tuple[Tensor, float]:
    """This rank's rows of a global batch of any size, and the weight of their mean loss.

    The rows are cut into ``N = world_size`` contiguous slices in rank order, as even as possible
    (:func:`torch.tensor_split`: the first ``B mod N`` ranks take one row more). DDP averages the
    ranks' gradients, so rank ``k``'s mean loss over its ``b_k`` rows is weighted by
    ``N b_k / B``: the average of the weighted gradients, ``sum_k (b_k / B) grad(mean loss_k)``, is
    the gradient of the whole batch's mean loss. With equal slices (:func:`shard`'s) the weight is 1.

    Raises:
        ValueError: fewer rows than ranks (a rank would get none).
    """
    n = batch.shape[0]
    if n < ranks.world_size:
        raise ValueError(f"a batch of {n} rows cannot be split over {ranks.world_size} ranks (each needs a row): "
                         "use a larger batch or fewer processes")
    part = torch.tensor_split(batch, ranks.world_size)[ranks.rank]
    return part, ranks.world_size * part.shape[0] / n


def all_gather_rows(rows: Tensor) -> Tensor:
    """Every rank's ``rows`` (first dimension; sizes may differ) concatenated in rank order.

    Every rank must call it (a collective). Outside a process group it returns ``rows``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    world = dist.get_world_size()
    n = torch.tensor([rows.shape[0]], device=rows.device)
    sizes = [torch.empty_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    most = max(sizes)
    padded = rows.contiguous()
    if rows.shape[0] < most:
        padded = torch.cat([padded, padded.new_zeros(most - rows.shape[0], *rows.shape[1:])])
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([part[:size] for part, size in zip(out, sizes)])


def hardware_budget(model: nn.Module) -> dict[str, int]:
    """Device queries and reconfigurations of the model's black-box layers, summed over the ranks.

    A collective when distributed (every rank must call it); otherwise
    :func:`hybridlab.train.hardware_budget`.
    """
    local = local_hardware_budget(model)
    if not (dist.is_available() and dist.is_initialized()):
        return local
    keys = sorted(local)
    total = torch.tensor([local[k] for k in keys], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        total = total.to(next(model.parameters()).device)
    dist.all_reduce(total)
    return dict(zip(keys, (int(v) for v in total)))


def merge_history(history: History) -> History:
    """The history of the whole data-parallel run from every rank's own (a collective; as it is without one).

    Each rank's training losses are its weighted share of the batch (:func:`split_batch`), so their
    average over the ranks is the whole batch's loss; the device counters are summed over the ranks
    (like :func:`hardware_budget`). The evaluations (metric, validation loss) are the same on every
    rank and kept as they are.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return history
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    n, world = len(history.train_loss), dist.get_world_size()
    packed = torch.tensor([*history.train_loss, *history.queries, *history.reconfigurations],
                          dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    total = packed.tolist()
    return replace(history, train_loss=[v / world for v in total[:n]], queries=[round(v) for v in total[n:2 * n]],
                   reconfigurations=[round(v) for v in total[2 * n:]])


def check_in_sync(model: nn.Module) -> None:
    """Raise if any black-box layer's state differs between the ranks (a collective; a debugging aid).

    Compares, bit for bit, a fingerprint of each layer: its parameters, its surrogate, its device's
    configured parameters, its step and its generator's state.

    Raises:
        RuntimeError: naming the first layer and rank that differ from rank 0.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for name, layer in _named_layers(model):
        parts = [layer.w, layer.gain, layer.U, layer.S, layer.V, layer.physical.w]
        sums = [t.detach().double().sum() for t in parts]
        state = layer._generator.get_state().to(layer.w.device).double()
        mine = torch.stack([*sums, torch.tensor(float(layer.step), dtype=torch.float64, device=layer.w.device),
                            (state * torch.arange(1, state.numel() + 1, dtype=torch.float64,
                                                  device=state.device)).sum()])
        if dist.get_backend() != "nccl":
            mine = mine.cpu()
        every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(every, mine)
        for rank, theirs in enumerate(every):
            if not torch.equal(theirs, every[0]):
                raise RuntimeError(f"black-box layer {name!r} differs between rank 0 and rank {rank} "
                                   f"(fingerprints {every[0].tolist()} vs {theirs.tolist()}): build the model "
                                   "the same way on every rank and call prepare() before training")


def cleanup() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch_local(fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo") -> None:
    """Run ``fn(ranks, *args)`` in ``world_size`` new processes on this machine, as ``torchrun`` would.

    Each process joins a process group on a free local port (:func:`setup_from_env`) and leaves it
    when ``fn`` returns. ``fn`` must be importable by name (a module-level function), and its
    results must go through files or the like (nothing is returned). Threads: each process
    inherits ``OMP_NUM_THREADS``; set it so that ``world_size`` processes fit the machine.

    Raises:
        torch.multiprocessing.ProcessRaisedException: a process failed (its traceback included).
    """
    world_size = checks.count(world_size, "world_size", what="number of processes")
    checks.choice(backend, "backend", ("gloo", "nccl"))
    import torch.multiprocessing as mp

    mp.spawn(_run_rank, args=(world_size, _free_port(), backend, fn, args), nprocs=world_size, join=True)


# --------------------------------------------------------------------------- internals


def _run_rank(rank: int, world_size: int, port: int, backend: str, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    ranks = setup_from_env(backend)
    try:
        fn(ranks, *args)
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _collective_device(ranks: Ranks) -> torch.device | None:
    return ranks.torch_device if dist.get_backend() == "nccl" else None


def _named_layers(model: nn.Module) -> list[tuple[str, BlackBoxLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BlackBoxLinear)]


def _layers(model: nn.Module) -> list[BlackBoxLinear]:
    return [m for _, m in _named_layers(model)]
