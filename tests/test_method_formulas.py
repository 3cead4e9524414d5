"""The method's formulas pinned to independent values: ZO estimates, random probes, KSL steps, the
forward-pass upkeep.

Where an estimate is random, the test either fixes the random directions and compares with the
exact value the formula must give for them (for a device linear in ``w`` or ``x`` the finite
difference has no truncation error), or uses a tolerance derived from the estimate's variance (the
derivation is in the docstring). A closed form that needs no QR sign convention checks each
projector-splitting step: with ``P_U = U U^T``, one KSL step from ``Y0 = U0 S0 V0^T`` gives

    Y1 = Y0 + dA P_V0 - P_U1 dA P_V0 + U1 (dA^T U1)^T,     range(U1) = range(Y0 V0 + dA V0)

(multiply out ``U1 S1 V1^T = U1 L^T`` with ``L = V0 S~^T + dA^T U1``, ``S~ = S_hat - U1^T dA V0`` and
``U1 S_hat = K``); the implicit step replaces ``dA^T U1`` by its sketch estimate.
"""

from __future__ import annotations

import math

import pytest
import torch

from hybridlab.lowrank import LowRank, truncated_svd
from hybridlab.sketch import random_rows
from hybridlab.surrogate import forward_upkeep, ksl_step, projector_splitting_step, sketched_transpose
from hybridlab.zo import directions, zo_gradient, zo_input_gradient

F64 = torch.float64
Z = 5.0  # acceptance band in standard deviations (fixed seeds: the outcome is deterministic)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def orthonormal(n: int, r: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, r, generator=gen(seed), dtype=F64)).Q


# ------------------------------------------------------------------------------ ZO estimate of dL/dw
D_IN, D_OUT, N = 4, 3, 5
P = D_IN * D_OUT


