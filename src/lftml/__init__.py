"""lftml: lattice field theory meets machine learning.

Conventions used throughout the package (stated once here, repeated where they matter):

* Fields have the batch (chain) axis first: ``(n_chains, *lattice_shape)``; histories are
  ``(n_configs, n_chains, *lattice_shape)``.
* ``action(phi)`` is the Euclidean action S (one value per chain), ``force(phi) = -dS/dphi``,
  ``log_prob = -S`` (unnormalised).
* Physics samplers run in float64 by default; every random stream comes from an explicit seed.
"""

__version__ = "0.1.0"

from lftml.errors import LftmlError

__all__ = ["__version__", "LftmlError", "Lattice"]


def __getattr__(name: str):
    """``lftml.Lattice`` on first use: importing the package (and so the CLI's ``--help`` and its
    one-line errors) does not import torch."""
    if name == "Lattice":
        from lftml.lattice import Lattice

        return Lattice
    raise AttributeError(f"module 'lftml' has no attribute {name!r}")
