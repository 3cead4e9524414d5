"""Unit tests of hybridlab.experiments (the chapters' computations) and the figure builders of
hybridlab.plots. Small sizes: the whole file runs in a few seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybridlab import cli, plots, recipes
from hybridlab import experiments as ex
from hybridlab.lowrank import eckart_young_error, truncated_svd

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run this file's tests with one torch thread, like the worker processes of compare_devices
    (their results must match the serial run bit for bit), and give the previous count back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------- Grid
def test_grid_selects_by_value_and_names_errors():
    g = ex.Grid({"M": [1, 10], "mu": [1e-3, 1e-2], "t": [0, 1, 2]}, np.arange(12.0).reshape(2, 2, 3))
    assert g.sel(M=10, mu=1e-2).tolist() == [9.0, 10.0, 11.0]
    assert g.sel(mu=0.001).shape == (2, 3)
    with pytest.raises(ValueError, match="not on axis"):
        g.sel(M=5)
    with pytest.raises(ValueError, match="no axis"):
        g.index("nope", 1)
    with pytest.raises(ValueError, match="axes describe"):
        ex.Grid({"a": [1, 2]}, np.zeros(3))


# ------------------------------------------------------------------------------------ chapter 1
def test_sample_image_is_grey_matrix():
    img = ex.sample_image("china.jpg", (24, 36))
    assert img.shape == (24, 36) and img.dtype == F64
    assert 0.0 <= float(img.min()) <= float(img.max()) <= 1.0


def test_rank_errors_and_approximations_agree_with_lowrank():
    A = torch.randn(12, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    ranks = [1, 3, 8]
    err = ex.rank_errors(A, ranks)
    assert np.all(np.diff(err) < 0)
    assert err[1] == pytest.approx(eckart_young_error(A, 3) / float(A.norm()))
    approx = ex.rank_approximations(A, ranks)
    assert set(approx) == set(ranks)
    res = np.linalg.norm(A.numpy() - approx[3]) / float(A.norm())
    assert res == pytest.approx(err[1])


def test_device_matrix_is_the_configured_transfer_matrix():
    A = ex.device_matrix("slm", 6, 4, seed=3)
    assert A.shape == (4, 6) and A.dtype == F64
    assert float(A.abs().max()) <= 1 / math.sqrt(6) + 1e-12


def test_query_fits_count_queries_and_identity_is_optimal():
    A = torch.randn(10, 16, generator=torch.Generator().manual_seed(1), dtype=F64)
    rows = ex.query_fits(A, 3, sketches=[4, 16], kinds=("gaussian", "orthogonal"), oversample=2, seeds=(0,))
    ident = rows[0]
    assert ident["method"] == "identity" and ident["queries"] == 16
    assert ident["ratio"] == pytest.approx(1.0)
    by = {(r["kind"], r["sketch"]): r for r in rows[1:]}
    assert by[("gaussian", 4)]["queries"] == 3 + 2 + 4
    assert by[("orthogonal", 16)]["queries"] == 3 + 2 + 16
    assert all(r["ratio"] >= 1 - 1e-9 for r in rows)


def test_train_digits_mlp_learns():
    out = ex.train_digits_mlp(hidden=16, epochs=2, seed=0)
    assert out["weight"].shape == (16, 64) and out["init"].shape == (16, 64)
    assert out["accuracy"] > 0.5
    assert not torch.equal(out["weight"], out["init"])


# ------------------------------------------------------------------------------------ chapter 2
def test_mrr_response_matches_ring_formula():
    phi = torch.tensor([0.0, math.pi], dtype=F64)
    res = ex.mrr_response(phi, [0.8], r=0.9)[0.8]
    a, r = 0.8, 0.9
    assert res["T"][0] == pytest.approx((a - r) ** 2 / (1 - a * r) ** 2)
    assert res["T"][1] == pytest.approx((a + r) ** 2 / (1 + a * r) ** 2)
    assert res["range"] == pytest.approx((res["weight"][0], res["weight"][1]))


def test_entry_samples_stay_in_reachable_range():
    slm = ex.entry_samples("slm", 4, 4, draws=3, uniform_phases=True)
    assert slm.shape == (48,) and np.all(np.abs(slm) <= 0.5 + 1e-12)
    mzi = ex.entry_samples("mzi", 4, 4, draws=3, uniform_phases=True)
    assert np.all(np.abs(mzi) <= 1 + 1e-9)


@pytest.mark.parametrize("option", ["noise", "drift", "fab_error", "crosstalk", "bits"])
def test_nonideality_effect_grows_with_strength(option):
    values = [8, 2] if option == "bits" else [0.0, 0.01, 0.1]
    err = ex.nonideality_effect("slm", option, values, 6, 5, seed=0)
    if option != "bits":
        assert err[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(err) > 0)


def test_step_cost_matches_the_cost_model():
    r, s, M, B = 3, 5, 4, 7
    ref = ex.step_cost("surrogate", "slm", 8, 6, batch=B, rank=r, sketch=s, samples=M, seed=0)
    assert ref["initial fit"] == (8, 1)
    assert ref["surrogate update"] == (2 * r + 2 * s, 2)
    assert ref["forward"] == (B, 0)
    assert ref["backward"] == (M * B, M)
    cached = ex.step_cost("surrogate", "slm", 8, 6, batch=B, rank=r, sketch=s, samples=M, upkeep="cached", seed=0)
    assert cached["surrogate update"] == (2 * r + s, 1)
    static = ex.step_cost("static", "slm", 8, 6, batch=B, rank=r, samples=M, seed=0)
    assert static["surrogate update"][0] == 0


# ------------------------------------------------------------------------------------ chapter 3
def _slm(noise=0.0):
    from hybridlab.devices import make_device

    dev = make_device("slm", 5, 4, seed=0, noise=noise, dtype=F64)
    dev.configure(dev.init_params())
    g = torch.Generator().manual_seed(0)
    return dev, torch.randn(6, 5, generator=g, dtype=F64), torch.randn(6, 4, generator=g, dtype=F64)


def test_oracle_gradient_matches_finite_differences():
    dev, X, V = _slm()
    w = dev.w.clone()
    g = ex.oracle_gradient(dev, w, X, V)
    e = torch.zeros_like(w)
    e[3] = 1e-6
    def phi(ww):
        return float(((X @ dev.transfer_matrix(ww).mT) * V).sum())
    assert float(g[3]) == pytest.approx((phi(w + e) - phi(w - e)) / 2e-6, rel=1e-5)
    gi = ex.oracle_gradient(dev, w, X, V, intensity=True)
    def phi2(ww):
        return float(((X @ dev.transfer_matrix(ww).mT).square() * V).sum())
    assert float(gi[3]) == pytest.approx((phi2(w + e) - phi2(w - e)) / 2e-6, rel=1e-5)


def test_cosine_and_smoothing():
    assert ex.cosine(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])) == pytest.approx(1.0)
    w = np.linspace(-1, 1, 5)
    smooth, deriv = ex.gaussian_smoothing_1d(lambda x: x**2, w, 0.3)
    assert smooth == pytest.approx(w**2 + 0.09)  # E (w + mu u)^2 = w^2 + mu^2
    assert deriv == pytest.approx(2 * w)


def test_finite_difference_errors_follow_the_schemes():
    def f(w):
        return torch.sin(3 * w[..., 0])
    def df(w):
        return 3 * torch.cos(3 * w[..., 0])
    fwd = ex.finite_difference_errors(f, df, 0.7, [1e-2, 1e-3], scheme="forward", trials=1)
    cen = ex.finite_difference_errors(f, df, 0.7, [1e-2, 1e-3], scheme="central", trials=1)
    assert fwd[1] < fwd[0] and cen[0] < fwd[0]
    assert fwd[0] / fwd[1] == pytest.approx(10, rel=0.1)  # O(h)
    noisy = ex.finite_difference_errors(f, df, 0.7, [1e-8], noise=1e-6, trials=3)
    assert noisy[0] > 1.0  # sigma / h


def test_zo_cosine_grid_shape_and_trend():
    g = ex.zo_cosine_grid("slm", 4, 4, batch=4, samples=(1, 64), mus=(1e-3,), noises=(0.0,), trials=3, seed=0)
    assert g.values.shape == (1, 1, 1, 2, 1, 3)
    assert list(g.axes) == ["noise", "kind", "scheme", "M", "mu", "trial"]
    cos = g.values.mean(-1).ravel()
    assert cos[1] > cos[0] and cos[1] > 0.6


def test_compressed_batch_check():
    rows = ex.compressed_batch_check("slm", 6, 3, batch=12, samples=16, seed=0)
    lin = [r for r in rows if r["readout"].startswith("linear")]
    inten = [r for r in rows if r["readout"].startswith("intensity")]
    assert lin[0]["cosine"] == pytest.approx(lin[1]["cosine"], abs=1e-6)
    assert lin[1]["queries"] * 12 == lin[0]["queries"] * 3  # d_out instead of B per configuration
    assert inten[1]["cosine"] < inten[0]["cosine"] - 0.2


def test_upstream_error_check():
    res = ex.upstream_error_check("slm", 5, 4, batch=8, classes=3, samples=32, seed=0)
    values = list(res.values())
    assert values[0] < 1e-12
    assert values[1] == pytest.approx(values[2], abs=0.05)


# ------------------------------------------------------------------------------------ chapter 4
def test_rank_r_path_has_rank_r_and_ksl_is_exact():
    path = ex.rank_r_path(10, 8, [1.0, 1e-3, 1e-6], steps=5, h=0.05, seed=0)
    s = torch.linalg.svdvals(path[-1])
    assert float(s[3]) < 1e-12 and float(s[2]) == pytest.approx(1e-6, rel=1e-6)
    assert ex.integrator_errors(path, 3, "ksl").max() < 1e-12
    assert ex.integrator_errors(path, 3, "naive")[-1] > 1e-6


def test_naive_step_is_a_valid_factorisation():
    A = torch.randn(7, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    U, S, V = truncated_svd(A, 2)
    U1, S1, V1 = ex.naive_dlra_step(U, S, V, torch.zeros_like(A))
    assert torch.allclose(U1 @ S1 @ V1.mT, U @ S @ V.mT)
    assert torch.allclose(U1.mT @ U1, torch.eye(2, dtype=F64))


def test_small_singular_value_study_shapes():
    res = ex.small_singular_value_study([1e-2, 1e-8], d=12, r=3, steps=3, seed=0)
    assert set(res) == {"sigma_min", "ksl", "naive", "floor"}
    assert np.all(res["ksl"] < 1e-10)


def test_sketch_error_orthogonal_is_exact_at_full_size():
    g = ex.sketch_error(d_in=8, d_out=5, r=2, sketches=(4, 8), kinds=("gaussian", "orthogonal"), trials=3)
    assert g.sel(kind="orthogonal", s=8).max() < 1e-12
    assert g.sel(kind="gaussian", s=8).min() > 1e-3


def test_accumulated_sketch_error_fixed_sketch_is_biased():
    res = ex.accumulated_sketch_error(d_in=16, d_out=8, r=2, s=4, steps=30, correlation=0.9,
                                      modes=("fresh", "fixed", "rotate 5"), seed=0)
    assert res["fresh"][-1] < 0.5 * res["fixed"][-1]
    with pytest.raises(ValueError, match="mode"):
        ex.accumulated_sketch_error(steps=2, modes=("sometimes",))


@pytest.fixture(scope="module")
def traj():
    return ex.regression_trajectory("ideal", 12, 10, rank=2, steps=6, batch=4, seed=0)


def test_regression_trajectory(traj):
    assert traj.W.shape == (7, 120) and len(traj.A) == 7 and traj.steps == 6
    assert torch.allclose(traj.A[3], traj.W[3].reshape(10, 12))
    assert np.all(traj.step_sizes() > 0)
    again = ex.regression_trajectory("ideal", 12, 10, rank=2, steps=6, batch=4, seed=0)
    assert torch.equal(again.W, traj.W)
    slm = ex.regression_trajectory("slm", 6, 5, rank=2, steps=2, batch=3, seed=0)
    assert slm.W.shape == (3, 30)
    with pytest.raises(ValueError, match="ideal"):
        ex.regression_trajectory("mzi", 4, 4, steps=1)


def test_track_methods_and_costs(traj):
    r = 2
    explicit = ex.track(traj, "explicit", rank=r)
    assert explicit.queries == 0 and np.all(explicit.ratio >= 1 - 1e-9)
    # the layer's implicit step with an exact (orthogonal, s = d_in) sketch is explicit KSL
    exact = ex.track(traj, "surrogate", rank=r, sketch=12, sketch_kind="orthogonal")
    assert exact.ratio == pytest.approx(explicit.ratio, rel=1e-8)
    ref = ex.track(traj, "surrogate", rank=r, sketch=3)
    assert ref.queries_per_step == 2 * r + 2 * 3 and ref.reconfigurations_per_step == 2
    cached = ex.track(traj, "surrogate", rank=r, sketch=3, upkeep="cached")
    assert cached.queries_per_step == 2 * r + 3 and cached.reconfigurations_per_step == 1
    static = ex.track(traj, "static", rank=r)
    assert static.queries == 0 and static.fit_queries == 12
    rebuild = ex.track(traj, "rebuild", rank=r, rebuild_every=2)
    assert rebuild.queries == 3 * 12 and rebuild.ratio[1] == pytest.approx(1.0)


def test_matched_rebuild_period():
    assert ex.matched_rebuild_period(128, 8, 16) == 3
    assert ex.matched_rebuild_period(64, 8, 64) == 1


def test_tracking_sweep_and_table_are_deterministic(traj):
    sweep = ex.tracking_sweep(traj, 2, [2, 4], variants=("gaussian", "cached"))
    assert set(sweep) == {2, 4} and len(sweep[2]) == 3
    kw = dict(d_in=10, d_out=8, rank=2, sketch=3, steps=4, batch=4, seed=1)
    t1, t2 = ex.tracking_table(**kw), ex.tracking_table(**kw)
    assert t1 == t2 and len(t1) == 7
    assert {"method", "queries_per_step", "reconfigurations_per_step", "mean_ratio", "final_ratio"} == set(t1[0])


# ----------------------------------------------------------------------------- plots builders
def test_slider_figure_precomputes_every_state():
    x = [1, 2, 3]
    curves = {1: {"a": [1, 2, 3], "b": [3, 2, 1]}, 10: {"a": [2, 3, 4], "b": ([1, 3], [0, 0])}}
    fig = plots.slider_figure(x, curves, static_curves={"ref": [0, 0, 0]}, slider_label="M", log_x=True)
    assert len(fig.data) == 1 + 4
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["1", "10"]
    assert steps[0].args[0]["visible"] == [True, True, True, False, False]
    assert steps[1].args[0]["visible"] == [True, False, False, True, True]
    assert fig.data[1].line.color == fig.data[3].line.color  # same curve, same colour
    assert fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="empty"):
        plots.slider_figure(x, {})


def test_rank_slider_figure():
    A = np.random.default_rng(0).random((6, 8))
    approx = {r: truncated_svd(torch.tensor(A), r).matrix().numpy() for r in (1, 2)}
    fig = plots.rank_slider_figure(A, approx, [1, 2, 3], [0.5, 0.2, 0.1])
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["1", "2", "full"]
    assert len(fig.data) == 1 + 3 + 2
    assert all(len(s.args[0]["visible"]) == len(fig.data) for s in steps)
    z = np.asarray(fig.data[1].z)
    assert z.dtype == np.uint8 and z.shape == (6, 8)


def test_matplotlib_builders():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plots.matrix_panel({"a": np.eye(3), "b": -np.eye(3), "c": np.ones((2, 4))}, ncols=2)
    assert len(fig.axes) >= 3
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.loglog([1, 5], [2, 3])
    plots.plain_log_ticks(ax)
    fig.canvas.draw()
    assert "10^" not in "".join(t.get_text() for t in ax.get_yticklabels())
    plt.close(fig)


def test_markdown_table_and_show_table(monkeypatch):
    md = plots.markdown_table([{"a": "x|y", "b": 1.23456}], {"a": "A", "b": "B"}, {"b": "{:.2f}"})
    assert md.splitlines() == ["| A | B |", "|---|---|", "| x\\|y | 1.23 |"]
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False, metadata=None: shown.append((obj, metadata)))
    plots.show_table([{"a": 1}], data={"rows": [1]})
    bundle, metadata = shown[0]
    assert metadata == {plots.TABLE_METADATA_KEY: {"rows": [1]}} and "| a |" in bundle["text/markdown"]
    assert set(bundle) == {"text/html", "text/markdown", "text/plain"}  # nothing the book cannot render
    assert "<td" in bundle["text/html"] and "<table" in plots.html_table([{"a": "<b>"}])
    assert "&lt;b&gt;" in plots.html_table([{"a": "<b>"}])
    missing = [{"a": None, "b": 1.0}]  # a missing value shows as a dash, whatever the column's format
    assert plots.markdown_table(missing, formats={"a": "{:.2f}"}).splitlines()[-1] == "| — | 1.0 |"
    assert "—" in plots.html_table(missing, formats={"a": "{:.2f}"})


def test_show_source_drops_the_docstring(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    plots.show_source(truncated_svd)
    text = shown[0].data
    assert "def truncated_svd" in text and "Eckart-Young)" not in text and "torch.linalg.svd" in text


def test_interactive_figure_renders_into_the_output_widget():
    pytest.importorskip("ipywidgets")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = []

    def draw(r, kind):
        calls.append((r, kind))
        plt.subplots()

    box = plots.interactive_figure(draw, {"r": [1, 2, 4], "kind": ["a", "b"]}, initial={"kind": "b"})
    sliders, out = box.children[:-1], box.children[-1]
    assert calls == [(2, "b")] and [s.description for s in sliders] == ["r", "kind"]
    assert len(out.outputs) == 1 and "image/png" in out.outputs[0]["data"]
    sliders[0].value = 4
    assert calls[-1] == (4, "b") and len(out.outputs) == 1
    with pytest.raises(ValueError, match="not one of"):
        plots.interactive_figure(draw, {"r": [1, 2]}, initial={"r": 3})


# ------------------------------------------------------------------------------------ chapters 7-9
@pytest.fixture(scope="module")
def vision_comparison():
    """A real quick comparison: digital + surrogate/static on slm, surrogate only on ideal, 2 seeds."""
    calls = []
    real_run = recipes.run

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real_run(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(recipes, "run", spy)
    try:
        plan = {"slm": ("surrogate", "static"), "ideal": ("surrogate",)}
        results = ex.compare_devices("vision", ("slm", "ideal"), plan, seeds=(0, 1), quick=True, upkeep="ksl")
    finally:
        mp.undo()
    return results, calls


def test_compare_devices_trains_digital_once_per_seed_through_cli_run(vision_comparison):
    results, calls = vision_comparison
    assert len(results) == len(calls) == 2 * 4
    runs = [(args[0], args[1], args[2], kw["seed"]) for args, kw in calls]
    for seed in (0, 1):
        mine = [(t, d, m) for t, d, m, s in runs if s == seed]
        assert [m for _, _, m in mine].count("digital") == 1
        assert sorted((d, m) for _, d, m in mine if m != "digital") == [("ideal", "surrogate"), ("slm", "static"),
                                                                         ("slm", "surrogate")]
    assert all(t == "vision" and kw["quick"] is True for (t, *_), kw in calls)
    assert len({id(kw["data"]) for _, kw in calls}) == 1  # the data are loaded once and shared
    for r in results:
        assert (r["queries"] == 0) == (r["method"] == "digital")
        assert (r["reconfigurations"] == 0) == (r["method"] == "digital")
    assert [(r["seed"], r["method"]) for r in results][:2] == [(0, "digital"), (0, "surrogate")]


def test_compare_devices_checks_names_before_training(monkeypatch):
    monkeypatch.setattr(recipes, "run", lambda *a, **k: pytest.fail("trained before checking the arguments"))
    with pytest.raises(ValueError, match="unknown device"):
        ex.compare_devices("vision", ("slm", "nope"), seeds=(0,), quick=True)
    with pytest.raises(ValueError, match="unknown method"):
        ex.compare_devices("vision", ("slm",), ("surrogate", "magic"), seeds=(0,), quick=True)
    with pytest.raises(ValueError, match="digital"):
        ex.compare_devices("vision", ("slm",), ("digital",), seeds=(0,), quick=True)
    with pytest.raises(ValueError, match="exactly the devices"):
        ex.compare_devices("vision", ("slm", "mzi"), {"slm": ("surrogate",)}, seeds=(0,), quick=True)
    with pytest.raises(ValueError, match="seeds"):
        ex.compare_devices("vision", ("slm",), seeds=(), quick=True)
    with pytest.raises(ValueError, match="unknown task"):
        ex.compare_devices("smell", ("slm",), seeds=(0,), quick=True)


def test_comparison_rows_are_numpy_mean_and_std_of_the_results(vision_comparison):
    results, _ = vision_comparison
    rows = ex.comparison_rows(results)
    assert [r["run"] for r in rows] == ["digital", "surrogate slm", "static slm", "surrogate ideal"]
    digital = np.mean([100 * r["accuracy"] for r in results if r["method"] == "digital"])
    for row in rows:
        mine = [r for r in results if (r["method"], r["device"] if r["method"] != "digital" else "—")
                == (row["method"], row["device"])]
        acc = np.array([100 * r["accuracy"] for r in mine])
        assert row["seeds"] == 2 and row["values"] == acc.tolist()
        assert row["mean"] == pytest.approx(acc.mean()) and row["std"] == pytest.approx(acc.std())
        assert row["gap"] == pytest.approx(acc.mean() - digital)
        assert row["ratio"] == pytest.approx(acc.mean() / digital)
        assert row["queries"] == np.mean([r["queries"] for r in mine])
        assert row["reconfigurations"] == np.mean([r["reconfigurations"] for r in mine])
        assert row["steps"] == mine[0]["history"]["steps"][-1]
    assert rows[0]["queries"] == 0 and rows[0]["device"] == "—"


def _fake(method, device, seed, value, metric="bits_per_char", queries=0):
    return {"task": "text", "method": method, "device": device, "seed": seed, "metric": metric, metric: value,
            "queries": queries, "reconfigurations": queries // 10, "seconds": 1.0,
            "history": {"steps": [5, 10], "metric": [2 * value, value], "queries": [queries // 2, queries]}}


def test_comparison_rows_of_bits_per_char_are_not_scaled_and_std_is_population():
    results = [_fake("digital", "ideal", 0, 2.0), _fake("digital", "ideal", 1, 2.2),
               _fake("surrogate", "mzi", 0, 2.1, queries=100), _fake("surrogate", "mzi", 1, 2.5, queries=300)]
    rows = ex.comparison_rows(results)
    assert rows[1]["mean"] == pytest.approx(2.3) and rows[1]["std"] == pytest.approx(0.2)  # ddof=0
    assert rows[1]["ratio"] == pytest.approx(2.3 / 2.1) and rows[1]["queries"] == 200
    no_digital = ex.comparison_rows(results[2:])
    assert len(no_digital) == 1 and no_digital[0]["gap"] is None and no_digital[0]["ratio"] is None
    with pytest.raises(ValueError, match="several tasks"):
        ex.comparison_rows([results[0], {**results[1], "task": "vision"}])


def test_check_targets_of_accuracy_and_of_bits():
    rows = [{"method": "digital", "device": "—", "mean": 98.0}, {"method": "surrogate", "device": "slm", "mean": 96.6},
            {"method": "static", "device": "slm", "mean": 97.0},
            {"method": "surrogate", "device": "mzi", "mean": 96.4},
            {"method": "static", "device": "mzi", "mean": 90.0},
            {"method": "surrogate", "device": "ideal", "mean": 98.0}]
    got = {c["device"]: c for c in ex.check_targets(rows, "vision")}
    assert got["slm"]["threshold"] == pytest.approx(96.5)
    assert got["slm"]["meets_target"] and got["slm"]["beats_static"] is False
    assert not got["mzi"]["meets_target"] and got["mzi"]["beats_static"] is True
    assert got["ideal"]["static"] is None and got["ideal"]["beats_static"] is None
    bits = [{"method": "digital", "device": "—", "mean": 2.0}, {"method": "surrogate", "device": "mrr", "mean": 2.09},
            {"method": "static", "device": "mrr", "mean": 2.2}, {"method": "surrogate", "device": "mzi", "mean": 2.11},
            {"method": "static", "device": "mzi", "mean": 2.05}]
    got = {c["device"]: c for c in ex.check_targets(bits, "text")}
    assert got["mrr"]["meets_target"] and got["mrr"]["beats_static"]
    assert not got["mzi"]["meets_target"] and not got["mzi"]["beats_static"]
    with pytest.raises(ValueError, match="no digital"):
        ex.check_targets(bits[1:], "text")


def test_settings_table_shows_cli_settings():
    for task in ("vision", "text"):
        rows = ex.settings_table(task, ex.CHAPTER_DEVICES)
        assert [r["setting"] for r in rows] == list(recipes.settings(task, "slm"))
        for r in rows:  # one recipe for every device: each value is the setting itself
            assert r["value"] == recipes.settings(task, "mzi")[r["setting"]]
            assert r["meaning"], r["setting"]
    quick = {r["setting"]: r["value"] for r in ex.settings_table("vision", ("mzi",), quick=True)}
    assert quick["epochs"] == recipes.QUICK["vision"]["epochs"]
    assert quick["lr_device"] == recipes.settings("vision", "mzi")["lr_device"]


def test_surrogate_update_cost_against_a_full_reread():
    vision = ex.surrogate_update_cost("vision", recipes.load_data("vision", quick=True))
    assert (vision["d_in"], vision["rank"], vision["sketch"]) == (64, 16, 32)
    assert vision["implicit_queries"] == 96 and vision["reread_queries"] == 64 and not vision["implicit_cheaper"]
    text = ex.surrogate_update_cost("text", recipes.load_data("text", quick=True))
    assert text["implicit_queries"] == 2 * 32 + 2 * 32 and text["largest_cheaper_sketch"] < 1
    small = ex.surrogate_update_cost("vision", recipes.load_data("vision", quick=True), rank=4, sketch=8)
    assert small["implicit_queries"] == 24 and small["implicit_cheaper"]
    s_max, r = small["largest_cheaper_sketch"], small["rank"]
    assert 2 * r + 2 * s_max < 64 <= 2 * r + 2 * (s_max + 1)
    with pytest.raises(ValueError, match="not a Linear"):
        ex.surrogate_update_cost("vision", recipes.load_data("vision", quick=True), layer="features")


def test_measured_update_cost_is_2r_plus_2s_queries_per_step(vision_comparison):
    results, _ = vision_comparison
    s = recipes.settings("vision", quick=True)
    measured = ex.measured_update_cost(results)
    assert [(m["device"], m["seed"]) for m in measured] == [("slm", 0), ("slm", 1)]  # ideal has no static run
    for m in measured:
        assert m["queries_per_step"] == 2 * s["rank"] + 2 * s["sketch"]
        assert m["reconfigurations_per_step"] > 0


def test_rerun_command_parses_back_to_the_same_run(vision_comparison):
    results, _ = vision_comparison
    for r in results[:3]:
        argv = ex.rerun_command(r, out="x.json").split()
        assert argv[:4] == ["python", "-m", "hybridlab", "train"]
        args = cli.build_parser().parse_args(argv[3:])
        assert (args.task, args.method, args.seed, args.quick, args.out) == ("vision", r["method"], r["seed"], True,
                                                                             "x.json")
        if r["method"] != "digital":
            assert args.device == r["device"]
    r = {**results[1], "args": {**results[1]["args"], "data_dir": "/data/mnist", "epochs": 3, "compressed": False,
                                "device_options": {"noise": 0.01}}}
    args = cli.build_parser().parse_args(ex.rerun_command(r).split()[3:])
    assert (args.data_dir, args.epochs, args.compressed, args.noise) == ("/data/mnist", 3, False, 0.01)
    assert "--threads" not in ex.rerun_command(r)
    args = cli.build_parser().parse_args(ex.rerun_command({**r, "torch_threads": 1}, threads=True).split()[3:])
    assert args.threads == 1
    r["args"]["device_options"] = {"fab_error": 0.1}
    with pytest.raises(ValueError, match="command line"):
        ex.rerun_command(r)


def test_learning_curves_and_budget_figures_draw_the_results(vision_comparison):
    results, _ = vision_comparison
    fig = plots.learning_curves_figure(results)
    assert [t.name for t in fig.data] == ["digital", "surrogate · slm", "static · slm", "surrogate · ideal"]
    sur = [r for r in results if r["method"] == "surrogate" and r["device"] == "slm"]
    want = np.mean([np.array(r["history"]["metric"]) * 100 for r in sur], axis=0)
    assert np.allclose(fig.data[1].y, want) and list(fig.data[1].x) == sur[0]["history"]["steps"]
    first = plots.learning_curves_figure(results, average=False)
    assert np.allclose(first.data[1].y, np.array(sur[0]["history"]["metric"]) * 100)
    by_queries = plots.learning_curves_figure(results, x="queries")
    assert "digital" not in [t.name for t in by_queries.data] and by_queries.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="steps"):
        plots.learning_curves_figure(results, x="time")
    rows = ex.comparison_rows(results)
    bars = plots.budget_figure(rows)
    got = {(t.name, t.xaxis): dict(zip(t.x, t.y)) for t in bars.data}
    assert got[("surrogate", "x")] == {"slm": rows[1]["queries"], "ideal": rows[3]["queries"]}
    assert got[("static", "x2")] == {"slm": rows[2]["reconfigurations"]}
    with pytest.raises(ValueError, match="no device rows"):
        plots.budget_figure(rows[:1])


def test_compare_devices_in_worker_processes_gives_the_same_results():
    data = recipes.load_data("vision", quick=True)
    kw = {"devices": ("mzi",), "methods": ("surrogate",), "seeds": (0, 1), "quick": True, "data": data}
    serial = ex.compare_devices("vision", **kw)  # this file runs torch with one thread, like the workers
    parallel = ex.compare_devices("vision", workers=2, **kw)
    assert [(r["seed"], r["method"]) for r in parallel] == [(r["seed"], r["method"]) for r in serial]
    for a, b in zip(serial, parallel):
        keys = ("accuracy", "queries", "reconfigurations")
        assert [a[k] for k in keys] == [b[k] for k in keys]
        assert a["history"]["metric"] == b["history"]["metric"]
    with pytest.raises(ValueError, match="workers"):
        ex.compare_devices("vision", workers=0, **kw)
