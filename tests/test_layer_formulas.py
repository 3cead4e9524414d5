"""The black-box layer's backward pass, surrogate upkeeps and gain calibration, and the training
schedule, each pinned to an independent value.

Independent values used here: the device's transfer matrix ``A(w)`` from the simulator (what the
surrogate must reproduce when it can be exact), explicit KSL steps with the true increment
``A(w_new) - A(w_old)``, the closed forms of ``test_method_formulas``, finite differences of the
simulator, and variance-derived bounds for the zero-order estimates. The layers are small, square
and non-square, in float64, and checked after several parameter moves, so that the surrogate's core
``S`` is a general (non-diagonal, non-symmetric) matrix.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_method_formulas import ksl_closed_form, ridge_delta
from torch import nn

from hybridlab.devices import make_device
from hybridlab.layer import BlackBoxLinear, replace_linear
from hybridlab.lowrank import truncated_svd
from hybridlab.surrogate import ksl_step
from hybridlab.train import anneal_split, calibrate_gain, train_classifier, train_language_model

F64 = torch.float64
Z = 5.0
SHAPES = [(6, 6), (7, 4), (4, 7)]  # (d_in, d_out): square, wide, tall


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(d_in, d_out, method="surrogate", device="slm", **kw):
    kw = {"gain": 1.0, "bias": False, "dtype": F64, "seed": 4, "samples": 1, **kw}
    return BlackBoxLinear(d_in, d_out, device, method=method, **kw)


def A_of(layer) -> torch.Tensor:
    """The device's transfer matrix at the layer's current parameters (simulator, counts nothing)."""
    with torch.no_grad():
        return layer.physical.transfer_matrix(layer.w.detach())


def move(layer, seed, size=0.3):
    """What an optimizer step does to the device parameters."""
    with torch.no_grad():
        layer.w.add_(size * torch.randn(layer.w.shape, generator=gen(seed), dtype=layer.w.dtype))


def input_grad(layer, x, v):
    xx = x.clone().requires_grad_()
    (layer(xx) * v).sum().backward()
    return xx.grad


def off_diagonal(S: torch.Tensor) -> float:
    return float((S - torch.diag(torch.diagonal(S))).norm() / S.norm())


def asymmetry(S: torch.Tensor) -> float:
    return float((S - S.mT).norm() / S.norm())


# ------------------------------------------------------------------------------ surrogate backward
@pytest.mark.parametrize("upkeep", ["ksl", "cached"])
@pytest.mark.parametrize("d_in,d_out", SHAPES)
def test_full_rank_surrogate_tracks_the_device_exactly_and_backward_is_v_A(d_in, d_out, upkeep):
    """Rank ``min(d_in, d_out)`` and an orthogonal sketch of ``d_in`` rows (``Z^T Z / s = I``): the
    implicit KSL step adds ``dA`` exactly, so after several moves ``U S V^T = A(w)`` and the input
    gradient is ``v A(w)``, with A from the simulator. S is then lower triangular, not diagonal, so
    ``v U S^T V^T`` or ``v V S U^T`` fail (the latter also by shape on the non-square layers)."""
    r = min(d_in, d_out)
    layer = make(d_in, d_out, rank=r, sketch=d_in, sketch_kind="orthogonal", upkeep=upkeep)
    x = torch.randn(5, d_in, generator=gen(1), dtype=F64)
    layer(x)
    for k in range(3):
        move(layer, 10 + k)
        layer(x)
    torch.testing.assert_close(layer.surrogate_matrix(), A_of(layer), rtol=1e-9, atol=1e-10)
    assert off_diagonal(layer.S) > 0.01 and asymmetry(layer.S) > 0.01  # far above the 1e-9 tolerance
    v = torch.randn(5, d_out, generator=gen(2), dtype=F64)
    torch.testing.assert_close(input_grad(layer, x, v), v @ A_of(layer), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("upkeep", ["ksl", "cached"])
@pytest.mark.parametrize("d_in,d_out", [(8, 5), (5, 8), (6, 6)])
def test_low_rank_update_is_the_explicit_ksl_step_with_the_true_increment(d_in, d_out, upkeep):
    """Rank 2 < min(d): each update from queries (``dA V0`` from queries at the new and the old
    parameters, ``dA^T U1`` from an orthogonal full sketch) equals ``ksl_step`` with the true
    ``dA = A(w_new) - A(w_old)``. The cached upkeep must keep the queries at the *new* parameters
    for the next step (``F_V = f(V1^T; w_new)``, ``F_Z = f(Z; w_new)``, Z fixed): stale ones make
    the second step wrong. The backward is ``v U S V^T`` of that explicit result."""
    r = 2
    layer = make(d_in, d_out, rank=r, sketch=d_in, sketch_kind="orthogonal", upkeep=upkeep)
    x = torch.randn(4, d_in, generator=gen(3), dtype=F64)
    layer(x)
    torch.testing.assert_close(layer.surrogate_matrix(), truncated_svd(A_of(layer), r).matrix())
    Z0 = layer.Z.clone()
    for k in range(3):
        U0, S0, V0, A0 = layer.U.clone(), layer.S.clone(), layer.V.clone(), A_of(layer)
        move(layer, 20 + k)
        layer.sync()
        A1 = A_of(layer)
        expected = ksl_step(U0, S0, V0, A1 - A0).matrix()
        torch.testing.assert_close(layer.surrogate_matrix(), expected, rtol=1e-9, atol=1e-10)
        if upkeep == "cached":
            torch.testing.assert_close(layer.Z, Z0, rtol=0, atol=0)
            torch.testing.assert_close(layer.F_V, layer.V.mT @ A1.mT, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(layer.F_Z, layer.Z @ A1.mT, rtol=1e-10, atol=1e-12)
    assert off_diagonal(layer.S) > 0.01 and asymmetry(layer.S) > 0.01
    v = torch.randn(4, d_out, generator=gen(4), dtype=F64)
    torch.testing.assert_close(input_grad(layer, x, v), v @ expected, rtol=1e-9, atol=1e-10)


def test_cached_upkeep_costs_no_query_at_the_old_parameters():
    """After the first step the cached upkeep never configures the old parameters again: the only
    configurations of an update are the new parameters (one)."""
    layer = make(6, 5, rank=2, sketch=6, upkeep="cached")
    x = torch.randn(3, 6, generator=gen(5), dtype=F64)
    layer(x)
    for k in range(2):
        move(layer, 30 + k)
        r0 = layer.physical.reconfigurations
        layer.sync()
        assert layer.physical.reconfigurations - r0 == 1


# ------------------------------------------------------------------------------ the other upkeeps
def test_upkeep_none_keeps_the_initial_fit():
    layer = make(7, 5, method="static", rank=2)
    x = torch.randn(3, 7, generator=gen(6), dtype=F64)
    layer(x)
    first = truncated_svd(A_of(layer), 2).matrix()
    for k in range(3):
        move(layer, 40 + k)
        layer(x)
    torch.testing.assert_close(layer.surrogate_matrix(), first)
    assert layer.step == 3


@pytest.mark.parametrize("method,kw", [("rebuild", {"rebuild_every": 2}),
                                       ("surrogate", {"rebuild_every": 2, "upkeep": "ksl"})])
def test_rebuild_rereads_the_matrix_every_k_steps(method, kw):
    """Steps 2 and 4: the surrogate is the truncated SVD of the current matrix (a full re-read).
    Step 1 and 3: the rebuild upkeep leaves it alone; the KSL upkeep updates it."""
    layer = make(5, 7, method=method, rank=2, sketch=5, sketch_kind="orthogonal", **kw)
    x = torch.randn(3, 5, generator=gen(7), dtype=F64)
    layer(x)
    for k in range(1, 5):
        before, A0 = layer.surrogate_matrix().clone(), A_of(layer)
        U0, S0, V0 = layer.U.clone(), layer.S.clone(), layer.V.clone()
        move(layer, 50 + k)
        layer.sync()
        assert layer.step == k
        if k % 2 == 0:
            torch.testing.assert_close(layer.surrogate_matrix(), truncated_svd(A_of(layer), 2).matrix())
        elif method == "rebuild":
            torch.testing.assert_close(layer.surrogate_matrix(), before, rtol=0, atol=0)
        else:
            torch.testing.assert_close(layer.surrogate_matrix(), ksl_step(U0, S0, V0, A_of(layer) - A0).matrix())


def test_forward_upkeep_corrects_with_the_forward_pairs_in_training_mode_only():
    """Upkeep ``forward``: each training forward pass applies the ridge correction from its own
    ``(x, y = x A(w)^T)`` and one projector step (closed form of ``test_method_formulas``); in eval
    mode, and between optimizer steps, nothing else touches the surrogate."""
    ridge, r = 0.2, 2
    layer = make(6, 5, rank=r, upkeep="forward", ridge=ridge)
    x = torch.randn(4, 6, generator=gen(8), dtype=F64)
    A0 = A_of(layer)
    U0, S0, V0 = truncated_svd(A0, r)  # the initial fit, done by the first forward pass
    layer(x)
    Y0 = U0 @ S0 @ V0.mT
    torch.testing.assert_close(layer.surrogate_matrix(), ksl_closed_form(U0, S0, V0, ridge_delta(Y0, x, x @ A0.mT,
                                                                                                  ridge)))
    layer.eval()
    before = layer.surrogate_matrix().clone()
    layer(torch.randn(3, 6, generator=gen(9), dtype=F64))
    torch.testing.assert_close(layer.surrogate_matrix(), before, rtol=0, atol=0)
    layer.train()
    U0, S0, V0 = layer.U.clone(), layer.S.clone(), layer.V.clone()
    move(layer, 60)
    x2 = torch.randn(4, 6, generator=gen(10), dtype=F64)
    layer(x2)
    A1 = A_of(layer)
    expected = ksl_closed_form(U0, S0, V0, ridge_delta(U0 @ S0 @ V0.mT, x2, x2 @ A1.mT, ridge))
    torch.testing.assert_close(layer.surrogate_matrix(), expected)


def test_frozen_layer_never_moves_and_backpropagates_through_its_first_fit():
    layer = make(6, 4, method="frozen", rank=2)
    assert not layer.w.requires_grad
    x = torch.randn(3, 6, generator=gen(11), dtype=F64)
    v = torch.randn(3, 4, generator=gen(12), dtype=F64)
    fit = truncated_svd(A_of(layer), 2).matrix()
    for _ in range(2):
        torch.testing.assert_close(input_grad(layer, x, v), v @ fit)
    assert layer.w.grad is None and layer.step == 0


# ------------------------------------------------------------------------------ the other methods
def fd_param_grad(device, w, x, v, gain=1.0, h=1e-6):
    """Central finite differences of ``<gain * x A(w)^T, v>`` in every parameter (a plain loop)."""
    g = torch.zeros_like(w)
    for k in range(w.numel()):
        e = torch.zeros_like(w)
        e[k] = h
        plus = (gain * x @ device.transfer_matrix(w + e).mT * v).sum()
        minus = (gain * x @ device.transfer_matrix(w - e).mT * v).sum()
        g[k] = (plus - minus) / (2 * h)
    return g


@pytest.mark.parametrize("name", ["slm", "mrr", "mzi"])
def test_oracle_gradients_are_finite_differences_of_the_simulator(name):
    """``y = gain * A(w) x + bias``: dL/dx = gain v A, dL/dw by finite differences, dL/dbias = sum v,
    dL/dgain = <A x, v>."""
    layer = make(3, 2, method="oracle", device=name, gain=1.7, bias=True)
    x = torch.randn(4, 3, generator=gen(13), dtype=F64)
    v = torch.randn(4, 2, generator=gen(14), dtype=F64)
    gx = input_grad(layer, x, v)
    A = A_of(layer)
    torch.testing.assert_close(gx, 1.7 * v @ A)
    torch.testing.assert_close(layer.w.grad, fd_param_grad(layer.physical, layer.w.detach(), x, v, 1.7),
                               rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(layer.bias.grad, v.sum(0))
    torch.testing.assert_close(layer.gain.grad, (x @ A.mT * v).sum())


@pytest.mark.parametrize("name", ["slm", "mrr"])
def test_twin_backpropagates_through_the_nominal_device_while_the_forward_is_the_real_one(name):
    """Forward: the real device (with fabrication error and crosstalk). Backward: the nominal twin,
    ``dL/dx = v A_nom(w)`` and dL/dw by finite differences of ``A_nom`` (built independently here)."""
    opts = {"fab_error": 0.2, "crosstalk": 0.1}
    layer = make(4, 3, method="twin", device=name, device_options=opts)
    nominal = make_device(name, 4, 3, dtype=F64)
    x = torch.randn(5, 4, generator=gen(15), dtype=F64)
    v = torch.randn(5, 3, generator=gen(16), dtype=F64)
    torch.testing.assert_close(layer(x), x @ A_of(layer).mT)
    gx = input_grad(layer, x, v)
    w = layer.w.detach()
    A_nom = nominal.transfer_matrix(w)
    assert not torch.allclose(A_nom, A_of(layer), atol=1e-2)
    torch.testing.assert_close(gx, v @ A_nom)
    torch.testing.assert_close(layer.w.grad, fd_param_grad(nominal, w, x, v), rtol=1e-6, atol=1e-8)


def test_zo_only_gradients_are_unbiased_with_the_derived_spread():
    """Ideal device (linear in x and in w, so both finite differences are exact directional
    derivatives): with M Gaussian directions the estimate of a vector ``a`` has
    ``E||g - a||^2 = (n + 1) ||a||^2 / M`` (n its length; ``test_method_formulas``). Markov: the
    relative error exceeds Z times ``sqrt((n + 1) / M)`` with probability <= 1/Z^2. A flipped sign
    has relative error 2."""
    M, d_in, d_out = 3000, 5, 3
    layer = make(d_in, d_out, method="zo_only", device="ideal", samples=M, mu=1e-3)
    x = torch.randn(4, d_in, generator=gen(17), dtype=F64)
    v = torch.randn(4, d_out, generator=gen(18), dtype=F64)
    gx = input_grad(layer, x, v)
    G = v @ A_of(layer)
    assert float((gx - G).norm() / G.norm()) < Z * math.sqrt((d_in + 1) / M)
    gw = (v.mT @ x).flatten()
    p = d_in * d_out
    assert float((layer.w.grad - gw).norm() / gw.norm()) < Z * math.sqrt((p + 1) / M)


def test_fa_feeds_the_error_back_through_its_fixed_random_matrix():
    """Feedback alignment: ``dL/dx = v B`` with the layer's fixed ``B`` (``d_out x d_in``, entries
    N(0, 1/d_in): the chi-square band of the device tests over 1200 entries), the same B at every step."""
    layer = make(30, 40, method="fa", device="ideal")
    B = layer.B_fb.clone()
    assert B.shape == (40, 30)
    n = B.numel()
    assert abs(float(B.square().mean()) * 30 - 1) < Z * math.sqrt(2 / n)
    assert abs(float(B.mean())) < Z / math.sqrt(30 * n)
    x = torch.randn(3, 30, generator=gen(19), dtype=F64)
    for k in range(2):
        v = torch.randn(3, 40, generator=gen(20 + k), dtype=F64)
        torch.testing.assert_close(input_grad(layer, x, v), v @ B, rtol=0, atol=0)
        move(layer, 70 + k)
    torch.testing.assert_close(layer.B_fb, B, rtol=0, atol=0)


def _dfa_network(head_seed: int):
    """Linear(5, 30) -> tanh -> black box 30 -> 40 (dfa) -> tanh -> Linear(40, 7): the output error
    reaches the black box's input straight through its feedback matrix."""
    torch.manual_seed(head_seed)
    model = nn.Sequential(nn.Linear(5, 30), nn.Tanh(), nn.Linear(30, 40), nn.Tanh(), nn.Linear(40, 7)).double()
    layer = replace_linear(model, "2", "slm", method="dfa", gain=1.0, samples=1, seed=4)
    return model, layer