def linear_query_at(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """An ideal device: A(w) = w reshaped, y = A x (linear in w and in x)."""
    return X @ W.reshape(-1, D_OUT, D_IN).mT


def cosine_query_at(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """An SLM-like device: A(w) = cos(w) reshaped, nonlinear in w."""
    return X @ torch.cos(W).reshape(-1, D_OUT, D_IN).mT


def phi_of(query_at, w, X, V) -> float:
    """The scalar <f(X; w), V>_F whose gradient is dL/dw."""
    return float((query_at(w[None], X)[0] * V).sum())


def problem(seed=0):
    g = gen(seed)
    return (torch.randn(P, generator=g, dtype=F64), torch.randn(N, D_IN, generator=g, dtype=F64),
            torch.randn(N, D_OUT, generator=g, dtype=F64))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("variant", ["forward", "forward-f0", "central", "compressed", "compressed-f0",
                                     "compressed-central"])
def test_zo_gradient_is_the_projection_on_its_directions_for_a_linear_device(variant, kind):
    """For A linear in w, ``<f(X; w + mu u) - f(X; w), V> / mu = <g*, u>`` exactly, so the estimate
    is ``g = (1/M) U^T U g*`` for the directions U, whatever mu; g* = V^T X (autograd-free: the
    gradient of <X A^T, V> in A is V^T X)."""
    w, X, V = problem(1)
    M = 7
    U = directions(M, P, kind, generator=gen(2), dtype=F64)
    g_true = (V.mT @ X).flatten()
    kw = {"scheme": "central" if variant.endswith("central") else "forward",
          "compressed": variant.startswith("compressed"),
          "f0": linear_query_at(w[None], X)[0] if variant.endswith("f0") else None}
    g = zo_gradient(linear_query_at, w, X, V, samples=M, mu=1e-3, U=U, **kw)
    torch.testing.assert_close(g, U.mT @ (U @ g_true) / M, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_zo_gradient_with_coordinate_directions_is_the_finite_difference_by_hand(scheme):
    """Directions ``u_k = sqrt(p) e_k`` (M = p): component k of the estimate is the one-sided
    ``(phi(w + h e_k) - phi(w)) / h`` or the central ``(phi(w + h e_k) - phi(w - h e_k)) / (2h)``
    with ``h = mu sqrt(p)``, computed here in a plain loop on a device nonlinear in w."""
    w, X, V = problem(3)
    mu = 1e-3
    h = mu * math.sqrt(P)
    U = math.sqrt(P) * torch.eye(P, dtype=F64)
    g = zo_gradient(cosine_query_at, w, X, V, samples=P, mu=mu, U=U, scheme=scheme)
    expected = torch.zeros(P, dtype=F64)
    for k in range(P):
        e = torch.zeros(P, dtype=F64)
        e[k] = h
        if scheme == "forward":
            expected[k] = (phi_of(cosine_query_at, w + e, X, V) - phi_of(cosine_query_at, w, X, V)) / h
        else:
            expected[k] = (phi_of(cosine_query_at, w + e, X, V) - phi_of(cosine_query_at, w - e, X, V)) / (2 * h)
    torch.testing.assert_close(g, expected, rtol=1e-9, atol=1e-11)


def test_zo_gradient_draws_its_directions_from_the_generator():
    """Without ``U`` the directions are ``directions(M, p, kind, generator)``: same estimate."""
    w, X, V = problem(4)
    for kind in ("gaussian", "rademacher"):
        a = zo_gradient(cosine_query_at, w, X, V, samples=5, mu=1e-4, kind=kind, generator=gen(9))
        U = directions(5, P, kind, generator=gen(9), dtype=F64)
        b = zo_gradient(cosine_query_at, w, X, V, samples=5, mu=1e-4, U=U)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_zo_gradient_error_follows_the_variance_law():
    """Gaussian directions, linear device: ``g - g* = (1/M) sum_i (u_i u_i^T - I) g*`` and
    ``E||u u^T a - a||^2 = (p + 1) ||a||^2``, so ``E||g - g*||^2 / ||g*||^2 = (p + 1) / M``.

    The mean of K = 400 independent relative squared errors (M = 4, p = 12: expectation 3.25) is
    compared with (p+1)/M within Z standard errors, the standard error estimated from the K values.
    A missing 1/M (or a factor 2) moves the mean far outside."""
    w, X, V = problem(5)
    g_true = (V.mT @ X).flatten()
    M, K = 4, 400
    g = gen(6)
    errs = torch.tensor([float((zo_gradient(linear_query_at, w, X, V, samples=M, mu=1e-3, generator=g) - g_true)
                               .square().sum() / g_true.square().sum()) for _ in range(K)], dtype=F64)
    se = float(errs.std()) / math.sqrt(K)
    assert abs(float(errs.mean()) - (P + 1) / M) < Z * se, (float(errs.mean()), (P + 1) / M, se)


# ------------------------------------------------------------------------------ ZO estimate of dL/dx
def test_zo_input_gradient_is_the_projection_on_its_directions_for_a_linear_device():
    """Linear device: row b of the estimate is ``(1/M) sum_i u_ib u_ib^T A^T v_b`` exactly, with
    the ``M n`` directions the function draws from its generator (sample-major: row ``i n + b``)."""
    g = gen(7)
    A = torch.randn(D_OUT, D_IN, generator=g, dtype=F64)
    X = torch.randn(N, D_IN, generator=g, dtype=F64)
    V = torch.randn(N, D_OUT, generator=g, dtype=F64)
    M = 6
    for kind in ("gaussian", "rademacher"):
        for f0 in (None, X @ A.mT):
            est = zo_input_gradient(lambda Xq: Xq @ A.mT, X, V, samples=M, mu=1e-3, kind=kind, generator=gen(8),
                                    f0=f0)
            U = directions(M * N, D_IN, kind, generator=gen(8), dtype=F64).reshape(M, N, D_IN)
            a = V @ A  # rows A^T v_b
            expected = torch.einsum("mbi,mbj,bj->bi", U, U, a) / M
            torch.testing.assert_close(est, expected, rtol=1e-7, atol=1e-9)


def test_zo_input_gradient_is_unbiased_with_the_derived_spread():
    """Gaussian directions, linear device: ``E[g_b] = A^T v_b`` and ``E||g - G||_F^2 = (d_in + 1) / M
    ||G||_F^2`` (same law as for dL/dw, per row). By Markov's inequality the relative error exceeds
    Z times its root-mean-square with probability at most 1/Z^2 = 4 %; a flipped sign gives 2."""
    g = gen(10)
    A = torch.randn(D_OUT, D_IN, generator=g, dtype=F64)
    X, V = torch.randn(N, D_IN, generator=g, dtype=F64), torch.randn(N, D_OUT, generator=g, dtype=F64)
    M = 2000
    est = zo_input_gradient(lambda Xq: Xq @ A.mT, X, V, samples=M, mu=1e-2, generator=gen(11))
    G = V @ A
    rel = float((est - G).norm() / G.norm())
    assert rel < Z * math.sqrt((D_IN + 1) / M), rel


def test_zo_estimates_follow_the_dtype_of_their_inputs_whatever_the_device_returns():
    """A float64 device read from float32 inputs: the estimates are float32, like ``w`` and ``X``."""
    w, X, V = (t.float() for t in problem(14))
    g = zo_gradient(lambda W, Xq: linear_query_at(W.double(), Xq.double()), w, X, V, samples=3, mu=1e-2,
                    generator=gen(0))
    gx = zo_input_gradient(lambda Xq: Xq.double() @ w.double().reshape(D_OUT, D_IN).mT, X, V, samples=3, mu=1e-2,
                           generator=gen(0))
    assert g.dtype == torch.float32 and gx.dtype == torch.float32


def test_zo_input_gradient_on_a_nonlinear_device_is_the_directional_difference():
    """Nonlinear in x (``y = (A x)^2``): with ``M = 1`` and the drawn direction ``u_b`` the estimate
    is ``(<f(x_b + mu u_b) - f(x_b), v_b> / mu) u_b``, computed here by hand."""
    g = gen(12)
    A = torch.randn(D_OUT, D_IN, generator=g, dtype=F64)
    X, V = torch.randn(N, D_IN, generator=g, dtype=F64), torch.randn(N, D_OUT, generator=g, dtype=F64)

    def f(Xq):
        return (Xq @ A.mT) ** 2

    mu = 0.3  # large: the result must be the difference itself, not a derivative
    est = zo_input_gradient(f, X, V, samples=1, mu=mu, generator=gen(13))
    U = directions(N, D_IN, generator=gen(13), dtype=F64)
    expected = (((f(X + mu * U) - f(X)) * V).sum(-1, keepdim=True) / mu) * U
    torch.testing.assert_close(est, expected)


# ------------------------------------------------------------------------------ random probes
def test_gaussian_rows_have_identity_second_moment_within_the_derived_band():
    """Entries of ``(1/s) Z^T Z`` for Gaussian rows: diagonal mean 1, std sqrt(2/s); off-diagonal
    mean 0, std sqrt(1/s). Each entry must be within Z of its std (d^2 = 64 entries)."""
    s, d = 20000, 8
    Zr = random_rows(s, d, "gaussian", generator=gen(14), dtype=F64)
    M = Zr.mT @ Zr / s
    off = M - torch.diag(torch.diagonal(M))
    assert (torch.diagonal(M) - 1).abs().max() < Z * math.sqrt(2 / s)
    assert off.abs().max() < Z * math.sqrt(1 / s)
    assert 0.1 * math.sqrt(2 / s) < (torch.diagonal(M) - 1).abs().max()  # really random, not a fixed frame
    assert abs(float(Zr.mean())) < Z / math.sqrt(s * d)


def test_rademacher_rows_have_exact_unit_diagonal_and_zero_mean():
    s, d = 20000, 8
    Zr = random_rows(s, d, "rademacher", generator=gen(15), dtype=F64)
    M = Zr.mT @ Zr / s
    torch.testing.assert_close(torch.diagonal(M), torch.ones(d, dtype=F64), rtol=0, atol=1e-12)
    assert (M - torch.eye(d, dtype=F64)).abs().max() < Z * math.sqrt(1 / s)
    assert abs(float(Zr.mean())) < Z / math.sqrt(s * d)


def test_orthogonal_rows_are_haar_scaled_blocks():
    """Each block of d rows is sqrt(d) times a Haar orthogonal matrix: ``Z_b Z_b^T = d I`` and every
    entry has mean 0 and variance 1. The sign fix matters: without it the QR of a Gaussian block has
    a diagonal of one sign (mean about -0.8 here), which the mean test over B = 2000 blocks
    (standard error 1/sqrt(B)) rejects."""
    d, B = 4, 2000
    Zr = random_rows(d * B, d, "orthogonal", generator=gen(16), dtype=F64)
    blocks = Zr.reshape(B, d, d)
    torch.testing.assert_close(blocks @ blocks.mT, d * torch.eye(d, dtype=F64).expand(B, d, d))
    for i in range(d):
        for j in range(d):
            assert abs(float(blocks[:, i, j].mean())) < Z / math.sqrt(B), (i, j)
    ok = abs(float(blocks.square().mean()) - 1.0) < 1e-12  # rows of norm^2 d: mean square exactly 1
    assert ok
    part = random_rows(d + 2, d, "orthogonal", generator=gen(17), dtype=F64)
    assert part.shape == (d + 2, d)
    torch.testing.assert_close(part[d:] @ part[d:].mT, d * torch.eye(2, dtype=F64))


def test_random_rows_dtype_device_and_errors():
    Zr = random_rows(3, 5, "rademacher", generator=gen(0), dtype=torch.float32, torch_device="cpu")
    assert Zr.dtype == torch.float32 and Zr.shape == (3, 5)
    assert random_rows(3, 5).dtype == torch.get_default_dtype()
    with pytest.raises(TypeError, match="floating dtype"):
        random_rows(3, 5, dtype=torch.int64)


# ------------------------------------------------------------------------------ KSL steps
def ksl_closed_form(U0, S0, V0, dA, dAt_U1_of=None) -> torch.Tensor:
    """``Y0 + dA P_V0 - P_U1 dA P_V0 + U1 (dA^T U1)^T`` with ``U1 = orth(Y0 V0 + dA V0)``."""
    Y0 = U0 @ S0 @ V0.mT
    U1 = torch.linalg.qr(Y0 @ V0 + dA @ V0).Q
    P_U1, P_V0 = U1 @ U1.mT, V0 @ V0.mT
    dAt_U1 = dA.mT @ U1 if dAt_U1_of is None else dAt_U1_of(U1)
    return Y0 + dA @ P_V0 - P_U1 @ dA @ P_V0 + U1 @ dAt_U1.mT


@pytest.mark.parametrize("d_out,d_in,r", [(7, 5, 2), (5, 7, 3), (6, 6, 6), (6, 6, 1)])
def test_ksl_step_is_the_projector_closed_form(d_out, d_in, r):
    """A general (non-diagonal) S0 and a large increment: the step is the closed form of the module
    docstring; U1 and V1 have orthonormal columns."""
    g = gen(20)
    U0, V0 = orthonormal(d_out, r, 21), orthonormal(d_in, r, 22)
    S0 = torch.randn(r, r, generator=g, dtype=F64)
    dA = torch.randn(d_out, d_in, generator=g, dtype=F64)
    U1, S1, V1 = ksl_step(U0, S0, V0, dA)
    torch.testing.assert_close(U1 @ S1 @ V1.mT, ksl_closed_form(U0, S0, V0, dA))
    torch.testing.assert_close(U1.mT @ U1, torch.eye(r, dtype=F64))
    torch.testing.assert_close(V1.mT @ V1, torch.eye(r, dtype=F64))
    if r == min(d_out, d_in):  # full rank (one side is square orthogonal): the step adds dA exactly
        torch.testing.assert_close(U1 @ S1 @ V1.mT, U0 @ S0 @ V0.mT + dA)


def test_implicit_step_with_a_sketch_is_the_closed_form_with_the_sketched_transpose():
    """``dA^T U1`` replaced by ``(1/s) Z^T (Z dA^T) U1``: the closed form with ``P_U1 dA (Z^T Z / s)``."""
    d_out, d_in, r, s = 6, 5, 2, 3
    g = gen(23)
    U0, V0 = orthonormal(d_out, r, 24), orthonormal(d_in, r, 25)
    S0 = torch.randn(r, r, generator=g, dtype=F64)
    dA = torch.randn(d_out, d_in, generator=g, dtype=F64)
    Zs = torch.randn(s, d_in, generator=g, dtype=F64)
    out = projector_splitting_step(U0, S0, V0, dA @ V0, sketched_transpose(Zs, dA @ Zs.mT))
    expected = ksl_closed_form(U0, S0, V0, dA, lambda U1: (Zs.mT @ Zs / s) @ dA.mT @ U1)
    torch.testing.assert_close(out.matrix(), expected)


def test_steps_follow_the_dtype_of_the_factors():
    """float32 factors with float64 products (a float64 device): the result stays float32."""
    U0, V0 = orthonormal(6, 2, 41).float(), orthonormal(5, 2, 42).float()
    S0 = torch.eye(2)
    dA = torch.randn(6, 5, generator=gen(43), dtype=F64)
    Zs = torch.randn(4, 5, generator=gen(44), dtype=F64)
    out = projector_splitting_step(U0, S0, V0, dA @ V0.double(), sketched_transpose(Zs, dA @ Zs.mT))
    assert all(T.dtype == torch.float32 for T in out)
    out = projector_splitting_step(U0, S0, V0, dA @ V0.double(), lambda U1: dA.mT @ U1.double())
    assert all(T.dtype == torch.float32 for T in out)


def test_sketched_transpose_is_unbiased_with_the_derived_spread():
    """Gaussian sketch: ``E[(1/s) Z^T Z] = I`` and for fixed ``b = dA^T u``,
    ``E||(1/s) Z^T Z b - b||^2 = (d + 1) ||b||^2 / s``. Markov bound at Z times the rms, as above."""
    d_out, d_in, s = 4, 10, 5000
    g = gen(26)
    dA = torch.randn(d_out, d_in, generator=g, dtype=F64)
    u = torch.randn(d_out, 1, generator=g, dtype=F64)
    Zs = random_rows(s, d_in, generator=gen(27), dtype=F64)
    est = sketched_transpose(Zs, dA @ Zs.mT)(u)
    b = dA.mT @ u
    assert float((est - b).norm() / b.norm()) < Z * math.sqrt((d_in + 1) / s)


# ------------------------------------------------------------------------------ forward-pass upkeep
def ridge_delta(Y0: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, ridge: float) -> torch.Tensor:
    """``Delta = R^T X (X^T X + lam I)^-1``, ``R = Y - X Y0^T``, ``lam = ridge ||X||_F^2 / d_in``."""
    d_in = X.shape[1]
    lam = ridge * float(X.square().sum()) / d_in
    R = Y - X @ Y0.mT
    return R.mT @ X @ torch.linalg.inv(X.mT @ X + lam * torch.eye(d_in, dtype=X.dtype))


@pytest.mark.parametrize("B", [3, 11])  # B <= d_in (B x B solve) and B > d_in (d_in x d_in inverse)
@pytest.mark.parametrize("r", [2, 6])  # r = d_in: the step adds Delta exactly
def test_forward_upkeep_is_a_ridge_correction_and_one_projector_step(B, r):
    """The result is the KSL closed form with the increment ``Delta`` of the ridge correction,
    for both algebraic forms and a ridge large enough for ``lam`` to matter."""
    d_out, d_in, ridge = 8, 6, 0.3
    g = gen(30 + B + r)
    U0, V0 = orthonormal(d_out, r, 31), orthonormal(d_in, r, 32)
    S0 = torch.randn(r, r, generator=g, dtype=F64)
    X = torch.randn(B, d_in, generator=g, dtype=F64)
    Y = X @ torch.randn(d_out, d_in, generator=g, dtype=F64).mT
    out = forward_upkeep(U0, S0, V0, X, Y, ridge=ridge)
    Delta = ridge_delta(U0 @ S0 @ V0.mT, X, Y, ridge)
    torch.testing.assert_close(out.matrix(), ksl_closed_form(U0, S0, V0, Delta))
    if r == d_in:
        torch.testing.assert_close(out.matrix(), U0 @ S0 @ V0.mT + Delta)


def test_forward_upkeep_follows_the_factors_dtype():
    """float32 factors, float64 batch: the pairs are converted to the factors' dtype."""
    U0, V0 = orthonormal(5, 2, 37).float(), orthonormal(4, 2, 38).float()
    S0 = torch.eye(2)
    X = torch.randn(3, 4, generator=gen(39), dtype=F64)
    out = forward_upkeep(U0, S0, V0, X, X @ torch.randn(5, 4, generator=gen(40), dtype=F64).mT)
    assert all(T.dtype == torch.float32 for T in out)


def test_forward_upkeep_with_matching_outputs_changes_nothing():
    """Outputs the surrogate already predicts: zero residual, zero correction."""
    U0, V0 = orthonormal(5, 2, 33), orthonormal(4, 2, 34)
    S0 = torch.randn(2, 2, generator=gen(35), dtype=F64)
    X = torch.randn(7, 4, generator=gen(36), dtype=F64)
    Y0 = U0 @ S0 @ V0.mT
    out = forward_upkeep(U0, S0, V0, X, X @ Y0.mT)
    torch.testing.assert_close(out.matrix(), Y0)
    assert isinstance(out, LowRank)


def test_truncated_svd_reconstructs_a_hand_matrix():
    A = torch.tensor([[3.0, 0.0], [0.0, -2.0], [0.0, 0.0]], dtype=F64)
    U, S, V = truncated_svd(A, 1)
    torch.testing.assert_close(S, torch.tensor([[3.0]], dtype=F64))
    torch.testing.assert_close(U @ S @ V.mT, torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=F64))
