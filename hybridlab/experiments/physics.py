"""Experiments of chapter 2, "Physical layers as black boxes": device responses, non-idealities, step costs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..devices import make_device
from ..layer import BlackBoxLinear, direct_feedback
from ._common import DTYPE, _configured, _counts, _generator


# =============================================================================================
# chapter 2: devices
# =============================================================================================
def mrr_response(phi: Tensor, a_values: Sequence[float], r: float = 0.9) -> dict[float, dict[str, np.ndarray]]:
    """Through-port transmission ``T(phi)`` and weight ``2T - 1`` of one ring, for several losses ``a``.

    Calls :meth:`hybridlab.devices.MRR.transmission` and :meth:`~hybridlab.devices.MRR.weight_range`.

    Returns:
        ``{a: {"T": T(phi), "weight": 2 T - 1, "range": (w_min, w_max)}}``.
    """
    from ..devices import MRR

    out = {}
    for a in a_values:
        ring = MRR(1, 1, a=float(a), r=r, dtype=DTYPE)
        T = ring.transmission(phi.to(DTYPE)).numpy()
        out[float(a)] = {"T": T, "weight": 2 * T - 1, "range": ring.weight_range()}
    return out


def entry_samples(name: str, d_in: int = 16, d_out: int = 16, draws: int = 20, seed: int = 0,
                  uniform_phases: bool = False) -> np.ndarray:
    """Matrix entries of a device at ``draws`` random parameter vectors (reachable weights).

    With ``uniform_phases`` every parameter is drawn uniformly in ``[0, 2 pi)`` (what the physics
    can reach), otherwise from the device's :meth:`init_params` (its initialisation).
    """
    dev = make_device(name, d_in, d_out, seed=seed, dtype=DTYPE)
    g = _generator(seed)
    out = []
    for _ in range(draws):
        w = 2 * math.pi * torch.rand(dev.p, generator=g, dtype=DTYPE) if uniform_phases else dev.init_params(g)
        out.append(dev.transfer_matrix(w).reshape(-1))
    return torch.cat(out).numpy()


def nonideality_effect(name: str, option: str, values: Sequence[float], d_in: int = 16, d_out: int = 16,
                       seed: int = 0, drift_steps: int = 10, n_inputs: int = 64) -> np.ndarray:
    """Relative change of a device's output caused by one non-ideality, for each strength.

    The device is built with ``option=value`` (all else ideal) and set to the same parameters
    ``w`` as the ideal device. The error is ``||Y - Y_ideal||_F / ||Y_ideal||_F`` for random inputs:

    * ``noise`` (read-out) and ``phase_noise`` (MZI): outputs of :meth:`Device.query`;
    * ``drift``: the matrix after ``drift_steps`` calls of :meth:`Device.advance`;
    * everything else (``bits``, ``crosstalk``, ``fab_error``, ``loss_db``): the transfer matrix.
    """
    ideal = make_device(name, d_in, d_out, seed=seed, dtype=DTYPE)
    w = ideal.init_params()
    X = torch.randn(n_inputs, d_in, generator=_generator(seed + 1), dtype=DTYPE)
    Y0 = X @ ideal.transfer_matrix(w).mT
    errors = []
    for v in values:
        v = int(v) if option == "bits" else float(v)
        dev = _configured(name, d_in, d_out, seed, w=w, **{option: v})
        if option in ("noise", "phase_noise"):
            Y = dev.query(X)
        else:
            if option == "drift":
                dev.advance(drift_steps)
            Y = X @ dev.true_matrix().mT
        errors.append(float(torch.linalg.matrix_norm(Y - Y0) / torch.linalg.matrix_norm(Y0)))
    return np.array(errors)


def step_cost(method: str = "surrogate", device: str = "slm", d_in: int = 32, d_out: int = 32, batch: int = 16,
              *, seed: int = 0, **layer_options: Any) -> dict[str, tuple[int, int]]:
    """Queries and reconfigurations of one training step of a :class:`~hybridlab.layer.BlackBoxLinear`.

    Two SGD steps are run on random data (the input requires a gradient, as if digital layers
    came before the device); the counters are read around each phase of the *second* step.

    Returns:
        ``{"initial fit": (q, c), "surrogate update": (q, c), "forward": (q, c),
        "backward": (q, c), "step total": (q, c)}`` with ``q`` queries and ``c``
        reconfigurations.
    """
    layer = BlackBoxLinear(d_in, d_out, device, method=method, seed=seed, dtype=DTYPE, **layer_options)
    if method == "dfa":
        direct_feedback(layer)  # the layer alone is the network: its output error is the upstream error
    dev = layer.physical
    g = _generator(seed)
    x = torch.randn(batch, d_in, generator=g, dtype=DTYPE).requires_grad_()
    target = torch.randn(batch, d_out, generator=g, dtype=DTYPE)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-2)
    phases: dict[str, tuple[int, int]] = {}

    def delta(c0: tuple[int, int]) -> tuple[int, int]:
        c1 = _counts(dev)
        return c1[0] - c0[0], c1[1] - c0[1]

    for k in range(2):
        opt.zero_grad()
        c = _counts(dev)
        layer.sync()
        phases["initial fit" if k == 0 else "surrogate update"] = delta(c)
        c = _counts(dev)
        y = layer(x)
        fwd = delta(c)
        c = _counts(dev)
        (y - target).pow(2).mean().backward()
        bwd = delta(c)
        opt.step()
        if k == 1:
            phases["forward"], phases["backward"] = fwd, bwd
            phases["step total"] = (phases["surrogate update"][0] + fwd[0] + bwd[0],
                                    phases["surrogate update"][1] + fwd[1] + bwd[1])
    return phases
