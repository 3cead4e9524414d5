"""Every device non-ideality pinned to an independent value.

Each test compares the simulator with a closed form, a case computed by hand, or a statistic whose
tolerance follows from its variance (the derivation is in the docstring). The point is that a wrong
formula (a missing factor, a swapped index, a wrong power of a step count) fails here, where a test
that only asks "does the option change the output?" would pass.

Statistical tolerances: for ``n`` i.i.d. ``N(0, sigma^2)`` numbers the sample variance ``s^2``
satisfies ``(n - 1) s^2 / sigma^2 ~ chi^2_{n-1}``, so ``s^2 / sigma^2`` has mean 1 and standard
deviation ``sqrt(2 / (n - 1))``; the tests accept ``|s^2 / sigma^2 - 1| < Z sqrt(2 / (n - 1))``
with ``Z = 5`` (a false alarm has probability below 1e-6 by the normal approximation, and the
seeds are fixed, so the outcome is deterministic). A sample mean of ``n`` such numbers has
standard deviation ``sigma / sqrt(n)``.
"""

from __future__ import annotations

import math

import pytest
import torch

from hybridlab.devices import MRR, MZIMesh, make_device, mzi_coefficients
from hybridlab.devices.base import neighbour_mean, neighbour_sum, quantise_periodic, quantise_unit

F64 = torch.float64
Z = 5.0  # width of the acceptance band in standard deviations


def variance_ratio_ok(samples: torch.Tensor, sigma: float) -> tuple[bool, float, float]:
    """Whether the sample variance of zero-mean ``samples`` matches ``sigma^2`` (chi-square band)."""
    n = samples.numel()
    ratio = float(samples.double().square().mean()) / sigma**2  # known mean 0: n degrees of freedom
    band = Z * math.sqrt(2.0 / n)
    return abs(ratio - 1.0) < band, ratio, band


def mean_ok(samples: torch.Tensor, sigma: float) -> bool:
    """Whether the sample mean of ``samples`` (std ``sigma`` each) is within Z standard errors of 0."""
    return abs(float(samples.double().mean())) < Z * sigma / math.sqrt(samples.numel())


# ------------------------------------------------------------------------------------ read-out noise
@pytest.mark.parametrize("name", ["ideal", "slm", "mrr", "mzi"])
def test_readout_noise_std_is_its_setting_relative_to_each_query_rms(name):
    """``y = A x + noise * rms(A x) * N(0, 1)``, rms over each query's d_out outputs.

    The normalised errors ``e / (noise * rms(A x))`` are i.i.d. N(0, 1): their mean square over
    n = 500 x 8 = 4000 numbers is within 5 sqrt(2/n) = 11 % of 1 (a doubled noise gives 4, a noise
    scaled by the batch rms instead of each row's fails on the rows scaled by 100 below)."""
    noise = 0.05
    dev = make_device(name, 6, 8, noise=noise, seed=3, dtype=F64)
    dev.configure(dev.init_params())
    g = torch.Generator().manual_seed(0)
    X = torch.randn(500, 6, generator=g, dtype=F64)
    X[250:] *= 100.0  # rows of very different size: the noise follows each row's own rms
    clean = X @ dev.true_matrix().mT
    rms = clean.square().mean(-1, keepdim=True).sqrt()
    for Y in (dev.query(X), dev.query_batch(dev.w[None], X)[0]):
        e = (Y - clean) / (noise * rms)
        for part in (e[:250], e[250:]):
            ok, ratio, band = variance_ratio_ok(part, 1.0)
            assert ok, f"{name}: normalised noise variance {ratio:.3f}, expected 1 +- {band:.3f}"
            assert mean_ok(part, 1.0)


