"""Tests of hybridlab.surrogate: the KSL projector-splitting integrator, sketches, tracking."""

import math

import pytest
import torch

from hybridlab.lowrank import LowRank, eckart_young_error, fit_identity, truncated_svd
from hybridlab.sketch import random_rows as sketch_matrix
from hybridlab.surrogate import (
    forward_upkeep,
    ksl_step,
    projector_splitting_step,
    sketched_transpose,
    surrogate_error,
    tracking_ratio,
)

F64 = torch.float64


def rank_r_trajectory(d_out=40, d_in=30, r=5, *, sigma_min=None, seed=0, dtype=F64):
    """t -> A(t) = U(t) S(t) V(t)^T of rank r, with U(t) = exp(t K_U) U_init, V(t) = exp(t K_V) V_init
    (K skew, so the factors stay orthonormal) and a smoothly varying S(t).

    sigma_min: if given, the last singular value is held at this value (1e-8, or 0 for a
    singular S) and S(t) stays diagonal, so it really is the smallest one.
    """
    g = torch.Generator().manual_seed(seed)
    K_U = torch.randn(d_out, d_out, generator=g, dtype=dtype)
    K_U = (K_U - K_U.mT) / math.sqrt(d_out)
    K_V = torch.randn(d_in, d_in, generator=g, dtype=dtype)
    K_V = (K_V - K_V.mT) / math.sqrt(d_in)
    U_init = torch.linalg.qr(torch.randn(d_out, r, generator=g, dtype=dtype)).Q
    V_init = torch.linalg.qr(torch.randn(d_in, r, generator=g, dtype=dtype)).Q
    sigma = torch.linspace(3.0, 1.0, r, dtype=dtype)
    B = 0.3 * torch.randn(r, r, generator=g, dtype=dtype)
    if sigma_min is not None:
        sigma[-1] = 0.0
        B = torch.zeros_like(B)

    def A(t):
        S = torch.diag(sigma * math.exp(-0.5 * t)) + t * B
        if sigma_min is not None:
            S[-1, -1] = sigma_min
        return torch.linalg.matrix_exp(t * K_U) @ U_init @ S @ V_init.mT @ torch.linalg.matrix_exp(t * K_V).mT

    return A


def run_ksl(A, r, steps=50, T=1.0):
    ts = [T * k / steps for k in range(steps + 1)]
    U, S, V = truncated_svd(A(0.0), r)
    for t0, t1 in zip(ts[:-1], ts[1:]):
        U, S, V = ksl_step(U, S, V, A(t1) - A(t0))
    return U, S, V


# ---------------------------------------------------------------- explicit KSL


def test_explicit_ksl_exact_on_rank_r_trajectory():
    A = rank_r_trajectory()
    U, S, V = run_ksl(A, 5)
    assert surrogate_error(A(1.0), U, S, V) < 1e-5
    # factors stay orthonormal
    assert torch.allclose(U.mT @ U, torch.eye(5, dtype=F64), atol=1e-12)
    assert torch.allclose(V.mT @ V, torch.eye(5, dtype=F64), atol=1e-12)
    # and the trajectory really moved: the start is a poor surrogate of the end
    U0, S0, V0 = truncated_svd(A(0.0), 5)
    assert surrogate_error(A(1.0), U0, S0, V0) > 0.5


@pytest.mark.parametrize("sigma_min", [1e-8, 0.0])
def test_explicit_ksl_stable_with_tiny_or_zero_singular_value(sigma_min):
    """No S^{-1} anywhere: a kept singular value of 1e-8 (or exactly 0: singular S) is harmless."""
    A = rank_r_trajectory(sigma_min=sigma_min)
    U, S, V = run_ksl(A, 5)
    assert torch.isfinite(U).all() and torch.isfinite(S).all() and torch.isfinite(V).all()
    assert surrogate_error(A(1.0), U, S, V) < 1e-5