def test_dfa_projects_the_network_output_error_straight_to_the_layer():
    """Direct feedback alignment: the gradient the black box sends to the layers before it is ``e B``,
    with ``e = dL/d(output)`` of the whole network (autograd, retained) and a fixed ``B`` (``n_out x d_in``,
    N(0, 1/d_in)); it does not depend on the layers between the device and the output, and ``B`` is the
    same at every step and after a state-dict round trip."""
    X = torch.randn(6, 5, generator=gen(23), dtype=F64)
    y = torch.randint(0, 7, (6,), generator=gen(24))
    grads, Bs = [], []
    for head_seed in (0, 1):  # two different heads after the device, same layer and feedback
        model, layer = _dfa_network(head_seed)
        seen = {}

        def keep_input(module, args, seen=seen):
            seen["x"] = args[0]
            args[0].retain_grad()

        layer.register_forward_pre_hook(keep_input)
        out = model(X)
        out.retain_grad()
        nn.functional.cross_entropy(out, y).backward()
        B = layer.B_fb.clone()
        assert B.shape == (7, 30)
        torch.testing.assert_close(seen["x"].grad, out.grad @ B, rtol=0, atol=1e-15)
        grads.append(out.grad.clone())
        Bs.append(B)
    torch.testing.assert_close(Bs[0], Bs[1], rtol=0, atol=0)  # the feedback depends on the layer's seed only
    assert not torch.allclose(grads[0], grads[1])  # ... while the output error depends on the head
    n = Bs[0].numel()
    assert abs(float(Bs[0].square().mean()) * 30 - 1) < Z * math.sqrt(2 / n)
    # the same B at the next step, and in a fresh model loaded from the state dict
    model, layer = _dfa_network(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    torch.testing.assert_close(layer.B_fb, Bs[0], rtol=0, atol=0)
    fresh, fresh_layer = _dfa_network(5)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh_layer.B_fb, Bs[0], rtol=0, atol=0)