def test_readout_noise_is_fresh_and_independent_between_queries():
    """Two reads of the same input: the difference of the two errors has variance 2 noise^2 rms^2
    (independent draws); a repeated draw would give 0, a shared one 0 as well."""
    dev = make_device("ideal", 5, 6, noise=0.1, seed=1, dtype=F64)
    dev.configure(dev.init_params())
    X = torch.randn(400, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    clean = X @ dev.true_matrix().mT
    rms = clean.square().mean(-1, keepdim=True).sqrt()
    d = (dev.query(X) - dev.query(X)) / (0.1 * rms)
    ok, ratio, band = variance_ratio_ok(d, math.sqrt(2.0))
    assert ok, f"variance of the difference {ratio:.3f} x 2, expected 1 +- {band:.3f}"


def test_simulate_adds_the_same_readout_noise_with_a_detached_scale():
    """The oracle path adds noise of the same size; its gradient is that of ``X A^T`` (scale detached)."""
    dev = make_device("slm", 4, 6, noise=0.05, seed=2, dtype=F64)
    w = dev.init_params().requires_grad_()
    X = torch.randn(600, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    Y = dev.simulate(X, w)
    A = dev.transfer_matrix(w).detach()
    clean = X @ A.mT
    e = (Y.detach() - clean) / (0.05 * clean.square().mean(-1, keepdim=True).sqrt())
    assert variance_ratio_ok(e, 1.0)[0]
    v = torch.randn_like(clean)
    (gw,) = torch.autograd.grad((Y * v).sum(), w)
    w2 = w.detach().clone().requires_grad_()
    (gw_clean,) = torch.autograd.grad(((X @ dev.transfer_matrix(w2).mT) * v).sum(), w2)
    torch.testing.assert_close(gw, gw_clean)


# ------------------------------------------------------------------------------------ quantisation
def test_periodic_quantisation_levels_by_hand():
    """3 bits: levels k * 2 pi / 8; each phase goes to the nearest level, the error is at most pi/8."""
    phi = torch.tensor([0.0, 0.1, math.pi / 8 - 1e-9, math.pi / 8 + 1e-9, math.pi / 2 + 0.2, 7.0, -0.5], dtype=F64)
    step = 2 * math.pi / 8
    expected = torch.tensor([0.0, 0.0, 0.0, step, 2 * step, 9 * step, -1 * step], dtype=F64)
    torch.testing.assert_close(quantise_periodic(phi, 3), expected)
    dense = torch.linspace(-7.0, 13.0, 20001, dtype=F64)
    q = quantise_periodic(dense, 3)
    assert (q - dense).abs().max() <= step / 2 + 1e-12
    k = q / step
    torch.testing.assert_close(k, k.round())  # every output is a level
    assert torch.equal(quantise_periodic(dense, 1) / math.pi, (dense / math.pi).round())


def test_quantised_values_are_exact_levels_and_carry_no_gradient_bookkeeping_when_none_is_needed():
    """Without a gradient to carry, the quantised value is the level itself, bit for bit (the
    straight-through form ``x + (q - x)`` can be one rounding away); with one, the gradient is 1."""
    phi = torch.linspace(-3.0, 9.0, 5001, dtype=torch.float32)
    step = 2 * math.pi / 2**5
    assert torch.equal(quantise_periodic(phi, 5), torch.round(phi / step) * step)
    w = torch.linspace(-1.0, 1.0, 5001, dtype=torch.float32)
    assert torch.equal(quantise_unit(w, 5), torch.round((w + 1.0) * (31 / 2.0)) * (2.0 / 31) - 1.0)
    x = phi.clone().requires_grad_()
    quantise_periodic(x, 5).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(phi))
    with torch.no_grad():
        assert torch.equal(quantise_periodic(x, 5), torch.round(phi / step) * step)


def test_unit_quantisation_levels_by_hand():
    """2 bits on [-1, 1]: four levels -1, -1/3, 1/3, 1; values outside are clipped first."""
    w = torch.tensor([-5.0, -0.7, -0.6, -0.1, 0.1, 0.6, 0.7, 2.0], dtype=F64)
    third = 1.0 / 3.0
    expected = torch.tensor([-1.0, -1.0, -third, -third, third, third, 1.0, 1.0], dtype=F64)
    torch.testing.assert_close(quantise_unit(w, 2), expected)
    dense = torch.linspace(-1.0, 1.0, 4001, dtype=F64)
    for bits in (1, 3, 5):
        q = quantise_unit(dense, bits)
        levels = 2**bits
        assert q.unique().numel() == levels
        assert (q - dense).abs().max() <= 1.0 / (levels - 1) + 1e-12
    assert quantise_unit(dense, None) is dense


@pytest.mark.parametrize("name", ["slm", "mrr", "mzi"])
def test_device_quantises_the_written_phases(name):
    """With ``bits`` the matrix is the continuous matrix at the quantised phases (no other change)."""
    quantised = make_device(name, 4, 3, bits=3, dtype=F64)
    exact = make_device(name, 4, 3, dtype=F64)
    w = quantised.init_params() + 0.05
    q = torch.round(w / (2 * math.pi / 8)) * (2 * math.pi / 8)
    torch.testing.assert_close(quantised.transfer_matrix(w), exact.transfer_matrix(q))
    assert not torch.allclose(exact.transfer_matrix(w), exact.transfer_matrix(q))


def test_ideal_device_quantises_entries_to_unit_levels():
    dev = make_device("ideal", 3, 2, bits=2, dtype=F64)
    w = torch.tensor([-2.0, -0.5, -0.1, 0.2, 0.5, 0.9], dtype=F64)
    third = 1.0 / 3.0
    torch.testing.assert_close(dev.transfer_matrix(w),
                               torch.tensor([[-1.0, -third, -third], [third, third, 1.0]], dtype=F64))


# ------------------------------------------------------------------------------------ SLM
def test_slm_crosstalk_by_hand_on_a_2x3_grid():
    """``phi <- (1 - c) phi + c * mean of the (2 or 3) grid neighbours``, then ``cos(phi) / sqrt(d_in)``."""
    c = 0.3
    dev = make_device("slm", 3, 2, crosstalk=c, dtype=F64)
    phi = torch.tensor([[0.1, 0.5, 1.3], [2.0, 0.7, 0.2]], dtype=F64)
    # neighbours of (0,0): (0,1),(1,0); (0,1): (0,0),(0,2),(1,1); (0,2): (0,1),(1,2); and symmetric
    nb = torch.tensor([[(0.5 + 2.0) / 2, (0.1 + 1.3 + 0.7) / 3, (0.5 + 0.2) / 2],
                       [(0.1 + 0.7) / 2, (2.0 + 0.2 + 0.5) / 3, (0.7 + 1.3) / 2]], dtype=F64)
    expected = torch.cos((1 - c) * phi + c * nb) / math.sqrt(3)
    torch.testing.assert_close(dev.transfer_matrix(phi.flatten()), expected)


def test_slm_crosstalk_leaves_a_uniform_phase_grid_unchanged():
    """A uniform grid equals its neighbours' mean: ``(1 - c) phi + c phi = phi`` for every c."""
    for c in (0.2, 0.7, 1.0):
        dev = make_device("slm", 5, 4, crosstalk=c, dtype=F64)
        w = torch.full((dev.p,), 0.9, dtype=F64)
        torch.testing.assert_close(dev.transfer_matrix(w), torch.full((4, 5), math.cos(0.9) / math.sqrt(5), dtype=F64))


def test_slm_fabrication_offset_is_a_fixed_gaussian_phase_per_pixel():
    """``A = cos(phi + delta) / sqrt(d_in)`` with ``delta ~ N(0, fab_error^2)`` per pixel, fixed:
    the offsets recovered from the matrix have variance fab_error^2 (chi-square band, n = 1024)."""
    fab = 0.2
    dev = make_device("slm", 32, 32, fab_error=fab, seed=4, dtype=F64)
    w = torch.full((dev.p,), math.pi / 2, dtype=F64)  # cos(pi/2 + d) = -sin d: invertible for small d
    delta = torch.asin(-dev.transfer_matrix(w) * math.sqrt(32))
    torch.testing.assert_close(delta.flatten(), dev.phase_offset)
    assert variance_ratio_ok(delta, fab)[0] and mean_ok(delta, fab)
    again = make_device("slm", 32, 32, fab_error=fab, seed=4, dtype=F64)
    torch.testing.assert_close(again.transfer_matrix(w), dev.transfer_matrix(w))  # fixed at fabrication


# ------------------------------------------------------------------------------------ MRR
def test_ring_transmission_closed_form_values():
    """``T(0) = (a - r)^2 / (1 - a r)^2`` (on resonance), ``T(pi) = (a + r)^2 / (1 + a r)^2``, and a
    passive ring never transmits more than it receives, ``0 <= T <= 1``."""
    for a, r in ((0.8, 0.9), (0.925, 0.93), (0.9, 0.9)):
        dev = MRR(2, 2, a=a, r=r, dtype=F64)
        T = dev.transmission(torch.tensor([0.0, math.pi], dtype=F64))
        torch.testing.assert_close(T, torch.tensor([(a - r) ** 2 / (1 - a * r) ** 2,
                                                    (a + r) ** 2 / (1 + a * r) ** 2], dtype=F64))
        phi = torch.linspace(-10, 10, 2001, dtype=F64)
        T = dev.transmission(phi)
        assert T.min() >= 0 and T.max() <= 1
        torch.testing.assert_close(dev.transfer_matrix(phi[:4]), (2 * dev.transmission(phi[:4]) - 1).view(2, 2))
        lo, hi = dev.weight_range()
        assert lo == pytest.approx(2 * (a - r) ** 2 / (1 - a * r) ** 2 - 1)
        assert hi == pytest.approx(2 * (a + r) ** 2 / (1 + a * r) ** 2 - 1)
    # critical coupling a = r: full extinction on resonance, weight -1
    assert float(MRR(1, 1, a=0.9, r=0.9, dtype=F64).transfer_matrix(torch.zeros(1, dtype=F64))) == pytest.approx(-1.0)


@pytest.mark.parametrize("grad", [False, True])
def test_ring_weight_stays_in_unit_range_at_critical_coupling(grad):
    """At critical coupling (a = r) the weight on resonance is -1 exactly in exact arithmetic; in
    float32 ``1 + k / den`` rounds to -1 - 2.4e-7 for these rings: the clamp keeps it in [-1, 1]
    in the differentiable path too."""
    for a in (0.7312764966487885, 0.8382922637462616):
        dev = MRR(1, 1, a=a, r=a, dtype=torch.float32)
        w = torch.zeros(1, requires_grad=grad)
        assert float(dev.transfer_matrix(w).detach()) >= -1.0


def test_ring_weight_inverse():
    dev = MRR(3, 3, dtype=F64)
    lo, hi = dev.weight_range()
    weights = torch.linspace(lo + 1e-6, hi - 1e-6, 9, dtype=F64)
    phi = dev.phase_for_weight(weights)
    assert phi.min() >= 0 and phi.max() <= math.pi
    torch.testing.assert_close(dev.transfer_matrix(phi), weights.view(3, 3))


def test_ring_weights_outside_the_range_map_to_the_nearest_end():
    """Below the smallest weight the ring sits on resonance (phase 0); between the largest weight
    and 1 (a transmission the ring cannot reach) at pi."""
    dev = MRR(1, 2, dtype=F64)
    lo, hi = dev.weight_range()
    phi = dev.phase_for_weight(torch.tensor([lo - 0.05, (hi + 1) / 2], dtype=F64))
    torch.testing.assert_close(phi, torch.tensor([0.0, math.pi], dtype=F64))


def test_mrr_init_weights_are_uniform_in_the_symmetric_range():
    """Initial weights are U(-s, s) with s = min(-lo, hi) / 2: mean 0 (std s/sqrt(3n)), variance s^2/3."""
    dev = make_device("mrr", 40, 40, seed=5, dtype=F64)
    lo, hi = dev.weight_range()
    s = 0.5 * min(-lo, hi)
    A = dev.transfer_matrix(dev.init_params())
    n = A.numel()
    assert A.abs().max() <= s + 1e-9
    assert abs(float(A.mean())) < Z * s / math.sqrt(3 * n)
    # variance of U(-s, s) is s^2/3; of its square's mean: (s^4/5 - s^4/9) / n
    assert abs(float(A.square().mean()) - s**2 / 3) < Z * math.sqrt((1 / 5 - 1 / 9) / n) * s**2


def test_mrr_thermal_crosstalk_impulse_response_is_the_kernel():
    """One heated ring (phase phi0) among cold ones: with kernel [[0,c,0],[c,1,c],[0,c,0]] its four
    neighbours see phase c phi0, the ring itself phi0, every other ring 0."""
    c, phi0 = 0.2, 1.1
    dev = make_device("mrr", 5, 4, crosstalk=c, dtype=F64)
    w = torch.zeros(4, 5, dtype=F64)
    w[1, 2] = phi0
    expected_phase = torch.zeros(4, 5, dtype=F64)
    expected_phase[1, 2] = phi0
    for i, j in ((0, 2), (2, 2), (1, 1), (1, 3)):
        expected_phase[i, j] = c * phi0
    expected = 2 * dev.transmission(expected_phase) - 1
    torch.testing.assert_close(dev.transfer_matrix(w.flatten()), expected)
    # linear superposition of the phases: two heated rings add their spills
    w[2, 3] = 0.4
    expected_phase[2, 3] = 0.4
    expected_phase[1, 3] += c * 0.4
    expected_phase[2, 2] += c * 0.4
    expected_phase[3, 3] += c * 0.4
    expected_phase[2, 4] += c * 0.4
    torch.testing.assert_close(dev.transfer_matrix(w.flatten()), 2 * dev.transmission(expected_phase) - 1)


def test_mrr_heater_spread_is_a_fixed_gaussian_gain_per_ring():
    """``phi = w (1 + gamma_i)`` with ``gamma_i ~ N(0, fab_error^2)``: recovered from the matrix,
    the gains have mean 1 and variance fab_error^2 (chi-square band over n = 900 rings)."""
    fab = 0.1
    dev = make_device("mrr", 30, 30, fab_error=fab, seed=6, dtype=F64)
    w = torch.linspace(0.8, 1.6, dev.p, dtype=F64)  # w (1 + gamma) stays inside (0, pi): invertible
    phi = dev.phase_for_weight(dev.transfer_matrix(w).flatten())
    gamma = phi / w - 1
    torch.testing.assert_close(gamma + 1, dev.gamma, atol=1e-7, rtol=0)
    assert variance_ratio_ok(gamma, fab)[0] and mean_ok(gamma, fab)


# ------------------------------------------------------------------------------------ MZI
def _bs(b: float) -> torch.Tensor:
    c, s = math.cos(b), math.sin(b)
    return torch.tensor([[c, 1j * s], [1j * s, c]], dtype=torch.complex128)


def _ph(x: float) -> torch.Tensor:
    return torch.tensor([[complex(math.cos(x), math.sin(x)), 0], [0, 1]], dtype=torch.complex128)


def _mzi(theta: float, phi: float, e1: float, e2: float, loss: float = 1.0) -> torch.Tensor:
    """BS(pi/4 + e2) P(theta) BS(pi/4 + e1) P(phi): light meets BS1 (error e1) first."""
    return loss * _bs(math.pi / 4 + e2) @ _ph(theta) @ _bs(math.pi / 4 + e1) @ _ph(phi)


def _clements(dev: MZIMesh, w: torch.Tensor) -> torch.Tensor:
    """The mesh written out with full N x N matrices, column by column (an independent construction)."""
    N = dev.N
    theta, phi, alpha = (t.tolist() for t in dev.split_phases(w))
    eps = dev.eps.tolist() if dev.eps is not None else [[0.0] * dev.n_mzi, [0.0] * dev.n_mzi]
    loss = 10 ** (-dev.loss_db / 20)
    U = torch.eye(N, dtype=torch.complex128)
    k = 0
    for col in range(N):
        for top in range(col % 2, N - 1, 2):
            T = torch.eye(N, dtype=torch.complex128)
            T[top:top + 2, top:top + 2] = _mzi(theta[k], phi[k], eps[0][k], eps[1][k], loss)
            U = T @ U
            k += 1
    assert k == dev.n_mzi == N * (N - 1) // 2
    out = torch.diag(torch.tensor([complex(math.cos(a), math.sin(a)) for a in alpha], dtype=torch.complex128))
    return out @ U


def test_single_mzi_by_hand_with_both_beam_splitter_errors():
    """N = 2: one MZI and two output phases. ``eps[0]`` belongs to the first beam splitter the light
    meets (BS1), ``eps[1]`` to the second: swapping them changes the matrix (checked below)."""
    dev = MZIMesh(2, 2, fab_error=0.15, seed=2, dtype=F64)
    e1, e2 = float(dev.eps[0, 0]), float(dev.eps[1, 0])
    assert abs(e1 - e2) > 0.05  # the swap is visible
    theta, phi, a0, a1 = 0.7, 2.1, 0.3, -1.2
    w = torch.tensor([theta, phi, a0, a1], dtype=F64)
    out = torch.diag(torch.tensor([complex(math.cos(a0), math.sin(a0)), complex(math.cos(a1), math.sin(a1))],
                                    dtype=torch.complex128))
    expected = out @ _mzi(theta, phi, e1, e2)
    torch.testing.assert_close(dev.unitary(w), expected)
    swapped = out @ _mzi(theta, phi, e2, e1)
    assert (swapped - expected).abs().max() > 1e-3
    torch.testing.assert_close(dev.transfer_matrix(w), expected.real)
    t = mzi_coefficients(torch.tensor([theta], dtype=F64), torch.tensor([phi], dtype=F64), e1, e2)
    torch.testing.assert_close(torch.stack([x[0] for x in t]), _mzi(theta, phi, e1, e2).flatten())
    ideal = mzi_coefficients(torch.tensor([theta], dtype=F64), torch.tensor([phi], dtype=F64))  # defaults: no error
    torch.testing.assert_close(torch.stack([x[0] for x in ideal]), _mzi(theta, phi, 0.0, 0.0).flatten())


@pytest.mark.parametrize("d_in,d_out", [(3, 3), (4, 4), (5, 3), (2, 5)])
def test_mesh_is_the_clements_product_written_out(d_in, d_out):
    dev = MZIMesh(d_in, d_out, fab_error=0.1, loss_db=0.3, seed=1, dtype=F64)
    w = dev.init_params()
    U = _clements(dev, w)
    torch.testing.assert_close(dev.unitary(w), U)
    torch.testing.assert_close(dev.transfer_matrix(w), U.real[:d_out, :d_in])
    dev.configure(w)
    X = torch.randn(2, d_in, generator=torch.Generator().manual_seed(0), dtype=F64)  # propagated through the mesh
    x_pad = torch.zeros(2, dev.N, dtype=torch.complex128)
    x_pad[:, :d_in] = X
    torch.testing.assert_close(dev.query(X), (x_pad @ U.mT).real[:, :d_out])  # coherent detection: Re(U x)


@pytest.mark.parametrize("N", [2, 3, 6])
def test_mesh_stays_unitary_with_splitting_errors_and_loses_power_with_loss(N):
    """A beam splitter of any angle is unitary, so fabrication errors keep U unitary; an insertion
    loss L per MZI gives ``U^H U = L^2 I`` for N = 2 (one MZI on both modes)."""
    dev = MZIMesh(N, N, fab_error=0.2, seed=3, dtype=F64)
    U = dev.unitary(dev.init_params())
    torch.testing.assert_close(U.mH @ U, torch.eye(N, dtype=U.dtype))
    if N == 2:
        lossy = MZIMesh(2, 2, loss_db=1.0, dtype=F64)
        U = lossy.unitary(lossy.init_params())
        torch.testing.assert_close(U.mH @ U, 10 ** (-1.0 / 10) * torch.eye(2, dtype=U.dtype))


def test_mzi_fabrication_errors_have_the_set_std():
    dev = MZIMesh(16, 16, fab_error=0.05, seed=9, dtype=F64)
    assert dev.eps.shape == (2, 120)
    assert variance_ratio_ok(dev.eps, 0.05)[0] and mean_ok(dev.eps, 0.05)


def test_mzi_phase_noise_is_a_fresh_gaussian_on_every_phase():
    """Each query call sees the mesh at ``w + N(0, phase_noise^2)`` on every phase, drawn afresh.

    Independent value: a Monte Carlo of the noiseless mesh at phases ``w + sigma * N(0, I)`` drawn with
    a separate generator. At a generic ``w`` the outputs are smooth functions of the small phase noise,
    close to Gaussian, so the means agree within Z combined standard errors and the variance ratio of
    the two samples within ``Z sqrt(2/(n1-1) + 2/(n2-1))``. A noise twice as large would quadruple the
    variance; a noise drawn once per device would give zero spread."""
    sigma, n1, n2 = 0.05, 400, 4000
    dev = MZIMesh(2, 2, phase_noise=sigma, seed=4, dtype=F64)
    w = torch.tensor([0.7, 2.1, 0.3, -1.2], dtype=F64)
    dev.configure(w)
    x = torch.tensor([[1.0, 0.0]], dtype=F64)
    ys = torch.stack([dev.query(x)[0] for _ in range(n1)])
    ref = MZIMesh(2, 2, dtype=F64)
    g = torch.Generator().manual_seed(0)
    sim = ref.unitary(w + sigma * torch.randn(n2, 4, generator=g, dtype=F64)).real[:, :, 0]
    se = (ys.var(0) / n1 + sim.var(0) / n2).sqrt()
    assert ((ys.mean(0) - sim.mean(0)).abs() < Z * se).all()
    ratio = ys.var(0) / sim.var(0)
    assert ((ratio - 1).abs() < Z * math.sqrt(2 / (n1 - 1) + 2 / (n2 - 1))).all(), ratio
    torch.testing.assert_close(dev.true_matrix(), ref.unitary(w).real)  # the configured matrix has no noise


# ------------------------------------------------------------------------------------ drift
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_drift_std_grows_like_the_square_root_of_the_steps(steps):
    """A random walk with N(0, drift^2) per step: after k steps each offset is N(0, k drift^2).
    For the ideal device the offset is read off the matrix, ``A - w``; chi-square band over n = 900."""
    drift = 0.01
    dev = make_device("ideal", 30, 30, drift=drift, seed=7, dtype=F64)
    dev.configure(dev.init_params())
    dev.advance(steps)
    offset = dev.true_matrix().flatten() - dev.w
    ok, ratio, band = variance_ratio_ok(offset, drift * math.sqrt(steps))
    assert ok, f"after {steps} steps variance ratio {ratio:.3f}, expected 1 +- {band:.3f}"
    assert mean_ok(offset, drift * math.sqrt(steps))


def test_drift_steps_accumulate_like_a_walk():
    """k single steps and one k-step call have the same spread (k drift^2), and steps add up:
    the increment between two reads is independent of the offset so far."""
    drift, n = 0.02, 900
    a = make_device("ideal", 30, 30, drift=drift, seed=8, dtype=F64)
    a.configure(a.init_params())
    for _ in range(9):
        a.advance()
    first = a.drift_offset.clone()
    assert variance_ratio_ok(first, drift * 3)[0]
    a.advance(16)
    inc = a.drift_offset - first
    assert variance_ratio_ok(inc, drift * 4)[0]
    corr = float((inc * first).mean()) / (drift**2 * 12)
    assert abs(corr) < Z / math.sqrt(n)
    a.advance(0)
    torch.testing.assert_close(a.drift_offset, first + inc)


@pytest.mark.parametrize("name", ["slm", "mrr", "mzi"])
def test_drift_shifts_the_effective_phases(name):
    """The drifted matrix is the drift-free matrix at ``w + offset`` (phases move, not entries)."""
    dev = make_device(name, 4, 3, drift=0.05, seed=2, dtype=F64)
    clean = make_device(name, 4, 3, dtype=F64)
    w = dev.init_params()
    dev.configure(w)
    dev.advance(3)
    torch.testing.assert_close(dev.true_matrix(), clean.transfer_matrix(w + dev.drift_offset))


# ------------------------------------------------------------------------------------ stencils
def test_neighbour_stencils_by_hand():
    g = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=F64)
    torch.testing.assert_close(neighbour_sum(g), torch.tensor([[6.0, 9.0, 8.0], [6.0, 12.0, 8.0]], dtype=F64))
    torch.testing.assert_close(neighbour_mean(g), torch.tensor([[3.0, 3.0, 4.0], [3.0, 4.0, 4.0]], dtype=F64))
    sq = torch.tensor([[1.0, 2.0, 0.0], [0.0, 4.0, 8.0], [2.0, 0.0, 6.0]], dtype=F64)  # a square grid
    torch.testing.assert_close(neighbour_mean(sq), torch.tensor([[1.0, 5 / 3, 5.0], [7 / 3, 10 / 4, 10 / 3],
                                                                 [0.0, 4.0, 4.0]], dtype=F64))
    one = torch.tensor([[2.5]], dtype=F64)
    torch.testing.assert_close(neighbour_mean(one), one)
    torch.testing.assert_close(neighbour_mean(torch.tensor([[1.0, 3.0]], dtype=F64)),
                               torch.tensor([[3.0, 1.0]], dtype=F64))