def test_ksl_result_is_one_step_of_the_formulas():
    """K-, S-, L-steps of chapter 4 (book/method.md), written out once more by hand."""
    g = torch.Generator().manual_seed(2)
    U0 = torch.linalg.qr(torch.randn(12, 3, generator=g, dtype=F64)).Q
    V0 = torch.linalg.qr(torch.randn(9, 3, generator=g, dtype=F64)).Q
    S0 = torch.randn(3, 3, generator=g, dtype=F64)
    dA = 0.1 * torch.randn(12, 9, generator=g, dtype=F64)
    U1, S1, V1 = ksl_step(U0, S0, V0, dA)
    K = U0 @ S0 + dA @ V0
    assert torch.allclose(U1 @ (U1.mT @ K), K, atol=1e-12)  # U1 spans K
    S_tilde = U1.mT @ K - U1.mT @ dA @ V0
    L = V0 @ S_tilde.mT + dA.mT @ U1
    assert torch.allclose(V1 @ S1.mT, L, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ksl_keeps_dtype_and_device(dtype):
    A = rank_r_trajectory(dtype=dtype)
    U, S, V = truncated_svd(A(0.0), 5)
    U1, S1, V1 = ksl_step(U, S, V, A(0.02) - A(0.0))
    assert U1.dtype == S1.dtype == V1.dtype == dtype
    assert surrogate_error(A(0.02), U1, S1, V1) < (1e-5 if dtype == torch.float32 else 1e-12)


def test_projector_splitting_step_shape_errors():
    U, S, V = truncated_svd(torch.randn(8, 6, dtype=F64), 2)
    with pytest.raises(ValueError, match="dA_V0"):
        projector_splitting_step(U, S, V, torch.zeros(8, 3, dtype=F64), lambda U1: torch.zeros(6, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"dAt_times\(U1\)"):
        projector_splitting_step(U, S, V, torch.zeros(8, 2, dtype=F64), lambda U1: torch.zeros(8, 2, dtype=F64))
    with pytest.raises(ValueError, match="factor shapes"):
        projector_splitting_step(U, S[:1], V, torch.zeros(8, 2, dtype=F64), lambda U1: None)
    with pytest.raises(ValueError, match=r"dA must have shape.*got \(6, 8\)"):
        ksl_step(U, S, V, torch.zeros(6, 8, dtype=F64))
    with pytest.raises(ValueError, match=r"dA_V0 must have shape.*got \(8, 3\)"):
        projector_splitting_step(U, S, V, torch.zeros(8, 3, dtype=F64), lambda U1: None)
    with pytest.raises(TypeError, match="V0 must be a torch.Tensor"):
        ksl_step(U, S, V.tolist(), torch.zeros(8, 6, dtype=F64))
    with pytest.raises(ValueError, match="dA must have shape.*got list"):
        ksl_step(U, S, V, [[0.0]])


# ---------------------------------------------------------------- implicit KSL


def forward_query(A):
    return lambda X: X.to(A) @ A.mT


def implicit_step(U, S, V, query_new, query_old, Z):
    """The implicit step from forward queries only: dA V0 and the sketch Y = f(Z; new) - f(Z; old)."""
    dA_V0 = (query_new(V.mT) - query_old(V.mT)).mT
    Y = query_new(Z) - query_old(Z)
    return projector_splitting_step(U, S, V, dA_V0, sketched_transpose(Z, Y.mT))


def test_implicit_with_exact_transpose_equals_explicit():
    """dA V0 from forward queries at the two matrices and the exact dA^T U1: same as explicit."""
    A = rank_r_trajectory()
    U, S, V = truncated_svd(A(0.0), 5)
    Ue, Se, Ve = U, S, V
    for k in range(20):
        A0, A1 = A(k / 20), A((k + 1) / 20)
        dA = A1 - A0
        dA_V0 = (forward_query(A1)(V.mT) - forward_query(A0)(V.mT)).mT
        U, S, V = projector_splitting_step(U, S, V, dA_V0, lambda U1, dA=dA: dA.mT @ U1)
        Ue, Se, Ve = ksl_step(Ue, Se, Ve, dA)
    diff = torch.linalg.matrix_norm(U @ S @ V.mT - Ue @ Se @ Ve.mT) / torch.linalg.matrix_norm(A(1.0))
    assert diff < 1e-6


def test_implicit_with_orthogonal_sketch_of_size_d_in_is_exact():
    """Z^T Z / s = I for an orthogonal sketch with s = d_in: the implicit KSL is the explicit one."""
    A = rank_r_trajectory()
    g = torch.Generator().manual_seed(5)
    U, S, V = truncated_svd(A(0.0), 5)
    for k in range(50):
        Z = sketch_matrix(30, 30, "orthogonal", generator=g, dtype=F64)
        U, S, V = implicit_step(U, S, V, forward_query(A((k + 1) / 50)), forward_query(A(k / 50)), Z)
    assert surrogate_error(A(1.0), U, S, V) < 1e-5


def test_implicit_gaussian_sketch_converges_to_explicit():
    """One step from the same state: the distance to the explicit step falls like 1/sqrt(s)."""
    A = rank_r_trajectory()
    A0, A1 = A(0.5), A(0.6)
    U, S, V = truncated_svd(A0, 5)
    explicit = ksl_step(U, S, V, A1 - A0).matrix()
    dA_norm = float(torch.linalg.matrix_norm(A1 - A0))
    g = torch.Generator().manual_seed(6)

    def distance(s):
        Z = sketch_matrix(s, 30, "gaussian", generator=g, dtype=F64)
        implicit = implicit_step(U, S, V, forward_query(A1), forward_query(A0), Z).matrix()
        return float(torch.linalg.matrix_norm(implicit - explicit)) / dA_norm

    d = {s: distance(s) for s in (100, 2000, 20000)}
    assert d[100] > d[2000] > d[20000]
    assert d[20000] < 0.1  # ~ sqrt(d_in / s) = 0.04


# ---------------------------------------------------------------- sketches


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "orthogonal"])
def test_sketch_second_moment_is_identity(kind):
    g = torch.Generator().manual_seed(8)
    d_in, s = 16, 40000
    Z = sketch_matrix(s, d_in, kind, generator=g, dtype=F64)
    assert Z.shape == (s, d_in) and Z.dtype == F64
    M = Z.mT @ Z / s
    assert float(torch.linalg.matrix_norm(M - torch.eye(d_in, dtype=F64), ord=2)) < 0.1


