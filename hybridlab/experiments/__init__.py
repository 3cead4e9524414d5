"""The computations behind the figures and tables of the book's chapters, one module per chapter.

Each function runs one experiment a chapter shows and returns plain numbers (numpy arrays, lists
of dicts, a :class:`Grid`); :mod:`hybridlab.plots` draws them. The algorithms themselves live in
:mod:`hybridlab.lowrank`, :mod:`hybridlab.surrogate`, :mod:`hybridlab.zo`, :mod:`hybridlab.layer`
and :mod:`hybridlab.devices`: these modules only *call* them, so what the book measures is exactly
what the package does. Two deliberate exceptions are comparison baselines the package does not
contain: :func:`naive_dlra_step` (the naive factor update that the projector-splitting integrator
improves on) and the ``|A x|^2`` intensity read-out of :func:`intensity_query_at` (a device that is
*not* linear in ``x``). Nothing here imports the command line.

Everything is seeded (same arguments, same numbers) and runs in float64 unless said otherwise.

* :mod:`~hybridlab.experiments.rank` -- chapter 1, rank-r approximation;
* :mod:`~hybridlab.experiments.physics` -- chapter 2, physical layers as black boxes;
* :mod:`~hybridlab.experiments.zero_order` -- chapter 3, zero-order optimization;
* :mod:`~hybridlab.experiments.dlra` -- chapter 4, dynamical low-rank approximation;
* :mod:`~hybridlab.experiments.training` -- chapter 5, the training recipe and measurements during training;
* :mod:`~hybridlab.experiments.budget` -- chapter 6, rank and query budget;
* :mod:`~hybridlab.experiments.report` -- the reporting the task chapters share;
* :mod:`~hybridlab.experiments.tasks` -- the vision, audio and text chapters (every run is one
  call of :func:`hybridlab.recipes.run`);
* :mod:`~hybridlab.experiments.real_world` -- chapter 10, real-world effects (imperfect devices,
  every method at equal hardware time, a served device, checkpoints);
* :mod:`~hybridlab.experiments._common` -- the shared helpers.

Every public name is also importable from this package (``from hybridlab import experiments as
ex; ex.track(...)``).
"""

from ._common import Grid
from .budget import (
    BUDGET_UPKEEPS,
    budget_grid,
    budget_point,
    upkeep_budget,
    upkeep_phase_diagram,
    wide_layer_table,
)
from .dlra import (
    TrackResult,
    Trajectory,
    accumulated_sketch_error,
    integrator_errors,
    matched_rebuild_period,
    naive_dlra_step,
    rank_r_path,
    regression_trajectory,
    sketch_error,
    small_singular_value_study,
    track,
    tracking_sweep,
    tracking_table,
)
from .physics import entry_samples, mrr_response, nonideality_effect, step_cost
from .rank import device_matrix, query_fits, rank_approximations, rank_errors, sample_image, train_digits_mlp
from .real_world import (
    EFFECTS,
    TOGETHER,
    comparison_methods,
    effect_variants,
    equal_time_rows,
    front_verdict,
    hardware_rows,
    killed_and_resumed,
    method_description,
    plan,
    same_numbers,
    served_comparison,
    smallest_good_step,
    summary_rows,
    train_many,
    upkeep_variants,
    zo_step_study,
)
from .report import ROBUSTNESS_METHODS, compare_to, linear_baseline, report, robustness_rows, show_robustness
from .tasks import (
    CHAPTER_DEVICES,
    CHAPTER_METHODS,
    TARGETS,
    check_targets,
    compare_devices,
    comparison_rows,
    measured_update_cost,
    metric_scale,
    rerun_command,
    settings_table,
    surrogate_update_cost,
)
from .training import (
    LAYER_SETTINGS,
    TrainingProbe,
    TrainingTrace,
    adam_on_zo,
    change_spectrum,
    recipe_run,
    training_measurements,
)
from .zero_order import (
    compressed_batch_check,
    cosine,
    finite_difference_errors,
    gaussian_smoothing_1d,
    intensity_query_at,
    oracle_gradient,
    scalar_query_at,
    scheme_means,
    upstream_error_check,
    zo_cosine_grid,
)

__all__ = [
    "ROBUSTNESS_METHODS", "compare_to", "linear_baseline", "report", "robustness_rows", "show_robustness",
    "BUDGET_UPKEEPS", "budget_grid", "budget_point", "upkeep_budget", "upkeep_phase_diagram", "wide_layer_table",
    "Grid", "sample_image", "train_digits_mlp", "device_matrix", "rank_errors", "rank_approximations",
    "query_fits", "mrr_response", "entry_samples", "nonideality_effect", "step_cost", "oracle_gradient",
    "intensity_query_at", "cosine", "gaussian_smoothing_1d", "scalar_query_at", "finite_difference_errors",
    "zo_cosine_grid", "compressed_batch_check", "upstream_error_check", "scheme_means", "rank_r_path",
    "naive_dlra_step",
    "integrator_errors", "small_singular_value_study", "sketch_error", "accumulated_sketch_error", "Trajectory",
    "regression_trajectory", "TrackResult", "track", "matched_rebuild_period", "tracking_sweep", "tracking_table",
    "CHAPTER_DEVICES", "CHAPTER_METHODS", "TARGETS", "compare_devices", "metric_scale", "comparison_rows",
    "check_targets", "settings_table", "surrogate_update_cost", "measured_update_cost", "rerun_command",
    "EFFECTS", "TOGETHER", "comparison_methods", "effect_variants", "equal_time_rows", "front_verdict",
    "hardware_rows", "killed_and_resumed", "method_description", "plan", "same_numbers", "served_comparison",
    "smallest_good_step", "summary_rows", "train_many", "upkeep_variants", "zo_step_study",
    "LAYER_SETTINGS", "TrainingProbe", "TrainingTrace", "adam_on_zo", "change_spectrum", "recipe_run",
    "training_measurements",
]