def test_dfa_without_the_output_error_or_with_other_rows_says_what_to_do():
    layer = make(30, 40, method="dfa", device="ideal")  # built by hand: no model hook
    with pytest.raises(RuntimeError, match="direct_feedback"):
        input_grad(layer, torch.randn(3, 30, dtype=F64), torch.randn(3, 40, dtype=F64))

    class Pooled(nn.Module):  # one output row per two layer rows: direct feedback cannot map them
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(30, 40).double()

        def forward(self, x):
            return self.body(x).reshape(-1, 2, 40).mean(1)

    model = Pooled()
    replace_linear(model, "body", "ideal", method="dfa", samples=1)
    with pytest.raises(ValueError, match="use method 'fa'"):
        model(torch.randn(4, 30, dtype=F64, requires_grad=True)).sum().backward()


def test_surrogate_method_parameter_gradient_is_the_zo_estimate_with_the_derived_spread():
    """The surrogate method's dL/dw is the ZO estimate (forward scheme, the forward output reused):
    unbiased with the (p + 1)/M law on a device linear in w."""
    M = 3000
    layer = make(4, 3, method="static", device="ideal", rank=1, samples=M, mu=1e-3)
    x = torch.randn(6, 4, generator=gen(21), dtype=F64)
    v = torch.randn(6, 3, generator=gen(22), dtype=F64)
    (layer(x) * v).sum().backward()
    gw = (v.mT @ x).flatten()
    assert float((layer.w.grad - gw).norm() / gw.norm()) < Z * math.sqrt((12 + 1) / M)