@pytest.mark.parametrize("s", [24, 48, 72])
def test_orthogonal_sketch_exact_for_multiples_of_d_in(s):
    g = torch.Generator().manual_seed(9)
    Z = sketch_matrix(s, 24, "orthogonal", generator=g, dtype=F64)
    assert torch.allclose(Z.mT @ Z / s, torch.eye(24, dtype=F64), atol=1e-12)
    # rows have squared norm d_in, like E||z||^2 = d_in for the other kinds
    assert torch.allclose((Z * Z).sum(1), torch.full((s,), 24.0, dtype=F64))


def test_orthogonal_sketch_partial_block_is_orthogonal_rows():
    Z = sketch_matrix(40, 24, "orthogonal", generator=torch.Generator().manual_seed(1), dtype=F64)
    tail = Z[24:]  # second block, cut to 16 rows: still mutually orthogonal
    assert torch.allclose(tail @ tail.mT, 24.0 * torch.eye(16, dtype=F64), atol=1e-10)


def test_rademacher_entries_are_plus_minus_one():
    Z = sketch_matrix(200, 10, "rademacher", generator=torch.Generator().manual_seed(0))
    assert set(Z.unique().tolist()) == {-1.0, 1.0}
    assert Z.dtype == torch.get_default_dtype()


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "orthogonal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sketch_deterministic_under_seed(kind, dtype):
    a = sketch_matrix(50, 12, kind, generator=torch.Generator().manual_seed(3), dtype=dtype)
    b = sketch_matrix(50, 12, kind, generator=torch.Generator().manual_seed(3), dtype=dtype)
    c = sketch_matrix(50, 12, kind, generator=torch.Generator().manual_seed(4), dtype=dtype)
    assert a.dtype == dtype and torch.equal(a, b) and not torch.equal(a, c)


def test_sketch_errors():
    with pytest.raises(ValueError, match="unknown kind"):
        sketch_matrix(4, 4, "sobol")
    with pytest.raises(ValueError, match=r"`n` \(number of rows\)"):
        sketch_matrix(0, 4)
    with pytest.raises(ValueError, match="dA_Zt"):
        sketched_transpose(torch.randn(5, 4), torch.randn(3, 4))


