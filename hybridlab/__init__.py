"""hybridlab: training neural networks that contain a physical, query-only layer.

The package computes; the book's chapters import it, show it and plot it.
"""

__version__ = "0.1.0"
