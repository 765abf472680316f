"""Pure lattice actions: ``action(phi) = S``, ``force(phi) = -dS/dphi``; no state, no randomness
(except the exact samplers of Gaussian theories, which take an explicit generator)."""

from lftml.theories.base import Theory, theory_from_dict
from lftml.theories.free import FreeScalar
from lftml.theories.phi4 import Phi4

__all__ = ["Theory", "FreeScalar", "Phi4", "theory_from_dict"]
