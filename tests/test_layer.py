"""The black-box layer: drop-in behaviour, gradients, cost counters, resume, errors."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from hybridlab.devices import make_device
from hybridlab.layer import METHODS, BlackBoxLinear, direct_feedback, replace_linear

D_IN, D_OUT, B, M, R, S = 12, 10, 7, 4, 3, 5


def make_layer(method="surrogate", device="slm", **kw):
    kw = {"rank": R, "samples": M, "sketch": S, "seed": 3, **kw}
    return BlackBoxLinear(D_IN, D_OUT, device, method=method, **kw)


def train_step(layer, opt, x, target):
    opt.zero_grad()
    loss = (layer(x) - target).pow(2).mean()
    loss.backward()
    opt.step()
    return loss.item()


def counts(layer):
    return layer.physical.queries, layer.physical.reconfigurations


def step_cost(layer, n_steps=2):
    """(queries, reconfigurations) spent by training step number `n_steps` (the earlier ones warm up)."""
    g = torch.Generator().manual_seed(0)
    # x requires grad, as if digital layers came before the device (dL/dx is needed)
    x, t = torch.randn(B, D_IN, generator=g).requires_grad_(), torch.randn(B, D_OUT, generator=g)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(n_steps - 1):
        train_step(layer, opt, x, t)
    q0, r0 = counts(layer)
    train_step(layer, opt, x, t)
    q1, r1 = counts(layer)
    return q1 - q0, r1 - r0


# ---------------------------------------------------------------- closed-form costs, one per method
# A steady-state step = forward (with the surrogate update for the previous optimizer step),
# backward (ZO with the forward output reused as f(X; w)), optimizer step.


def test_cost_surrogate_reference():
    # forward B, ZO M*B at M configurations, update: r + s at w_old and at w_new (2 configurations)
    assert step_cost(make_layer("surrogate")) == (B + M * B + 2 * (R + S), M + 2)


def test_cost_surrogate_cached():
    # update: r + s at w_new only, plus r for the new V (kept for the next step); no way back to w_old
    assert step_cost(make_layer("surrogate", upkeep="cached")) == (B + M * B + 2 * R + S, M + 1)


def test_cost_static():
    assert step_cost(make_layer("static")) == (B + M * B, M + 1)


def test_cost_rebuild():
    layer = make_layer("rebuild", rebuild_every=2)
    assert step_cost(layer, n_steps=2) == (B + M * B, M + 1)  # step 1: no re-read
    assert step_cost(make_layer("rebuild", rebuild_every=2), n_steps=3) == (B + M * B + D_IN, M + 1)


def test_cost_forward_upkeep_is_the_static_cost():
    # the surrogate is corrected from the forward pass's own (x, y): no query, no reconfiguration
    assert step_cost(make_layer("surrogate", upkeep="forward")) == step_cost(make_layer("static"))
    assert step_cost(make_layer("surrogate", upkeep="none")) == (B + M * B, M + 1)


def test_cost_frozen_is_the_forward_pass():
    assert step_cost(make_layer("frozen")) == (B, 0)  # nothing moves: no ZO, no reconfiguration


def test_static_and_rebuild_are_the_surrogate_method_with_an_upkeep():
    for alias, upkeep in (("static", "none"), ("rebuild", "rebuild")):
        a, b = make_layer(alias), make_layer("surrogate", upkeep=upkeep)
        assert a.surrogate == b.surrogate
        g = torch.Generator().manual_seed(1)
        x, t = torch.randn(B, D_IN, generator=g), torch.randn(B, D_OUT, generator=g)
        opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (a, b)]
        for _ in range(3):
            assert train_step(a, opts[0], x, t) == train_step(b, opts[1], x, t)
    with pytest.raises(ValueError, match="upkeep 'none'"):
        make_layer("static", upkeep="forward")


def test_cost_zo_only():
    # ZO for x: M*B queries at the current configuration; ZO for w: M*B at M configurations
    assert step_cost(make_layer("zo_only")) == (B + 2 * M * B, M + 1)


def test_cost_oracle():
    assert step_cost(make_layer("oracle")) == (B, 1)


def test_cost_twin_fa_and_dfa():
    assert step_cost(make_layer("twin")) == (B, 1)  # backward through the digital twin: no query
    assert step_cost(make_layer("fa")) == (B + M * B, M + 1)  # feedback matrix for x, ZO for w
    dfa = make_layer("dfa")
    direct_feedback(dfa)  # the layer alone is the network: its output error is v
    assert step_cost(dfa) == (B + M * B, M + 1)


def test_twin_of_a_perfect_device_is_the_oracle():
    kw = dict(device="mrr", gain=1.0, bias=False, dtype=torch.float64, seed=2)
    twin, oracle = (BlackBoxLinear(D_IN, D_OUT, method=m, **kw) for m in ("twin", "oracle"))
    x = torch.randn(B, D_IN, dtype=torch.float64)
    v = torch.randn(B, D_OUT, dtype=torch.float64)
    grads = []
    for layer in (twin, oracle):
        xx = x.clone().requires_grad_()
        (layer(xx) * v).sum().backward()
        grads.append((xx.grad, layer.w.grad))
    torch.testing.assert_close(grads[0], grads[1])
    # with fabrication error the (nominal) twin no longer matches the device's own oracle
    bad = [BlackBoxLinear(D_IN, D_OUT, method=m, device_options={"fab_error": 0.3}, **kw) for m in ("twin", "oracle")]
    bad_grads = []
    for layer in bad:
        xx = x.clone().requires_grad_()
        (layer(xx) * v).sum().backward()
        bad_grads.append(xx.grad)
    assert not torch.allclose(bad_grads[0], bad_grads[1], atol=1e-3)


def test_cost_central_and_compressed():
    assert step_cost(make_layer("static", scheme="central")) == (B + 2 * M * B, 2 * M + 1)
    assert step_cost(make_layer("static", compressed=True)) == (B + M * D_OUT, M + 1)


def test_cost_first_step_includes_identity_fit():
    layer = make_layer("surrogate")
    assert step_cost(layer, n_steps=1) == (D_IN + B + M * B, 1 + M)


# ---------------------------------------------------------------- drop-in behaviour and gradients


@pytest.mark.parametrize("method", METHODS)
def test_leading_batch_dims_and_dtype(method):
    layer = make_layer(method)
    if method == "dfa":
        direct_feedback(layer)  # the layer alone is the network
    x = torch.randn(2, 3, D_IN)
    y = layer(x)
    assert y.shape == (2, 3, D_OUT) and y.dtype == torch.float32
    y.sum().backward()
    if method == "frozen":  # the device parameters are not trained: no gradient, no ZO queries
        assert layer.w.grad is None and not layer.w.requires_grad
    else:
        assert layer.w.grad is not None and layer.w.grad.shape == layer.w.shape


def test_device_outputs_carry_no_autograd():
    layer = make_layer("surrogate")
    layer(torch.randn(3, D_IN))  # configures the device at w, which requires grad
    assert layer.w.requires_grad
    assert not layer.physical.query(torch.randn(3, D_IN, requires_grad=True)).requires_grad
    assert not layer.physical.query_batch(layer.w[None], torch.randn(3, D_IN)).requires_grad


def test_full_rank_surrogate_gives_exact_input_gradient():
    torch.manual_seed(0)
    layer = BlackBoxLinear(D_IN, D_OUT, "ideal", method="surrogate", rank=min(D_IN, D_OUT), samples=2,
                           gain=1.0, bias=False, dtype=torch.float64)
    x = torch.randn(B, D_IN, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, D_OUT, dtype=torch.float64)
    (layer(x) * v).sum().backward()
    with torch.no_grad():
        A = layer.physical.transfer_matrix(layer.w)
    # rank = min(d_in, d_out) = d_out: the surrogate is the whole matrix
    torch.testing.assert_close(x.grad, v @ A, atol=1e-10, rtol=1e-10)


def test_oracle_matches_autograd_of_linear():
    layer = BlackBoxLinear(D_IN, D_OUT, "ideal", method="oracle", gain=1.0, bias=False, dtype=torch.float64)
    x = torch.randn(B, D_IN, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, D_OUT, dtype=torch.float64)
    (layer(x) * v).sum().backward()
    A = layer.w.detach().reshape(D_OUT, D_IN)
    torch.testing.assert_close(x.grad, v @ A)
    torch.testing.assert_close(layer.w.grad, (v.T @ x.detach()).reshape(-1))


def test_zo_gradient_points_like_oracle():
    # many samples: the ZO estimate of dL/dw aligns with the oracle's
    kw = dict(device="slm", gain=1.0, bias=False, dtype=torch.float64, seed=5)
    zo = BlackBoxLinear(D_IN, D_OUT, method="static", samples=4000, mu=1e-5, rank=2, **kw)
    oracle = BlackBoxLinear(D_IN, D_OUT, method="oracle", **kw)
    x = torch.randn(B, D_IN, dtype=torch.float64)
    v = torch.randn(B, D_OUT, dtype=torch.float64)
    for layer in (zo, oracle):
        (layer(x) * v).sum().backward()
    cos = torch.nn.functional.cosine_similarity(zo.w.grad, oracle.w.grad, dim=0)
    assert cos > 0.9


def test_surrogate_follows_the_device_better_than_static():
    from hybridlab.surrogate import tracking_ratio

    ratios = {}
    for method, upkeep in (("surrogate", "ksl"), ("static", "none"), ("surrogate", "forward")):
        layer = BlackBoxLinear(32, 32, "mrr", method=method, rank=4, sketch=32, samples=2, seed=1, upkeep=upkeep,
                               dtype=torch.float64)
        opt = torch.optim.SGD([layer.w], lr=1.0)
        x = torch.randn(8, 32, dtype=torch.float64)
        for _ in range(40):
            opt.zero_grad()
            layer(x)  # sync + forward
            layer.w.grad = torch.full_like(layer.w, -0.01)  # a steady drift of every phase
            opt.step()
        layer.sync()
        ratios[upkeep] = tracking_ratio(layer.physical.true_matrix(), layer.U, layer.S, layer.V)
    assert ratios["ksl"] < ratios["none"] and ratios["forward"] < ratios["none"]


def test_replace_linear():
    model = nn.Sequential(nn.Linear(5, D_IN), nn.ReLU(), nn.Linear(D_IN, D_OUT))
    layer = replace_linear(model, "2", "mrr", method="static", rank=2, samples=2)
    assert model[2] is layer and isinstance(layer, BlackBoxLinear)
    assert model(torch.randn(4, 5)).shape == (4, D_OUT)
    with pytest.raises(ValueError, match="not an nn.Linear"):
        replace_linear(model, "1")
    nested = nn.Module()
    nested.body = nn.Sequential(nn.Linear(3, 4))
    replace_linear(nested, "body.0", "ideal", rank=2)
    assert isinstance(nested.body[0], BlackBoxLinear)


# ---------------------------------------------------------------- resume exactly


@pytest.mark.parametrize("method,kw", [("surrogate", {}), ("surrogate", {"upkeep": "cached"}),
                                       ("rebuild", {"rebuild_every": 2}), ("zo_only", {}), ("oracle", {})])
def test_state_dict_round_trip_resumes_exactly(method, kw):
    dev_opts = {"noise": 0.01, "drift": 0.001}

    def build():
        layer = make_layer(method, device_options=dev_opts, **kw)
        return layer, torch.optim.Adam(layer.parameters(), lr=0.01)

    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(B, D_IN, generator=g), torch.randn(B, D_OUT, generator=g)) for _ in range(6)]
    a, opt_a = build()
    for x, t in data[:3]:
        train_step(a, opt_a, x, t)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, buf)
    losses_a = [train_step(a, opt_a, x, t) for x, t in data[3:]]

    b, opt_b = build()
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    losses_b = [train_step(b, opt_b, x, t) for x, t in data[3:]]
    assert losses_a == losses_b
    torch.testing.assert_close(a.w, b.w, atol=0, rtol=0)
    assert counts(a) == counts(b) and a.step == b.step


def test_same_seed_same_numbers():
    outs = []
    for _ in range(2):
        layer = make_layer("surrogate", device_options={"noise": 0.01})
        opt = torch.optim.Adam(layer.parameters(), lr=0.01)
        x, t = torch.ones(B, D_IN), torch.zeros(B, D_OUT)
        outs.append([train_step(layer, opt, x, t) for _ in range(3)])
    assert outs[0] == outs[1]


# ---------------------------------------------------------------- errors that say what to do


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        make_layer("backprop")
    with pytest.raises(ValueError, match="ideal"):
        BlackBoxLinear(4, 4, "laser")
    with pytest.raises(ValueError, match="rank|r "):
        make_layer(rank=0)
    with pytest.raises(ValueError, match="rank|r "):
        make_layer(rank=min(D_IN, D_OUT) + 1)
    with pytest.raises(ValueError, match="samples"):
        make_layer(samples=0)
    with pytest.raises(ValueError, match="mu"):
        make_layer(mu=0.0)
    with pytest.raises(ValueError, match="d_in"):
        make_layer()(torch.randn(3, D_IN + 1))
    with pytest.raises(ValueError, match="device"):
        BlackBoxLinear(4, 4, make_device("slm", 5, 4))


def test_nonlinear_device_refused_where_linearity_is_needed():
    device = make_device("slm", D_IN, D_OUT)
    device.linear_in_x = False  # pretend intensity detection |A x|^2
    with pytest.raises(ValueError, match="linear in x"):
        BlackBoxLinear(D_IN, D_OUT, device, method="surrogate", rank=R)
    with pytest.raises(ValueError, match="linear in x"):
        BlackBoxLinear(D_IN, D_OUT, device, method="zo_only", compressed=True)


def test_non_finite_device_output_names_the_step():
    layer = make_layer("static", device="ideal")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, t = torch.randn(B, D_IN), torch.randn(B, D_OUT)
    train_step(layer, opt, x, t)
    with torch.no_grad():
        layer.w[:] = 3e38  # finite parameters, but the outputs overflow to inf
    with pytest.raises(ValueError, match="training step 1.*non-finite"):
        train_step(layer, opt, x, t)
    with torch.no_grad():
        layer.w[0] = float("nan")
    with pytest.raises(ValueError, match="training step 2.*NaN"):
        train_step(layer, opt, x, t)


# ---------------------------------------------------------------- cheap directions and torch devices


@pytest.mark.parametrize("device", ["slm", "mzi"])
@pytest.mark.parametrize("directions,rank", [("lowrank", 1), ("lowrank", 3), ("packed", 1)])
def test_cheap_directions_point_like_oracle(device, directions, rank):
    # the layer hands the device's matrix view of w (MZI: N x N phases) to the low-rank directions
    kw = dict(device=device, gain=1.0, bias=False, dtype=torch.float64, seed=5)
    zo = BlackBoxLinear(D_IN, D_OUT, method="static", samples=4000, mu=1e-5, rank=2, directions=directions,
                        direction_rank=rank, **kw)
    oracle = BlackBoxLinear(D_IN, D_OUT, method="oracle", **kw)
    assert zo.zo.direction_rank == rank
    x = torch.randn(B, D_IN, dtype=torch.float64)
    v = torch.randn(B, D_OUT, dtype=torch.float64)
    for layer in (zo, oracle):
        (layer(x) * v).sum().backward()
    # p = 120 (slm) or 144 (mzi) parameters, M = 4000: cosine about sqrt(M / (M + p)) = 0.98
    assert torch.nn.functional.cosine_similarity(zo.w.grad, oracle.w.grad, dim=0) > 0.9


def test_direction_rank_is_checked():
    with pytest.raises(ValueError, match="direction_rank"):
        make_layer(directions="lowrank", direction_rank=0)
    with pytest.raises(ValueError, match="directions"):
        make_layer(directions="sobol")


def test_generator_lives_with_the_parameters():
    layer = make_layer("surrogate")
    assert layer._generator.device == layer.w.device
    layer.to(torch.float64)  # same torch device: the stream is untouched
    other = make_layer("surrogate").to(torch.float64)
    assert torch.equal(layer._generator.get_state(), other._generator.get_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("upkeep", ["ksl", "cached", "forward"])
@pytest.mark.parametrize("directions", ["gaussian", "lowrank", "packed"])
def test_cuda_layer_keeps_everything_on_the_gpu(upkeep, directions):
    layer = make_layer("surrogate", upkeep=upkeep, directions=directions, device_options={"noise": 0.01})
    layer = layer.cuda()
    assert layer._generator.device.type == "cuda" and layer.physical._gen.device.type == "cuda"
    assert all(t.is_cuda for t in [*layer.parameters(), *layer.buffers()])
    # the move reseeds deterministically: two layers moved alike draw alike
    twin = make_layer("surrogate", upkeep=upkeep, directions=directions, device_options={"noise": 0.01}).cuda()
    assert torch.equal(layer._generator.get_state(), twin._generator.get_state())
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(B, D_IN, device="cuda", requires_grad=True)
    t = torch.randn(B, D_OUT, device="cuda")
    for _ in range(3):
        opt.zero_grad()
        loss = (layer(x) - t).pow(2).mean()
        loss.backward()
        assert x.grad.is_cuda and layer.w.grad.is_cuda and layer.gain.grad.is_cuda
        opt.step()
    assert all(b.is_cuda for b in (layer.U, layer.S, layer.V, layer.w_sur, layer.physical.w))
    assert layer.step == 2 and layer.physical.reconfigurations > 0
    # a CUDA state dict loads into a CPU layer (the generator reseeded from the saved state)
    cpu = make_layer("surrogate", upkeep=upkeep, directions=directions, device_options={"noise": 0.01})
    cpu.load_state_dict(layer.state_dict())
    assert cpu._generator.device.type == "cpu" and cpu.step == layer.step
    cpu(x.detach().cpu())
