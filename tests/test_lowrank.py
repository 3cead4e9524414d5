"""Tests of hybridlab.lowrank: truncated SVD, Eckart-Young, fitting from queries."""

import pytest
import torch

from hybridlab.lowrank import (
    LowRank,
    eckart_young_error,
    fit_identity,
    fit_randomized,
    truncated_svd,
)

F64 = torch.float64


def rank_r_matrix(d_out, d_in, r, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d_out, r, generator=g, dtype=dtype) @ torch.randn(r, d_in, generator=g, dtype=dtype)


def query_of(A):
    """Forward-only black box of A: rows y = A x; counts the rows it was given."""

    def query(X):
        query.count += X.shape[0]
        return X.to(A) @ A.mT

    query.count = 0
    return query


def test_truncated_svd_shapes_orthonormal_and_reconstructs():
    A = rank_r_matrix(30, 20, 6)
    lr = truncated_svd(A, 6)
    assert isinstance(lr, LowRank) and lr.rank == 6
    U, S, V = lr
    assert U.shape == (30, 6) and S.shape == (6, 6) and V.shape == (20, 6)
    assert torch.allclose(U.mT @ U, torch.eye(6, dtype=F64), atol=1e-12)
    assert torch.allclose(V.mT @ V, torch.eye(6, dtype=F64), atol=1e-12)
    assert torch.equal(S, torch.diag(torch.diagonal(S)))
    assert torch.all(torch.diagonal(S)[:-1] >= torch.diagonal(S)[1:])
    assert torch.allclose(lr.matrix(), A, atol=1e-10)
    # full rank with r = min(d): exact too
    B = torch.randn(7, 5, dtype=F64)
    assert torch.allclose(truncated_svd(B, 5).matrix(), B, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_truncated_svd_keeps_dtype(dtype):
    A = torch.randn(8, 6, dtype=dtype)
    U, S, V = truncated_svd(A, 3)
    assert U.dtype == S.dtype == V.dtype == dtype and U.device == A.device


@pytest.mark.parametrize("r", [1, 3, 10])
def test_eckart_young_error_matches_truncation(r):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(15, 10, generator=g, dtype=F64)
    best = torch.linalg.matrix_norm(A - truncated_svd(A, r).matrix())
    assert eckart_young_error(A, r) == pytest.approx(float(best), rel=1e-10, abs=1e-12)
    # no other rank-r matrix does better (a random one, and a perturbed optimum)
    U, S, V = truncated_svd(A, r)
    other = (U + 1e-3 * torch.randn_like(U)) @ S @ V.mT
    assert float(torch.linalg.matrix_norm(A - other)) >= eckart_young_error(A, r)


def test_fit_identity_exact_for_rank_r_and_counts_queries():
    A = rank_r_matrix(24, 16, 4)
    q = query_of(A)
    U, S, V = fit_identity(q, 16, 4, dtype=F64)
    assert q.count == 16
    assert torch.allclose(U @ S @ V.mT, A, atol=1e-10)
    # a full-rank matrix: the Eckart-Young optimum
    B = torch.randn(24, 16, dtype=F64)
    lr = fit_identity(query_of(B), 16, 4, dtype=F64)
    assert float(torch.linalg.matrix_norm(B - lr.matrix())) == pytest.approx(eckart_young_error(B, 4), rel=1e-10)


def test_fit_randomized_column_space_exact_for_rank_r():
    """With k = r range-finder queries, span(U) = range(A) exactly, whatever the sketch error."""
    A = rank_r_matrix(40, 32, 5)
    g = torch.Generator().manual_seed(3)
    U, S, V = fit_randomized(query_of(A), 32, 5, oversample=0, sketch=16, generator=g, dtype=F64)
    assert U.shape == (40, 5) and S.shape == (5, 5) and V.shape == (32, 5)
    assert torch.allclose(U.mT @ U, torch.eye(5, dtype=F64), atol=1e-12)
    assert torch.allclose(V.mT @ V, torch.eye(5, dtype=F64), atol=1e-12)
    col_err = torch.linalg.matrix_norm(A - U @ (U.mT @ A)) / torch.linalg.matrix_norm(A)
    assert col_err < 1e-12


def test_fit_randomized_exact_with_orthogonal_sketch_of_size_d_in():
    A = rank_r_matrix(40, 32, 5)
    q = query_of(A)
    g = torch.Generator().manual_seed(4)
    lr = fit_randomized(q, 32, 5, oversample=10, sketch=32, kind="orthogonal", generator=g, dtype=F64)
    assert q.count == 15 + 32
    assert torch.allclose(lr.matrix(), A, atol=1e-10)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_fit_randomized_error_shrinks_with_sketch_size(kind):
    A = rank_r_matrix(40, 32, 5)
    norm = float(torch.linalg.matrix_norm(A))

    def mean_error(s):
        errs = []
        for seed in range(8):
            g = torch.Generator().manual_seed(seed)
            lr = fit_randomized(query_of(A), 32, 5, sketch=s, kind=kind, generator=g, dtype=F64)
            errs.append(float(torch.linalg.matrix_norm(A - lr.matrix())) / norm)
        return sum(errs) / len(errs)

    e_small, e_mid, e_large = mean_error(16), mean_error(256), mean_error(4096)
    assert e_small > e_mid > e_large
    assert e_large < 0.15  # ~ sqrt(d_in / s) = 0.09


@pytest.mark.parametrize("kind", ["rademacher", "orthogonal"])
def test_fit_randomized_probes_are_of_the_requested_kind(kind):
    """Both the range-finder inputs and the sketch rows are drawn with ``kind``."""
    A = torch.randn(9, 8, dtype=F64)
    seen = []

    def query(X):
        seen.append(X.clone())
        return X @ A.mT

    fit_randomized(query, 8, 2, oversample=2, sketch=8, kind=kind, generator=torch.Generator().manual_seed(0),
                   dtype=F64)
    Omega, Z = seen
    assert Omega.shape == (4, 8) and Z.shape == (8, 8)
    for P in (Omega, Z):
        if kind == "rademacher":
            assert set(P.unique().tolist()) == {-1.0, 1.0}
        else:
            torch.testing.assert_close(P @ P.mT, 8.0 * torch.eye(P.shape[0], dtype=F64))


def test_fit_randomized_deterministic_under_seed():
    A = torch.randn(20, 12, dtype=F64)
    a = fit_randomized(query_of(A), 12, 3, generator=torch.Generator().manual_seed(7), dtype=F64)
    b = fit_randomized(query_of(A), 12, 3, generator=torch.Generator().manual_seed(7), dtype=F64)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("r", [0, -1, 9])
def test_bad_rank_raises(r):
    A = torch.randn(10, 8)
    for call in (
        lambda: truncated_svd(A, r),
        lambda: eckart_young_error(A, r),
        lambda: fit_identity(query_of(A), 8, r),
        lambda: fit_randomized(query_of(A), 8, r),
    ):
        with pytest.raises(ValueError, match=r"rank r=.*1 <= r <= min\(d_out, d_in\)"):
            call()


def test_rank_above_d_out_raises_after_first_query():
    A = torch.randn(4, 10)  # d_out = 4 < d_in
    with pytest.raises(ValueError, match=r"rank r=6.*= 4"):
        fit_identity(query_of(A), 10, 6)
    with pytest.raises(ValueError, match=r"rank r=6.*= 4"):
        fit_randomized(query_of(A), 10, 6)


def test_non_integer_rank_and_bad_shapes_raise():
    A = torch.randn(10, 8)
    with pytest.raises(TypeError, match="rank r"):
        truncated_svd(A, 2.5)
    with pytest.raises(ValueError, match="2-D"):
        truncated_svd(torch.randn(3, 4, 5), 2)
    with pytest.raises(ValueError, match="query returned"):
        fit_identity(lambda X: X[:2], 8, 2)  # wrong number of rows
    with pytest.raises(ValueError, match="d_in"):
        fit_identity(query_of(A), 0, 2)
    with pytest.raises(ValueError, match="sketch"):
        fit_randomized(query_of(A), 8, 2, sketch=0)
    with pytest.raises(ValueError, match="oversample.*range-finder"):
        fit_randomized(query_of(A), 8, 2, oversample=-1)
    with pytest.raises(ValueError, match="unknown kind"):
        fit_randomized(query_of(A), 8, 2, kind="sobol")
