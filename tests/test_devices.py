"""Tests of the simulated devices (hybridlab.devices): query interface, physics, non-idealities."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridlab.devices import DEVICES, MRR, Device, MZIMesh, make_device, mzi_coefficients
from hybridlab.devices.base import neighbour_mean, neighbour_sum, quantise_periodic, quantise_unit

NAMES = ["ideal", "slm", "mrr", "mzi"]
DTYPES = [torch.float32, torch.float64]


def build(name: str, d_in: int = 6, d_out: int = 4, **options) -> Device:
    dev = make_device(name, d_in, d_out, **options)
    dev.configure(dev.init_params())
    return dev


def inputs(n: int, d_in: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# every non-ideality each device models, switched on (parametrises "changes the output")
NONIDEAL = [
    ("ideal", {"bits": 2}),
    ("slm", {"bits": 2}),
    ("slm", {"crosstalk": 0.3}),
    ("slm", {"fab_error": 0.2}),
    ("mrr", {"bits": 2}),
    ("mrr", {"crosstalk": 0.2}),
    ("mrr", {"fab_error": 0.1}),
    ("mzi", {"bits": 2}),
    ("mzi", {"fab_error": 0.1}),
    ("mzi", {"loss_db": 0.5}),
]


# ------------------------------------------------------------------------------- registry
def test_registry_and_unknown_name():
    assert set(DEVICES) == set(NAMES)
    with pytest.raises(ValueError, match="ideal, mrr, mzi, slm"):
        make_device("oled", 3, 3)
    for name in NAMES:
        dev = make_device(name, 5, 3)
        assert dev.name == name and dev.linear_in_x
        assert dev.p == (25 if name == "mzi" else 15)


# ------------------------------------------------------------------------------- shapes / dtype
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("d_in,d_out", [(6, 4), (3, 5), (1, 1)])
def test_shapes_and_dtype(name, dtype, d_in, d_out):
    dev = build(name, d_in, d_out, dtype=dtype)
    X = inputs(7, d_in, dtype=torch.float64)  # converted to the device dtype
    Y = dev.query(X)
    assert Y.shape == (7, d_out) and Y.dtype == dtype
    W = dev.w + 0.1 * torch.randn(3, dev.p, dtype=dtype)
    assert dev.query_batch(W, X).shape == (3, 7, d_out)
    assert dev.query_batch(W, X.expand(3, 7, d_in)).shape == (3, 7, d_out)
    A = dev.transfer_matrix(W.view(3, 1, dev.p))
    assert A.shape == (3, 1, d_out, d_in) and A.dtype == dtype
    assert dev.true_matrix().shape == (d_out, d_in)
    assert dev.init_params().shape == (dev.p,) and dev.init_params().dtype == dtype


def test_double_moves_buffers():
    dev = build("mrr", fab_error=0.1, noise=0.1)
    dev.double()
    assert dev.dtype == torch.float64 and dev.gamma.dtype == torch.float64
    assert dev.query(inputs(2, 6)).dtype == torch.float64


# ------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", NAMES)
def test_seed_determinism(name):
    opts = {"noise": 0.1, "drift": 0.05}
    if name in ("slm", "mrr", "mzi"):
        opts["fab_error"] = 0.1
    if name == "mzi":
        opts["phase_noise"] = 0.05
    X = inputs(5, 6)

    def run(seed):
        dev = build(name, seed=seed, **opts)
        out = [dev.query(X)]
        dev.advance(2)
        out.append(dev.query_batch((dev.w + 0.1)[None], X)[0])
        return torch.cat(out)

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_init_params_uses_generator():
    dev = make_device("slm", 4, 4, seed=1)
    assert torch.equal(dev.init_params(), make_device("slm", 4, 4, seed=1).init_params())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(dev.init_params(g1), dev.init_params(g2))
    assert not torch.equal(dev.init_params(), dev.init_params(torch.Generator().manual_seed(5)))


# ------------------------------------------------------------------------------- physics
def test_ideal_is_the_matrix():
    dev = build("ideal", 6, 4)
    X = inputs(3, 6)
    torch.testing.assert_close(dev.query(X), X @ dev.w.view(4, 6).T)


def test_slm_formula():
    dev = build("slm", 5, 3, dtype=torch.float64)
    torch.testing.assert_close(dev.true_matrix(), torch.cos(dev.w.view(3, 5)) / math.sqrt(5))


@settings(deadline=None, max_examples=15)
@given(
    a=st.floats(0.3, 0.999),
    r=st.floats(0.3, 0.99),
    scale=st.floats(0.1, 50.0),
    bits=st.one_of(st.none(), st.integers(1, 8)),
)
def test_mrr_weights_in_unit_interval(a, r, scale, bits):
    dev = MRR(4, 3, a=a, r=r, bits=bits, crosstalk=0.1, fab_error=0.1, dtype=torch.float64)
    w = scale * torch.randn(5, dev.p, dtype=torch.float64)
    A = dev.transfer_matrix(w)
    assert A.min() >= -1.0 and A.max() <= 1.0
    lo, hi = dev.weight_range()
    assert -1.0 <= lo < hi <= 1.0


def test_mrr_formula_and_init():
    dev = make_device("mrr", 8, 8, dtype=torch.float64)
    w = torch.linspace(-7, 7, dev.p, dtype=torch.float64)
    T = (0.64 + 0.81 - 1.44 * torch.cos(w)) / (1 + 0.64 * 0.81 - 1.44 * torch.cos(w))
    torch.testing.assert_close(dev.transfer_matrix(w), (2 * T - 1).view(8, 8))
    A = dev.transfer_matrix(dev.init_params())  # zero-mean, symmetric initial weights
    lo, hi = dev.weight_range()
    assert A.abs().max() <= 0.5 * min(-lo, hi) + 1e-9 and abs(A.mean()) < 0.1
    torch.testing.assert_close(dev.transfer_matrix(dev.phase_for_weight(A.flatten())), A)
    assert MRR(2, 2, preset="5um").a == 0.925


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("N", [1, 2, 5, 8])
def test_mzi_unitary(N, dtype, tol):
    dev = make_device("mzi", N, N, dtype=dtype)
    U = dev.unitary(dev.init_params())
    eye = torch.eye(N, dtype=U.dtype)
    assert (U @ U.mH - eye).abs().max() < tol
    assert (U.mH @ U - eye).abs().max() < tol
    torch.testing.assert_close(dev.transfer_matrix(dev.init_params()), U.real)


@pytest.mark.parametrize("d_in,d_out", [(6, 3), (3, 6)])
def test_mzi_non_square_is_truncated_real_part(d_in, d_out):
    dev = build("mzi", d_in, d_out, dtype=torch.float64)
    U = dev.unitary(dev.w)
    assert U.shape == (6, 6)
    A = U.real[:d_out, :d_in]
    torch.testing.assert_close(dev.true_matrix(), A)
    X = inputs(4, d_in, dtype=torch.float64)
    x_pad = torch.zeros(4, 6, dtype=torch.float64)
    x_pad[:, :d_in] = X
    torch.testing.assert_close(dev.query(X), (x_pad.to(U.dtype) @ U.T).real[:, :d_out])


@settings(deadline=None, max_examples=10)
@given(d_in=st.integers(1, 7), d_out=st.integers(1, 7), seed=st.integers(0, 100))
def test_mzi_matrix_is_a_contraction(d_in, d_out, seed):
    """Re(U)[:d_out, :d_in] of a unitary U has spectral norm <= 1."""
    dev = make_device("mzi", d_in, d_out, seed=seed, dtype=torch.float64)
    A = dev.transfer_matrix(dev.init_params())
    assert torch.linalg.matrix_norm(A, ord=2) <= 1 + 1e-12


def test_mzi_coefficients_match_matrix_product():
    g = torch.Generator().manual_seed(0)
    theta, phi, e1, e2 = (torch.rand(5, generator=g, dtype=torch.float64) * 6 for _ in range(4))
    e1, e2 = 0.1 * e1, 0.1 * e2
    loss = 0.9
    t = mzi_coefficients(theta, phi, e1, e2, loss)

    def bs(b):
        c, s = torch.cos(b).to(torch.complex128), torch.sin(b).to(torch.complex128)
        return torch.stack([torch.stack([c, 1j * s], -1), torch.stack([1j * s, c], -1)], -2)

    def ph(x):
        one = torch.ones_like(x, dtype=torch.complex128)
        zero = torch.zeros_like(one)
        return torch.stack([torch.stack([torch.exp(1j * x), zero], -1), torch.stack([zero, one], -1)], -2)

    T = loss * bs(math.pi / 4 + e2) @ ph(theta) @ bs(math.pi / 4 + e1) @ ph(phi)
    for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        torch.testing.assert_close(t[k], T[:, i, j])


@pytest.mark.parametrize("d_in,d_out", [(7, 5), (4, 7), (6, 6)])
def test_mzi_fast_path_matches_differentiable_path(d_in, d_out):
    dev = make_device("mzi", d_in, d_out, fab_error=0.05, loss_db=0.2, dtype=torch.float64)
    W = dev.init_params() + 0.3 * torch.randn(3, dev.p, dtype=torch.float64)
    A_fast = dev.transfer_matrix(W)  # no grad needed -> in-place mesh
    A_ref = dev.transfer_matrix(W.clone().requires_grad_())  # functional mesh
    torch.testing.assert_close(A_fast, A_ref.detach())
    X_small, X_big = inputs(3, d_in, torch.float64), inputs(11, d_in, torch.float64)  # propagate X / build A
    for X in (X_small, X_big):
        torch.testing.assert_close(dev.query_batch(W, X), X @ A_ref.detach().mT)


# ------------------------------------------------------------------------------- non-idealities
@pytest.mark.parametrize("name,opts", NONIDEAL, ids=[f"{n}-{next(iter(o))}" for n, o in NONIDEAL])
def test_nonideality_changes_matrix(name, opts):
    ref = make_device(name, 6, 4)
    dev = make_device(name, 6, 4, **opts)
    w = ref.init_params()
    assert not torch.allclose(ref.transfer_matrix(w), dev.transfer_matrix(w), atol=1e-4)
    X = inputs(3, 6)
    ref.configure(w)
    dev.configure(w)
    assert not torch.allclose(ref.query(X), dev.query(X), atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_readout_noise_fresh_every_query(name):
    dev = build(name, noise=0.05)
    X = inputs(4, 6)
    clean = X @ dev.true_matrix().T
    y1, y2 = dev.query(X), dev.query(X)
    assert not torch.allclose(y1, clean) and not torch.allclose(y1, y2)
    rel = (y1 - clean).norm() / clean.norm()
    assert 0.01 < rel < 0.15
    Yb = dev.query_batch(dev.w.expand(2, dev.p), X)
    assert not torch.allclose(Yb[0], Yb[1])


def test_mzi_phase_noise_fresh_every_call():
    dev = build("mzi", phase_noise=0.05)
    X = inputs(3, 6)
    clean = X @ dev.true_matrix().T  # true_matrix excludes phase noise
    y1, y2 = dev.query(X), dev.query(X)
    assert not torch.allclose(y1, clean, atol=1e-4) and not torch.allclose(y1, y2, atol=1e-4)
    assert (y1 - clean).abs().max() < 0.5


@pytest.mark.parametrize("name", NAMES)
def test_drift_moves_matrix_only_on_advance(name):
    dev = build(name, drift=0.05)
    A0 = dev.true_matrix().clone()
    dev.query(inputs(3, 6))
    torch.testing.assert_close(dev.true_matrix(), A0, rtol=0, atol=0)
    dev.advance()
    assert not torch.allclose(dev.true_matrix(), A0)
    torch.testing.assert_close(dev.true_matrix(), dev.transfer_matrix(dev.w))
    still = build(name)  # drift off: advance is a no-op
    B0 = still.true_matrix().clone()
    still.advance(10)
    assert torch.equal(still.true_matrix(), B0)


def test_quantisation_levels_and_straight_through():
    phi = torch.linspace(0, 2 * math.pi - 1e-3, 1000, dtype=torch.float64, requires_grad=True)
    q = quantise_periodic(phi, 3)
    assert q.unique().numel() <= 2**3 + 1  # the top level rounds up to 2 pi == 0
    q.sum().backward()
    assert torch.equal(phi.grad, torch.ones_like(phi))
    assert torch.equal(quantise_unit(torch.tensor([-3.0, -0.2, 0.2, 3.0]), 1), torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    assert quantise_periodic(phi, None) is phi


def test_crosstalk_stencils():
    g = torch.arange(12.0).view(3, 4)
    s = neighbour_sum(g)
    assert s[1, 1] == g[0, 1] + g[2, 1] + g[1, 0] + g[1, 2]
    assert s[0, 0] == g[0, 1] + g[1, 0]
    torch.testing.assert_close(neighbour_mean(g)[0, 0], (g[0, 1] + g[1, 0]) / 2)
    torch.testing.assert_close(neighbour_mean(torch.ones(2, 5, 3)), torch.ones(2, 5, 3))


# ------------------------------------------------------------------------------- counters
@pytest.mark.parametrize("name", NAMES)
def test_counters(name):
    dev = make_device(name, 6, 4)
    w = dev.init_params()
    dev.configure(w)
    dev.configure(w.clone())  # same vector: not a reconfiguration
    assert (dev.queries, dev.reconfigurations) == (0, 1)
    dev.query(inputs(5, 6))
    assert dev.queries == 5
    W = w + 0.1 * torch.randn(3, dev.p)
    dev.query_batch(W, inputs(4, 6))
    assert (dev.queries, dev.reconfigurations) == (5 + 12, 4)
    assert torch.equal(dev.w, W[-1])
    dev.query_batch(torch.stack([W[-1], W[-1], w]), inputs(2, 6))  # only the last set is new
    assert (dev.queries, dev.reconfigurations) == (17 + 6, 5)
    dev.true_matrix()
    dev.transfer_matrix(w)
    assert (dev.queries, dev.reconfigurations) == (23, 5)
    dev.simulate(inputs(2, 6), w)
    assert (dev.queries, dev.reconfigurations) == (25, 5)


@pytest.mark.parametrize("name", NAMES)
def test_query_batch_matches_loop(name):
    opts = {"fab_error": 0.05} if name != "ideal" else {}
    dev = build(name, 6, 4, dtype=torch.float64, **opts)
    loop = build(name, 6, 4, dtype=torch.float64, **opts)
    W = dev.w + 0.2 * torch.randn(5, dev.p, dtype=torch.float64)
    for X in (inputs(3, 6, torch.float64), torch.randn(5, 3, 6, dtype=torch.float64)):
        Yb = dev.query_batch(W, X)
        Xs = X if X.dim() == 3 else X.expand(5, 3, 6)
        Yl = torch.stack([(loop.configure(w), loop.query(x))[1] for w, x in zip(W, Xs)])
        torch.testing.assert_close(Yb, Yl)
        assert (dev.queries, dev.reconfigurations) == (loop.queries, loop.reconfigurations)
        torch.testing.assert_close(dev.true_matrix(), loop.true_matrix())


# ------------------------------------------------------------------------------- autograd
@pytest.mark.parametrize("name", NAMES)
def test_no_autograd_leaks(name):
    dev = make_device(name, 6, 4)
    w = dev.init_params().requires_grad_()
    X = inputs(3, 6).requires_grad_()
    dev.configure(w * 1.0)
    assert not dev.query(X).requires_grad
    assert not dev.query_batch(torch.stack([w, w + 0.1]), X).requires_grad
    assert not dev.true_matrix().requires_grad
    assert not dev.w.requires_grad


GRAD_OPTS = {
    "ideal": {},
    "slm": {"crosstalk": 0.2, "fab_error": 0.1},
    "mrr": {"crosstalk": 0.1, "fab_error": 0.1},
    "mzi": {"fab_error": 0.1, "loss_db": 0.3},
}


@pytest.mark.parametrize("name", NAMES)
def test_transfer_matrix_is_differentiable(name):
    dev = make_device(name, 4, 3, dtype=torch.float64, **GRAD_OPTS[name])
    w = (dev.init_params() + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(dev.transfer_matrix, (w,), eps=1e-6, atol=1e-6)
    X = inputs(2, 4, torch.float64).requires_grad_()
    Y = dev.simulate(X, w)
    gX, gw = torch.autograd.grad(Y.square().sum(), (X, w))
    A = dev.transfer_matrix(w).detach()
    torch.testing.assert_close(gX, 2 * Y.detach() @ A)
    assert gw.shape == (dev.p,) and gw.abs().sum() > 0


def test_quantised_transfer_matrix_has_straight_through_gradient():
    dev = make_device("slm", 3, 2, bits=2, dtype=torch.float64)
    w = dev.init_params().requires_grad_()
    dev.transfer_matrix(w).sum().backward()
    q = quantise_periodic(w.detach(), 2)
    torch.testing.assert_close(w.grad, -torch.sin(q) / math.sqrt(3))


# ------------------------------------------------------------------------------- state round trip
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    opts = {"noise": 0.1, "drift": 0.02, "seed": 7}
    if name in ("slm", "mrr", "mzi"):
        opts["fab_error"] = 0.1
    if name == "mzi":
        opts["phase_noise"] = 0.02
    dev = build(name, **opts)
    X = inputs(3, 6)
    for _ in range(3):
        dev.query(X)
    dev.advance()
    dev.query_batch(dev.w + 0.1 * torch.randn(2, dev.p), X)
    buf = io.BytesIO()
    torch.save(dev.state_dict(), buf)
    buf.seek(0)
    fresh = make_device(name, 6, 4, **{**opts, "seed": 7})
    fresh.load_state_dict(torch.load(buf))
    assert (fresh.queries, fresh.reconfigurations, fresh.configured) == (dev.queries, dev.reconfigurations, True)
    assert torch.equal(fresh.query(X), dev.query(X))
    fresh.advance()
    dev.advance()
    W = dev.w + 0.1
    assert torch.equal(fresh.query_batch(W[None], X), dev.query_batch(W[None], X))
    assert (fresh.queries, fresh.reconfigurations) == (dev.queries, dev.reconfigurations)


@pytest.mark.parametrize("name", ["mzi", "slm"])
def test_state_dict_round_trip_right_after_configure(name):
    dev = build(name, 6, 4, noise=0.1)
    fresh = make_device(name, 6, 4, noise=0.1)
    fresh.load_state_dict(dev.state_dict())
    X = inputs(3, 6)
    for _ in range(2):  # first query after a change, then the cached matrix
        assert torch.equal(fresh.query(X), dev.query(X))


def test_mzi_first_and_cached_query_agree():
    dev = build("mzi", 6, 4)
    X = inputs(3, 6)
    y_first = dev.query(X)  # pushes X through the mesh
    torch.testing.assert_close(dev.query(X), y_first)  # uses the cached matrix
    dev.configure(dev.w + 0.1)
    torch.testing.assert_close(dev.query(X), X @ dev.transfer_matrix(dev.w).T)


def test_state_saved_without_the_generator_device_restores_the_generator_exactly():
    """States written before the generator's device was recorded load like same-device states."""
    dev = build("slm", 6, 4, noise=0.1)
    state = dev.get_extra_state()
    del state["rng_device"]
    fresh = make_device("slm", 6, 4, noise=0.1)
    fresh.load_state_dict(dev.state_dict())
    fresh.set_extra_state(state)
    X = inputs(3, 6)
    assert torch.equal(fresh.query(X), dev.query(X))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_holds_only_the_state(name):
    """Parameters, drift, fabrication errors when there are any, and the extra state (counters,
    generator); nothing derived (the MZI's mode orders), no all-zero error buffers."""
    base = {"w", "drift_offset", "_extra_state"}
    assert set(make_device(name, 3, 2).state_dict()) == base
    if name != "ideal":
        fab = {"slm": "phase_offset", "mrr": "gamma", "mzi": "eps"}[name]
        assert set(make_device(name, 3, 2, fab_error=0.1).state_dict()) == base | {fab}