def test_sketched_transpose_is_the_formula():
    g = torch.Generator().manual_seed(2)
    Z = torch.randn(7, 5, generator=g, dtype=F64)
    dA = torch.randn(6, 5, generator=g, dtype=F64)
    U1 = torch.randn(6, 2, generator=g, dtype=F64)
    est = sketched_transpose(Z, dA @ Z.mT)(U1)
    assert torch.allclose(est, Z.mT @ Z @ dA.mT @ U1 / 7)


# ---------------------------------------------------------------- error measures


def test_tracking_ratio_and_surrogate_error():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(20, 15, generator=g, dtype=F64)
    U, S, V = truncated_svd(A, 4)
    assert tracking_ratio(A, U, S, V) == pytest.approx(1.0, rel=1e-10)
    assert surrogate_error(A, U, S, V) == pytest.approx(eckart_young_error(A, 4) / float(torch.linalg.matrix_norm(A)))
    worse = LowRank(U, 0.5 * S, V)
    assert tracking_ratio(A, *worse) > 1.0
    assert surrogate_error(A, *LowRank(U, 0 * S, V)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="A has shape"):
        tracking_ratio(A.mT, U, S, V)


# ---------------------------------------------------------------- tracking a moving device


def mrr_tracking(method, *, kind="gaussian", s=64, seed=0, d=64, r=8, steps=300, jitter=1e-3):
    """Final tracking ratio of a rank-r surrogate of an MRR device whose phases move in `steps`
    steps along the straight line from w0 ~ U(0.01, pi/4) to w1 ~ U(0.01, pi), plus `jitter`
    Gaussian noise on the phases at every step.

    method: 'implicit' (KSL from queries only: dA V0 and the sketch Y = f(Z; w_new) - f(Z; w_old),
    fresh Z each step), 'explicit' (KSL with the true dA, from the simulator) or 'static' (the
    initial fit, never updated). The initial surrogate is fit_identity at w0 in every case.
    """
    from hybridlab.devices import make_device

    device = make_device("mrr", d, d, seed=seed, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    w0 = 0.01 + (math.pi / 4 - 0.01) * torch.rand(device.p, generator=g, dtype=F64)
    w1 = 0.01 + (math.pi - 0.01) * torch.rand(device.p, generator=g, dtype=F64)
    g_Z = torch.Generator().manual_seed(seed + 1)

    device.configure(w0)
    U, S, V = fit_identity(device.query, d, r, dtype=F64)
    queries0 = device.queries
    w_old = w0
    for k in range(1, steps + 1):
        w_new = w0 + (k / steps) * (w1 - w0) + jitter * torch.randn(device.p, generator=g, dtype=F64)
        if method == "implicit":
            Z = sketch_matrix(s, d, kind, generator=g_Z, dtype=F64)
            X = torch.cat([V.mT, Z])  # r + s inputs, pushed at both configurations
            device.configure(w_old)
            F_old = device.query(X)
            device.configure(w_new)
            D = device.query(X) - F_old  # rows: (dA V0)^T, then Y = Z dA^T
            U, S, V = projector_splitting_step(U, S, V, D[:r].mT, sketched_transpose(Z, D[r:].mT))
        elif method == "explicit":
            with torch.no_grad():
                dA = device.transfer_matrix(w_new) - device.transfer_matrix(w_old)
            U, S, V = ksl_step(U, S, V, dA)
            device.configure(w_new)
        else:
            device.configure(w_new)
        w_old = w_new
    if method == "implicit":
        assert device.queries - queries0 == steps * 2 * (r + s)  # section 5 cost model
    return tracking_ratio(device.true_matrix(), U, S, V)


def test_implicit_ksl_tracks_a_moving_mrr_device_and_static_surrogate_does_not():
    implicit = mrr_tracking("implicit", kind="gaussian", s=64)
    static = mrr_tracking("static")
    assert implicit <= 1.3, f"implicit KSL (gaussian, s=64) tracking ratio {implicit:.3f} > 1.3"
    assert static > 2.0, f"static surrogate tracking ratio {static:.3f} <= 2: the scenario does not discriminate"


def test_implicit_with_orthogonal_sketch_s_eq_d_in_matches_explicit_on_device():
    """s = d_in orthogonal sketch: Z^T Z / s = I, so the query-only update is the explicit KSL."""
    implicit = mrr_tracking("implicit", kind="orthogonal", s=64, steps=100)
    explicit = mrr_tracking("explicit", steps=100)
    assert implicit == pytest.approx(explicit, rel=1e-6)
    assert explicit <= 1.3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_runs_on_cuda_in_the_input_dtype(dtype):
    A = rank_r_trajectory(dtype=dtype)
    A0, A1 = A(0.0).cuda(), A(0.05).cuda()
    U, S, V = truncated_svd(A0, 5)
    Z = sketch_matrix(30, 30, "orthogonal", generator=torch.Generator().manual_seed(0), dtype=dtype,
                      torch_device="cuda")
    assert Z.device.type == "cuda" and Z.dtype == dtype
    out = implicit_step(U, S, V, forward_query(A1), forward_query(A0), Z)
    assert all(T.device.type == "cuda" and T.dtype == dtype for T in out)
    assert surrogate_error(A1, *out) < (1e-4 if dtype == torch.float32 else 1e-10)


# ------------------------------------------------------------------ upkeep from the forward pass


@pytest.mark.parametrize("B", [50, 12])  # more inputs than d_in (d_in form), fewer (B x B form)
def test_forward_upkeep_is_exact_on_a_rank_r_move_seen_by_a_spanning_batch(B):
    g = torch.Generator().manual_seed(0)
    d_out, d_in, r = 40, 12, 4
    L, Rt = torch.randn(d_out, r, generator=g, dtype=F64), torch.randn(r, d_in, generator=g, dtype=F64)
    A0 = L @ Rt
    A1 = (L + 0.05 * torch.randn(d_out, r, generator=g, dtype=F64)) @ (Rt + 0.05 * torch.randn(r, d_in, generator=g,
                                                                                               dtype=F64))
    U, S, V = truncated_svd(A0, r)
    X = torch.randn(B, d_in, generator=g, dtype=F64)  # spans R^12 in both cases
    U1, S1, V1 = forward_upkeep(U, S, V, X, X @ A1.mT, ridge=1e-12)
    assert torch.linalg.matrix_norm(U1 @ S1 @ V1.mT - A1) < 1e-8 * torch.linalg.matrix_norm(A1)


def test_forward_upkeep_corrects_only_in_the_span_of_the_inputs():
    g = torch.Generator().manual_seed(1)
    d, r = 10, 10  # full rank: the step is the ridge correction itself
    A0, A1 = torch.randn(d, d, generator=g, dtype=F64), torch.randn(d, d, generator=g, dtype=F64)
    U, S, V = truncated_svd(A0, r)
    X = torch.zeros(3, d, dtype=F64)
    X[:, :3] = torch.randn(3, 3, generator=g, dtype=F64)  # inputs in the first three coordinates
    U1, S1, V1 = forward_upkeep(U, S, V, X, X @ A1.mT, ridge=1e-12)
    new = U1 @ S1 @ V1.mT
    assert torch.allclose(new[:, :3], A1[:, :3], atol=1e-8)  # seen columns: the device's
    assert torch.allclose(new[:, 3:], A0[:, 3:], atol=1e-8)  # unseen columns: unchanged
    # the ridge pulls the correction toward zero by lam / (lam + sigma^2) along each input direction
    half = forward_upkeep(U, S, V, X, X @ A1.mT, ridge=1e3)
    assert torch.linalg.matrix_norm(half.matrix() - A0) < torch.linalg.matrix_norm(new - A0)


def test_forward_upkeep_checks_shapes():
    U, S, V = truncated_svd(torch.randn(6, 5, dtype=F64), 2)
    with pytest.raises(ValueError, match="X must be"):
        forward_upkeep(U, S, V, torch.randn(3, 4, dtype=F64), torch.randn(3, 6, dtype=F64))
    with pytest.raises(ValueError, match="Y must be"):
        forward_upkeep(U, S, V, torch.randn(3, 5, dtype=F64), torch.randn(3, 5, dtype=F64))
