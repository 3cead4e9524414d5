"""hybridlab: training neural networks that contain a physical, query-only layer.

The package computes; the book's chapters import it, show it and plot it. Where each formula of
the method lives (ALGORITHMS.md):

* devices and their cost model (sections 2, 6) ......... :mod:`hybridlab.devices`
* zero-order estimate of dL/dw (section 3) ............. :mod:`hybridlab.zo`
* rank-r approximation, Eckart-Young, fits (section 4) . :mod:`hybridlab.lowrank`
* projector-splitting integrator (section 5) ........... :mod:`hybridlab.surrogate`
* the black-box layer and its methods (section 7) ...... :mod:`hybridlab.layer`
* training loops and hardware budgets .................. :mod:`hybridlab.train`
"""

from .devices import DEVICES, Device, make_device
from .layer import METHODS, BlackBoxLinear, replace_linear

__version__ = "0.1.0"

__all__ = ["DEVICES", "Device", "make_device", "METHODS", "BlackBoxLinear", "replace_linear", "__version__"]
