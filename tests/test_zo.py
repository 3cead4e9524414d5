"""Tests of hybridlab.zo: zero-order estimates of dL/dw and dL/dx from query callables.

The devices here are tiny local query functions (not hybridlab.devices):

* ``linear``: ideal matrix, A(w) = w.reshape(d_out, d_in), y = A x;
* ``cosine``: nonlinear in w, linear in x, A(w) = cos(w).reshape / sqrt(d_in) (SLM-like);
* ``intensity``: nonlinear in x, y = |A x|^2 (elementwise square).
"""

from __future__ import annotations

import math

import pytest
import torch

from hybridlab.sketch import random_rows
from hybridlab.zo import KINDS, SCHEMES, directions, matrix_shape, second_moment_excess, zo_gradient, zo_input_gradient

D_IN, D_OUT, N = 8, 8, 5  # p = 64
P = D_IN * D_OUT
F64 = torch.float64


def A_linear(W: torch.Tensor) -> torch.Tensor:
    return W.reshape(*W.shape[:-1], D_OUT, D_IN)


def A_cosine(W: torch.Tensor) -> torch.Tensor:
    return torch.cos(W).reshape(*W.shape[:-1], D_OUT, D_IN) / math.sqrt(D_IN)


def make_query_at(A_of_w):
    """query_at(W (M,p), X (n,d_in)) -> (M, n, d_out), batched over M."""

    def query_at(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return X @ A_of_w(W).transpose(-1, -2)

    return query_at


class Counting:
    """Wraps a query_at and records configurations (rows of W) and queries (rows of X)."""

    def __init__(self, query_at):
        self.query_at = query_at
        self.calls = 0
        self.configurations = 0
        self.queries = 0

    def __call__(self, W, X):
        self.calls += 1
        self.configurations += W.shape[0]
        self.queries += W.shape[0] * X.shape[0]
        return self.query_at(W, X)


def oracle_grad(A_of_w, w, X, V):
    """Autograd of <f(X; w), V>_F with respect to w."""
    w = w.detach().clone().requires_grad_(True)
    (X @ A_of_w(w).T * V).sum().backward()
    return w.grad


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def problem(seed=0, dtype=F64, w_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    w = w_scale * torch.randn(P, generator=g, dtype=dtype)
    X = torch.randn(N, D_IN, generator=g, dtype=dtype)
    V = torch.randn(N, D_OUT, generator=g, dtype=dtype)
    return w, X, V


# --------------------------------------------------------------------------- directions


def test_directions_shapes_and_moments():
    g = torch.Generator().manual_seed(1)
    U = directions(20000, 16, "gaussian", generator=g, dtype=F64)
    assert U.shape == (20000, 16) and U.dtype == F64
    cov = U.T @ U / U.shape[0]
    assert torch.allclose(cov, torch.eye(16, dtype=F64), atol=0.05)


def test_rademacher_directions_are_pm_one():
    U = directions(500, 33, "rademacher", generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    assert U.dtype == torch.float32
    assert set(U.unique().tolist()) == {-1.0, 1.0}
    assert abs(U.mean().item()) < 0.05


def test_directions_deterministic_and_validated():
    a = directions(7, 5, "gaussian", generator=torch.Generator().manual_seed(3))
    b = directions(7, 5, "gaussian", generator=torch.Generator().manual_seed(3))
    c = directions(7, 5, "gaussian", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="kind"):
        directions(3, 4, "uniform")
    with pytest.raises(ValueError, match="`M`"):
        directions(0, 4)
    with pytest.raises(ValueError, match="`p`"):
        directions(3, 0)


def test_packed_signs_are_fair_independent_coins():
    g = torch.Generator().manual_seed(5)
    Z = random_rows(4000, 70, "packed", generator=g, dtype=F64)  # 70: two words per row, the second cut
    assert Z.shape == (4000, 70) and set(Z.unique().tolist()) == {-1.0, 1.0}
    # each entry's mean has standard deviation 1/sqrt(4000) = 0.016; 5 of them over 70 columns
    assert Z.mean(0).abs().max() < 5 / math.sqrt(4000)
    assert torch.equal(Z, random_rows(4000, 70, "packed", generator=torch.Generator().manual_seed(5), dtype=F64))


def test_matrix_shape():
    assert matrix_shape(64) == (8, 8) and matrix_shape(7) == (3, 3) and matrix_shape(12) == (4, 3)
    assert matrix_shape(1) == (1, 1) and matrix_shape(65536) == (256, 256)
    assert matrix_shape(12, (2, 6)) == (2, 6)
    with pytest.raises(ValueError, match="fewer than the p = 12"):
        matrix_shape(12, (3, 3))
    with pytest.raises(ValueError, match="pair"):
        matrix_shape(12, (12,))


def _fourth_norm_moment(kind, rank, d1, d2):
    """E||u||^4 (module docstring of hybridlab.zo): the variance of the empirical second moment."""
    p = d1 * d2
    if kind == "gaussian":
        return p * (p + 2.0)
    if kind in ("rademacher", "packed"):
        return p * p
    one = d1 * (d1 + 2.0) * d2 * (d2 + 2.0)  # E||a||^4 E||b||^4
    return (one + (rank - 1) * (p * p + 2.0 * p)) / rank


DIRECTION_CASES = [("gaussian", 1, (8, 8)), ("rademacher", 1, (8, 8)), ("packed", 1, (8, 8)),
                   ("lowrank", 1, (8, 8)), ("lowrank", 3, (8, 8)), ("lowrank", 1, (4, 16))]


@pytest.mark.parametrize("kind,rank,shape", DIRECTION_CASES)
def test_identity_second_moment(kind, rank, shape):
    """E[u u^T] = I. The empirical C = U^T U / N has E||C - I||_F^2 = (E||u||^4 - p) / N exactly; as a
    sum of p^2 nearly independent squares it concentrates within a few per cent of that."""
    N = 4000
    U = directions(N, P, kind, generator=torch.Generator().manual_seed(7), dtype=F64, rank=rank, shape=shape)
    assert U.shape == (N, P)
    err = ((U.T @ U / N - torch.eye(P, dtype=F64)) ** 2).sum().item()
    expected = (_fourth_norm_moment(kind, rank, *shape) - P) / N
    assert 0.7 * expected < err < 1.3 * expected, (err, expected)


@pytest.mark.parametrize("structure", ["random", "rank-one"])
@pytest.mark.parametrize("kind,rank,shape", DIRECTION_CASES)
def test_estimate_variance_matches_the_derivation(kind, rank, shape, structure):
    """One-direction estimates g = (u^T h) u of a linear phi: E[g] = h and
    E||g - h||^2 = second_moment_excess * ||h||^2, whatever the structure of h (rank one or not)."""
    R = 20000
    gen = torch.Generator().manual_seed(11)
    if structure == "random":
        h = torch.randn(P, generator=gen, dtype=F64)
    else:
        h = torch.outer(torch.randn(shape[0], generator=gen, dtype=F64),
                        torch.randn(shape[1], generator=gen, dtype=F64)).reshape(-1)
    U = directions(R, P, kind, generator=gen, dtype=F64, rank=rank, shape=shape)
    g = (U @ h)[:, None] * U
    excess = second_moment_excess(kind, P, rank, shape)
    h2 = h.square().sum().item()
    sq = (g - h).square().sum(1)
    se = sq.std().item() / math.sqrt(R)  # standard error of the mean squared error
    assert abs(sq.mean().item() - excess * h2) < 5 * se, (sq.mean().item(), excess * h2, se)
    # the mean of R estimates: E||mean - h||^2 = excess ||h||^2 / R, a sum over p = 64 coordinates
    # (relative spread about sqrt(2/64) = 0.18): twice the expectation is more than 5 spreads away
    assert (g.mean(0) - h).square().sum().item() < 2 * excess * h2 / R


def test_lowrank_excess_over_gaussian():
    # 2 (d1 + d2 + 1) / k more than Gaussian: 1.6 % for rank one over 256 x 256
    assert second_moment_excess("lowrank", 65536) / second_moment_excess("gaussian", 65536) == pytest.approx(
        1 + 2 * 513 / 65537)
    assert second_moment_excess("lowrank", 64, rank=4) == 65 + 2 * 17 / 4
    assert second_moment_excess("packed", 64) == second_moment_excess("rademacher", 64) == 63


@pytest.mark.parametrize("shape", [(8, 8), (5, 13)], ids=["exact", "padded"])
@pytest.mark.parametrize("scheme,with_f0", [("forward", False), ("forward", True), ("central", False)])
def test_lowrank_estimate_from_factors_equals_the_dense_one(shape, scheme, with_f0):
    """The factored estimate (no M x p directions) is the dense estimate with the same directions."""
    w, X, V = problem(15)
    qa = make_query_at(A_cosine)
    f0 = qa(w[None], X)[0] if with_f0 else None
    kw = dict(samples=6, mu=1e-3, scheme=scheme, f0=f0)
    a = zo_gradient(qa, w, X, V, kind="lowrank", rank=2, shape=shape, generator=torch.Generator().manual_seed(3), **kw)
    U = directions(6, P, "lowrank", generator=torch.Generator().manual_seed(3), dtype=F64, rank=2, shape=shape)
    b = zo_gradient(qa, w, X, V, U=U, **kw)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- zo_gradient: accuracy


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_mean_over_many_directions_matches_oracle(kind, scheme):
    w, X, V = problem(0)
    qa = Counting(make_query_at(A_linear))
    g = zo_gradient(qa, w, X, V, samples=20000, mu=1e-3, kind=kind, scheme=scheme,
                    generator=torch.Generator().manual_seed(0))
    assert g.shape == (P,) and g.dtype == w.dtype
    g_true = oracle_grad(A_linear, w, X, V)
    assert cosine(g, g_true) >= 0.97
    assert (g - g_true).norm() / g_true.norm() < 0.15  # scale too: relative error ~ sqrt(p/M)
    assert qa.calls == 1  # all samples in one batched call
    assert qa.configurations == (20001 if scheme == "forward" else 40000)


def test_mean_matches_oracle_nonlinear_in_w():
    w, X, V = problem(1)
    qa = make_query_at(A_cosine)
    g = zo_gradient(qa, w, X, V, samples=20000, mu=1e-4, scheme="central",
                    generator=torch.Generator().manual_seed(1))
    assert cosine(g, oracle_grad(A_cosine, w, X, V)) >= 0.97


def test_central_has_smaller_bias_than_forward():
    """Deterministic: directions sqrt(p) e_k (E[u u^T] = I exactly), so the estimate is a
    plain finite difference per coordinate and its only error is the bias: O(mu) forward,
    O(mu^2) central. Would fail if central were implemented as forward."""
    w, X, V = problem(2, w_scale=2.0)
    qa = make_query_at(A_cosine)
    g_true = oracle_grad(A_cosine, w, X, V)
    U = math.sqrt(P) * torch.eye(P, dtype=F64)

    def err(mu, scheme):
        g = zo_gradient(qa, w, X, V, samples=P, mu=mu, scheme=scheme, U=U)
        return ((g - g_true).norm() / g_true.norm()).item()

    mu = 2e-2
    ef, ec = err(mu, "forward"), err(mu, "central")
    ef2, ec2 = err(mu / 2, "forward"), err(mu / 2, "central")
    assert ec < 0.2 * ef
    assert 1.7 < ef / ef2 < 2.3  # first order
    assert 3.4 < ec / ec2 < 4.6  # second order


def test_cosine_grows_with_samples():
    """Smoke check of the p/M variance law: cos ~ sqrt(M/(M+p))."""
    w, X, V = problem(3)
    qa = make_query_at(A_linear)
    g_true = oracle_grad(A_linear, w, X, V)

    def mean_cos(M):
        cs = [cosine(zo_gradient(qa, w, X, V, samples=M, mu=1e-3,
                                 generator=torch.Generator().manual_seed(100 + s)), g_true)
              for s in range(20)]
        return sum(cs) / len(cs)

    c1, c10, c100 = mean_cos(1), mean_cos(10), mean_cos(100)
    assert c1 < c10 < c100
    assert c1 < 0.35 and c100 > 0.6


# --------------------------------------------------------------------------- compressed batch


@pytest.mark.parametrize("A_of_w", [A_linear, A_cosine], ids=["linear", "cosine"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_compressed_matches_uncompressed(A_of_w, scheme):
    w, X, V = problem(4)
    X = torch.randn(40, D_IN, dtype=F64, generator=torch.Generator().manual_seed(5))  # n=40 > d_out
    V = torch.randn(40, D_OUT, dtype=F64, generator=torch.Generator().manual_seed(6))
    U = directions(64, P, generator=torch.Generator().manual_seed(7), dtype=F64)
    full, comp = Counting(make_query_at(A_of_w)), Counting(make_query_at(A_of_w))
    g_full = zo_gradient(full, w, X, V, samples=64, mu=1e-3, scheme=scheme, U=U)
    g_comp = zo_gradient(comp, w, X, V, samples=64, mu=1e-3, scheme=scheme, U=U, compressed=True)
    assert torch.allclose(g_full, g_comp, rtol=1e-5, atol=1e-5 * g_full.abs().max().item())
    assert comp.configurations == full.configurations
    assert comp.queries == full.queries * D_OUT // 40  # n queries per configuration -> d_out


def test_compressed_reuses_f0_through_trace_identity():
    w, X, V = problem(8)
    qa = make_query_at(A_linear)
    U = directions(16, P, generator=torch.Generator().manual_seed(9), dtype=F64)
    f0 = qa(w[None], X)[0]
    counted = Counting(qa)
    a = zo_gradient(qa, w, X, V, samples=16, mu=1e-3, U=U, compressed=True)
    b = zo_gradient(counted, w, X, V, samples=16, mu=1e-3, U=U, compressed=True, f0=f0)
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)
    assert counted.configurations == 16


def test_compressed_refused_when_not_linear_in_x():
    w, X, V = problem(0)
    with pytest.raises(ValueError, match="linear in x.*compressed=False"):
        zo_gradient(make_query_at(A_linear), w, X, V, samples=4, mu=1e-3,
                    compressed=True, linear_in_x=False)
    # uncompressed on a nonlinear-in-x device is fine
    zo_gradient(make_query_at(A_linear), w, X, V, samples=4, mu=1e-3, linear_in_x=False)


# --------------------------------------------------------------------------- f0, determinism, dtype


def test_f0_reuse_same_result_one_fewer_configuration():
    w, X, V = problem(10)
    qa = make_query_at(A_cosine)
    f0 = qa(w[None], X)[0]
    without, with_f0 = Counting(qa), Counting(qa)
    a = zo_gradient(without, w, X, V, samples=32, mu=1e-3, generator=torch.Generator().manual_seed(11))
    b = zo_gradient(with_f0, w, X, V, samples=32, mu=1e-3, generator=torch.Generator().manual_seed(11), f0=f0)
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert (without.configurations, with_f0.configurations) == (33, 32)
    assert (without.queries, with_f0.queries) == (33 * N, 32 * N)
    assert without.calls == with_f0.calls == 1


def test_deterministic_under_seed():
    w, X, V = problem(12)
    qa = make_query_at(A_linear)
    kw = dict(samples=10, mu=1e-3, kind="rademacher")
    a = zo_gradient(qa, w, X, V, generator=torch.Generator().manual_seed(5), **kw)
    b = zo_gradient(qa, w, X, V, generator=torch.Generator().manual_seed(5), **kw)
    c = zo_gradient(qa, w, X, V, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = zo_gradient(qa, w, X, V, U=directions(10, P, "rademacher", torch.Generator().manual_seed(5), F64),
                    samples=10, mu=1e-3)
    assert torch.equal(a, d)


def test_follows_float32():
    w, X, V = (t.float() for t in problem(13))
    g = zo_gradient(make_query_at(A_linear), w, X, V, samples=8, mu=1e-2,
                    generator=torch.Generator().manual_seed(0))
    assert g.dtype == torch.float32 and g.device == w.device
    gx = zo_input_gradient(lambda Z: Z @ A_linear(w).T, X, V, samples=4, mu=1e-2,
                           generator=torch.Generator().manual_seed(0))
    assert gx.dtype == torch.float32 and gx.shape == X.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_follows_device():
    w, X, V = (t.cuda() for t in problem(14))
    g = zo_gradient(make_query_at(A_linear), w, X, V, samples=4000, mu=1e-3,
                    generator=torch.Generator().manual_seed(0))
    assert g.is_cuda
    assert cosine(g.cpu(), oracle_grad(A_linear, *(t.cpu() for t in (w, X, V)))) > 0.8
    g2 = zo_gradient(make_query_at(A_linear), w, X, V, samples=4, mu=1e-3, scheme="central",
                     generator=torch.Generator(device="cuda").manual_seed(0), compressed=True)
    assert g2.is_cuda
    gx = zo_input_gradient(lambda Z: Z @ A_linear(w).T, X, V, samples=8, mu=1e-3)
    assert gx.is_cuda


# --------------------------------------------------------------------------- validation


def test_bad_arguments_name_the_argument():
    w, X, V = problem(0)
    qa = make_query_at(A_linear)
    ok = dict(samples=4, mu=1e-3)
    for samples in (0, -3):
        with pytest.raises(ValueError, match="`samples`"):
            zo_gradient(qa, w, X, V, samples=samples, mu=1e-3)
    for samples in (2.5, 10.0, True):  # counts are integers everywhere in the package
        with pytest.raises(TypeError, match="`samples`"):
            zo_gradient(qa, w, X, V, samples=samples, mu=1e-3)
    for mu in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`mu`"):
            zo_gradient(qa, w, X, V, samples=4, mu=mu)
    with pytest.raises(ValueError, match="`w`.*\\(p,\\)"):
        zo_gradient(qa, w.reshape(D_OUT, D_IN), X, V, **ok)
    with pytest.raises(ValueError, match="`X`.*\\(n, d_in\\)"):
        zo_gradient(qa, w, X[0], V, **ok)
    with pytest.raises(ValueError, match="`V`.*\\(5, d_out\\)"):
        zo_gradient(qa, w, X, V[:3], **ok)
    with pytest.raises(ValueError, match="`f0`.*\\(5, 8\\)"):
        zo_gradient(qa, w, X, V, f0=torch.zeros(5, 7, dtype=F64), **ok)
    with pytest.raises(ValueError, match="`U`.*\\(4, 64\\)"):
        zo_gradient(qa, w, X, V, U=torch.zeros(3, P, dtype=F64), **ok)
    with pytest.raises(ValueError, match="'gaussian', 'rademacher'"):
        zo_gradient(qa, w, X, V, kind="sobol", **ok)
    with pytest.raises(ValueError, match="'forward', 'central'"):
        zo_gradient(qa, w, X, V, scheme="backward", **ok)
    with pytest.raises(ValueError, match="query_at returned shape"):
        zo_gradient(qa, w, X, V[:, :4], **ok)  # device d_out=8, V says 4


def test_non_finite_device_output_raises():
    w, X, V = problem(0)

    def broken(W, Z):
        Y = make_query_at(A_linear)(W, Z)
        Y[-1, 0, 0] = float("nan")
        return Y

    with pytest.raises(ValueError, match="NaN/Inf"):
        zo_gradient(broken, w, X, V, samples=4, mu=1e-3)
    with pytest.raises(ValueError, match="NaN/Inf"):
        zo_gradient(make_query_at(A_linear), w, X, V, samples=4, mu=1e-3,
                    f0=torch.full((N, D_OUT), float("inf"), dtype=F64))
    with pytest.raises(ValueError, match="NaN/Inf"):
        zo_input_gradient(lambda Z: Z @ A_linear(w).T / 0.0 * 0.0, X, V, samples=2, mu=1e-3)


# --------------------------------------------------------------------------- zo_input_gradient


def test_input_gradient_matches_At_v_linear_device():
    w, X, V = problem(20)
    A = A_cosine(w)
    calls = []

    def query(Z):
        calls.append(Z.shape[0])
        return Z @ A.T

    g = zo_input_gradient(query, X, V, samples=5000, mu=1e-3, generator=torch.Generator().manual_seed(0))
    target = V @ A  # rows A^T v_b
    assert g.shape == X.shape
    assert cosine(g, target) >= 0.95
    assert (g - target).norm() / target.norm() < 0.2
    rows = torch.nn.functional.cosine_similarity(g, target, dim=1)
    assert rows.min().item() >= 0.9
    assert calls == [(5000 + 1) * N]  # one call, X included, no reconfiguration


def test_input_gradient_nonlinear_in_x_and_f0():
    """|A x|^2 detection: the estimate targets J(x)^T v = 2 A^T (A x * v)."""
    w, X, V = problem(21)
    A = A_cosine(w)
    calls = []

    def query(Z):
        calls.append(Z.shape[0])
        return (Z @ A.T) ** 2

    kw = dict(samples=5000, mu=1e-4, kind="rademacher")
    g = zo_input_gradient(query, X, V, generator=torch.Generator().manual_seed(1), **kw)
    target = 2 * ((X @ A.T) * V) @ A
    assert cosine(g, target) >= 0.95
    f0 = (X @ A.T) ** 2
    g2 = zo_input_gradient(query, X, V, generator=torch.Generator().manual_seed(1), f0=f0, **kw)
    assert torch.allclose(g, g2, rtol=1e-8, atol=1e-10)
    assert calls == [5001 * N, 5000 * N]


def test_input_gradient_validation():
    w, X, V = problem(0)
    def query(Z):
        return Z @ A_linear(w).T
    with pytest.raises(ValueError, match="`samples`"):
        zo_input_gradient(query, X, V, samples=0, mu=1e-3)
    with pytest.raises(ValueError, match="`mu`"):
        zo_input_gradient(query, X, V, samples=2, mu=-1.0)
    with pytest.raises(ValueError, match="`V`"):
        zo_input_gradient(query, X, V[:2], samples=2, mu=1e-3)
    with pytest.raises(ValueError, match="`f0`"):
        zo_input_gradient(query, X, V, samples=2, mu=1e-3, f0=torch.zeros(N, 3, dtype=F64))
    with pytest.raises(ValueError, match="kind"):
        zo_input_gradient(query, X, V, samples=2, mu=1e-3, kind="cauchy")
    with pytest.raises(ValueError, match="query returned shape"):
        zo_input_gradient(lambda Z: (Z @ A_linear(w).T)[:-1], X, V, samples=2, mu=1e-3)