@pytest.mark.parametrize("name", NAMES)
def test_query_batch_of_one_set_counts_like_configure_and_query(name):
    dev = build(name, 6, 4)
    r0 = dev.reconfigurations
    dev.query_batch(dev.w[None].clone(), inputs(2, 6))  # the configured set: no reconfiguration
    assert (dev.queries, dev.reconfigurations) == (2, r0)
    dev.query_batch((dev.w + 0.1)[None], inputs(3, 6))
    assert (dev.queries, dev.reconfigurations) == (5, r0 + 1)


def test_repr_lists_the_settings_that_are_on():
    text = repr(make_device("slm", 3, 2, crosstalk=1.0, noise=0.1, seed=5))
    assert "crosstalk=1.0" in text and "noise=0.1" in text and "seed=5" in text
    assert "bits" not in text and "drift" not in text and "fab_error" not in text
    text = repr(make_device("mrr", 3, 2, bits=4))
    assert "bits=4" in text and "a=0.8" in text and "r=0.9" in text
    assert "phase_noise=0.1" in repr(make_device("mzi", 2, 2, phase_noise=0.1, loss_db=0.5))


def test_unconfigured_state_round_trip():
    dev = make_device("slm", 3, 3)
    fresh = make_device("slm", 3, 3)
    fresh.load_state_dict(dev.state_dict())
    assert not fresh.configured


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", NAMES)
def test_clear_errors(name):
    dev = make_device(name, 6, 4)
    with pytest.raises(ValueError, match="not configured"):
        dev.query(inputs(2, 6))
    with pytest.raises(ValueError, match="not configured"):
        dev.true_matrix()
    with pytest.raises(ValueError, match="^w must have shape"):
        dev.configure(torch.zeros(dev.p + 1))
    with pytest.raises(ValueError, match="w contains NaN"):
        dev.configure(torch.full((dev.p,), float("nan")))
    dev.configure(dev.init_params())
    with pytest.raises(ValueError, match="^X must have shape"):
        dev.query(inputs(2, 5))
    with pytest.raises(ValueError, match="^X must have shape"):
        dev.query(torch.zeros(6))
    with pytest.raises(ValueError, match="^W must have shape"):
        dev.query_batch(torch.zeros(2, dev.p - 1), inputs(2, 6))
    with pytest.raises(ValueError, match="^X must have shape"):
        dev.query_batch(torch.zeros(2, dev.p), torch.zeros(3, 2, 6))
    with pytest.raises(ValueError, match="^w must have shape"):
        dev.transfer_matrix(torch.zeros(3))
    X = inputs(2, 6)
    X[0, 0] = float("inf")
    with pytest.raises(ValueError, match="device returned non-finite output.*check"):
        dev.query(X)
    with pytest.raises(ValueError, match="device returned non-finite output"):
        dev.query_batch(torch.full((1, dev.p), float("nan")), inputs(2, 6))
    with pytest.raises(ValueError, match="steps"):
        dev.advance(-1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"d_in": 0}, "d_in"),
        ({"d_out": 0}, "d_out"),
        ({"bits": 0}, "bits"),
        ({"noise": -0.1}, "noise"),
        ({"drift": -1.0}, "drift"),
        ({"crosstalk": -0.1}, "crosstalk"),
        ({"fab_error": float("nan")}, "fab_error"),
        ({"seed": -1}, "seed"),
        ({"dtype": torch.int64}, "dtype"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_constructor_errors(name, kwargs, match):
    args = {"d_in": 3, "d_out": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_device(name, **args)


def test_device_specific_errors():
    with pytest.raises(ValueError, match="crosstalk is not modelled by the 'mzi'"):
        make_device("mzi", 3, 3, crosstalk=0.1)
    with pytest.raises(ValueError, match="fab_error is not modelled by the 'ideal'"):
        make_device("ideal", 3, 3, fab_error=0.1)
    with pytest.raises(ValueError, match="phase_noise"):
        MZIMesh(3, 3, phase_noise=-1)
    with pytest.raises(ValueError, match="loss_db"):
        MZIMesh(3, 3, loss_db=-1)
    with pytest.raises(ValueError, match="crosstalk"):
        make_device("slm", 3, 3, crosstalk=1.5)
    with pytest.raises(ValueError, match="r "):
        make_device("mrr", 3, 3, r=1.0)
    with pytest.raises(ValueError, match="a "):
        make_device("mrr", 3, 3, a=1.0)
    with pytest.raises(ValueError, match="preset"):
        make_device("mrr", 3, 3, preset="huge")
    with pytest.raises(TypeError, match="d_in"):
        make_device("slm", 2.5, 3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        make_device("slm", 3, 3, lossdb=1.0)


# ------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda(name):
    opts = {"noise": 0.1, "drift": 0.01}
    if name == "mzi":
        opts["phase_noise"] = 0.01
    dev = make_device(name, 6, 4, device="cuda", **opts)
    dev.configure(dev.init_params())
    X = inputs(3, 6).cuda()
    assert dev.query(X).device.type == "cuda"
    assert dev.query_batch(dev.w + torch.zeros(2, dev.p, device="cuda"), X).device.type == "cuda"
    dev.advance()
    fresh = make_device(name, 6, 4, device="cuda", **opts)
    fresh.load_state_dict(dev.state_dict())
    assert torch.equal(fresh.query(X), dev.query(X))
    cpu = make_device(name, 6, 4, **opts)
    cpu.configure(dev.w.cpu())
    cpu.drift_offset.copy_(dev.drift_offset.cpu())
    torch.testing.assert_close(cpu.true_matrix(), dev.true_matrix().cpu())


def test_changed_rows_counted_alike_on_the_host_and_on_the_torch_device():
    from hybridlab.devices.base import _count_changed_rows

    w = torch.randn(5)
    v = w.clone()
    v[3] += 1.0  # differs from w only after the first entry
    cases = [(torch.stack([w, w, v, v, w]), w), (torch.stack([w, w, v, v, w]), None), (w[None], w), (v[None], w),
             (torch.stack([v, w]), v)]
    for W, current in cases:
        host = _count_changed_rows(W, current, on_device=False)
        device = _count_changed_rows(W, current, on_device=True)
        assert isinstance(host, int) and isinstance(device, torch.Tensor) and int(device) == host
    assert [_count_changed_rows(W, c, on_device=False) for W, c in cases] == [2, 3, 0, 1, 1]