def test_replace_linear_defaults_to_the_ideal_device_with_the_linear_sizes_bias_and_dtype():
    model = nn.Sequential(nn.Linear(3, 5, bias=False).double())
    layer = replace_linear(model, "0", rank=2)
    assert layer.physical.name == "ideal" and (layer.d_in, layer.d_out) == (3, 5)
    assert layer.bias is None and layer.w.dtype == F64 and model[0] is layer
    assert replace_linear(nn.Sequential(nn.Linear(3, 5)), "0", "mrr", rank=2).physical.name == "mrr"


def test_settings_errors_name_the_setting():
    from hybridlab.layer import SurrogateSettings, ZOSettings

    for kw, name in (({"samples": 0}, "`samples`"), ({"mu": 0.0}, "`mu`"), ({"directions": "x"}, "unknown directions"),
                     ({"scheme": "x"}, "unknown scheme"), ({"compressed": 2}, "unknown compressed")):
        with pytest.raises(ValueError, match=name):
            ZOSettings(**kw)
    for kw, name in (({"rank": 0}, r"`rank` \(surrogate rank r\)"), ({"sketch": 0}, "`sketch`"),
                     ({"sketch_kind": "x"}, "unknown sketch_kind"), ({"init": "x"}, "unknown init"),
                     ({"upkeep": "x"}, "unknown upkeep"), ({"rebuild_every": 0}, "`rebuild_every`"),
                     ({"ridge": -1.0}, "`ridge`")):
        with pytest.raises(ValueError, match=name):
            SurrogateSettings(**kw)


