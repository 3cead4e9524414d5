"""hybridlab: training neural networks that contain a physical, query-only layer.

The package computes; the book's chapters import it, show it and plot it. Where each piece lives
(imports flow one way, down this list):

* argument checks shared by every module ............. :mod:`hybridlab.checks`
* which code made a result (benchmark files) ......... :mod:`hybridlab.provenance`
* where a step's time goes (benchmark sections) ...... :mod:`hybridlab.timing`
* simulated devices and their cost model ............. :mod:`hybridlab.devices`
* a device served by another process, faults ......... :mod:`hybridlab.remote`
* random probes with ``E[z z^T] = I`` (one source) .... :mod:`hybridlab.sketch`
* rank-r approximation, Eckart-Young, fits ........... :mod:`hybridlab.lowrank`
* projector-splitting integrator, tracking ratio ..... :mod:`hybridlab.surrogate`
* zero-order estimates of dL/dw (and dL/dx) .......... :mod:`hybridlab.zo`
* the black-box layer and its methods ................ :mod:`hybridlab.layer`
* atomic files, output checks, training checkpoints .. :mod:`hybridlab.checkpoint`
* training loops, the recipe's schedule, budgets ..... :mod:`hybridlab.train`
* data-parallel training (torchrun, DDP) ............. :mod:`hybridlab.parallel`
* data (offline first) and small models .............. :mod:`hybridlab.data`, :mod:`hybridlab.models`
* per-task defaults, data loading, one training run .. :mod:`hybridlab.recipes`
* hardware time per device kind, Pareto fronts ....... :mod:`hybridlab.hardware`
* the computations behind the chapters' figures ...... :mod:`hybridlab.experiments` (one module per chapter)
* figures and tables ................................. :mod:`hybridlab.plots`, :mod:`hybridlab.tables`
* accuracy against hardware time (interactive) ....... :mod:`hybridlab.explorer`
* graded assignments: release and grade .............. :mod:`hybridlab.assignments`
* ``python -m hybridlab`` (argument parsing only) .... :mod:`hybridlab.cli`
"""

from .devices import DEVICES, Device, make_device
from .layer import METHODS, BlackBoxLinear, SurrogateSettings, ZOSettings, replace_linear

__version__ = "0.1.0"

__all__ = ["DEVICES", "Device", "make_device", "METHODS", "BlackBoxLinear", "SurrogateSettings", "ZOSettings",
           "replace_linear", "__version__"]