# ------------------------------------------------------------------------------ gain calibration
def rms(t: torch.Tensor) -> float:
    return float(t.detach().square().mean().sqrt())


def test_first_batch_calibrates_the_gain_to_the_input_rms_once():
    """``gain = rms(x) / rms(A x)``: the first output has the input's rms (the SLM's ``1/sqrt(d_in)``
    makes ``rms(A x)`` differ from ``rms(x)``, so an inverted ratio fails). Later batches keep it."""
    layer = make(8, 5, device="slm", gain=None, bias=True, rank=2)
    x = 3.0 * torch.randn(6, 8, generator=gen(23), dtype=F64)
    y_dev = x @ A_of(layer).mT
    assert abs(rms(y_dev) / rms(x) - 1) > 0.2
    out = layer(x)
    assert rms(out) == pytest.approx(rms(x), rel=1e-12)
    assert layer.gain.item() == pytest.approx(rms(x) / rms(y_dev), rel=1e-12)
    gain = layer.gain.item()
    layer(10 * x)
    assert layer.gain.item() == gain
    fixed = make(8, 5, device="slm", gain=2.5, rank=2)
    fixed(x)
    assert fixed.gain.item() == 2.5


def test_calibrate_gain_scales_the_calibrated_gain():
    """``calibrate_gain(model, x, scale)``: one forward pass calibrates, then ``gain *= scale``, so the
    black box's output rms is ``scale`` times its input's. ``scale = 1`` spends no query."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 4)).double()
    bb = replace_linear(model, "1", "slm", method="static", rank=2, samples=1, seed=1)
    x = torch.randn(7, 5, generator=gen(24), dtype=F64)
    calibrate_gain(model, x, 1.0)
    assert bb.physical.queries == 0 and not bb._gain_calibrated
    calibrate_gain(model, x, 0.1)
    with torch.no_grad():
        h = model[0](x)
        out = model(x) - bb.bias
    assert rms(out) == pytest.approx(0.1 * rms(h), rel=1e-10)
    assert bb.gain.item() == pytest.approx(0.1 * rms(h) / rms(h @ A_of(bb).mT), rel=1e-10)
    calibrate_gain(nn.Sequential(nn.Linear(2, 2)), torch.randn(3, 2), 0.1)  # no black box: nothing to do


# ------------------------------------------------------------------------------ training schedule
def test_anneal_split_by_hand():
    assert anneal_split(10, 0.2) == (8, 2)
    assert anneal_split(10, 0.0) == (10, 0)
    assert anneal_split(10, 0.25) == (8, 2)  # round(2.5) = 2 (banker's rounding of Python)
    assert anneal_split(3, 0.9) == (1, 2)  # at least one step in the main phase
    assert anneal_split(1, 0.5) == (1, 0)
    assert anneal_split(7, 0.5) == (3, 4)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="anneal"):
            anneal_split(10, bad)


class LrRecorder:
    """Records, at every optimizer step, the optimizer and the learning rate of each of its groups."""

    def __init__(self, monkeypatch):
        self.steps: list[tuple[int, tuple[float, ...]]] = []
        original = torch.optim.AdamW.step
        recorder = self

        def step(opt, *args, **kwargs):
            recorder.steps.append((id(opt), tuple(g["lr"] for g in opt.param_groups)))
            return original(opt, *args, **kwargs)

        monkeypatch.setattr(torch.optim.AdamW, "step", step)

    def lrs(self):
        return [lr for _, lr in self.steps]

    def optimizers(self):
        return [i for i, _ in self.steps]


def tiny_classifier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    replace_linear(model, "2", "ideal", method="static", rank=1, samples=1, seed=0)
    return model


@pytest.mark.parametrize("lr_device", [0.05, None])
def test_train_classifier_anneals_both_learning_rates_by_ten(monkeypatch, lr_device):
    """5 epochs of 2 steps, anneal 0.4: epochs 4-5 (steps 7-10) run at lr/10 and lr_device/10 (the
    device group defaults to lr), the same optimizer (its moments kept), the batch order continuing."""
    rec = LrRecorder(monkeypatch)
    g = gen(25)
    X, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    model = tiny_classifier()
    seen = []
    model[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()) if m.training else None)
    train_classifier(model, X, y, X[:8], y[:8], epochs=5, batch_size=20, lr=0.01, lr_device=lr_device, anneal=0.4,
                     seed=3, progress=False)
    dev_lr = 0.01 if lr_device is None else lr_device
    assert rec.lrs() == [(0.01, dev_lr)] * 6 + [(0.001, dev_lr / 10)] * 4
    assert len(set(rec.optimizers())) == 1
    g = gen(3)
    orders = [torch.randperm(40, generator=g) for _ in range(5)]  # one draw per epoch from the seed
    torch.testing.assert_close(seen[6], X[orders[3][:20]])
    torch.testing.assert_close(seen[0], X[orders[0][:20]])


def test_train_language_model_anneals_the_last_steps(monkeypatch):
    """10 steps, anneal 0.3: steps 8-10 at a tenth of both rates, the same optimizer; the metric is
    recorded at the end of each phase."""
    rec = LrRecorder(monkeypatch)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5))
    replace_linear(model, "1", "ideal", method="static", rank=1, samples=1, seed=0)
    g = gen(26)

    def batches():
        x = torch.randint(0, 5, (2, 3), generator=g)
        return x, (x + 1) % 5

    hist = train_language_model(model, batches, batches, steps=10, lr=0.02, lr_device=0.1, anneal=0.3,
                                eval_every=100, eval_batches=1, progress=False)
    assert rec.lrs() == [(0.02, 0.1)] * 7 + [(0.002, 0.01)] * 3
    assert len(set(rec.optimizers())) == 1
    assert hist.steps == [7, 10]
    with pytest.raises(ValueError, match="calibration"):
        train_language_model(model, batches, batches, steps=2, gain_scale=0.1, progress=False)


def test_importing_the_test_modules_changes_no_global_torch_state():
    """Importing every test module (as pytest collection does) leaves torch's thread count, default
    dtype and global seed as they were."""
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    code = (
        "import importlib.util, sys, torch\n"
        "before = (torch.get_num_threads(), torch.get_default_dtype(), torch.initial_seed())\n"
        f"sys.path.insert(0, {str(tests)!r})\n"
        f"for path in sorted(__import__('pathlib').Path({str(tests)!r}).glob('test_*.py')):\n"
        "    spec = importlib.util.spec_from_file_location(path.stem, path)\n"
        "    module = sys.modules[path.stem] = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "after = (torch.get_num_threads(), torch.get_default_dtype(), torch.initial_seed())\n"
        "assert before == after, (before, after)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "2"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
