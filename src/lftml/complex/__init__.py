"""Complex Langevin for complex actions: solvable models, the relativistic Bose gas at finite
chemical potential, and the diagnostics that tell right from wrong.

Conventions: fields are complex128 ``(n_chains, *field_shape)``; ``drift = K = -dS/dz``; real
Gaussian noise with ``<eta eta> = 2 delta``; averages are Langevin-time weighted. See
:mod:`lftml.complex.langevin` (process, schemes, adaptive step), :mod:`lftml.complex.models` and
:mod:`lftml.complex.bose_gas` (actions and exact answers), :mod:`lftml.complex.diagnostics`.
"""

from lftml.complex.analysis import ComplexEstimate, complex_estimate
from lftml.complex.bose_gas import BoseGas, PhaseQuenchedBoseGas, free_bose_gas_exact
from lftml.complex.diagnostics import diagnose
from lftml.complex.exact import extrapolate_step_size, quartic_moments, u1_exp_ix
from lftml.complex.langevin import CLRun, ComplexLangevin, ComplexLangevinRunaway, run_complex_langevin
from lftml.complex.models import GaussianModel, QuarticModel, U1OneLinkModel, model_from_dict
from lftml.complex.runner import build_model, diagnose_file, simulate, summarize

__all__ = [
    "BoseGas",
    "CLRun",
    "ComplexEstimate",
    "ComplexLangevin",
    "ComplexLangevinRunaway",
    "GaussianModel",
    "PhaseQuenchedBoseGas",
    "QuarticModel",
    "U1OneLinkModel",
    "build_model",
    "complex_estimate",
    "diagnose",
    "diagnose_file",
    "extrapolate_step_size",
    "free_bose_gas_exact",
    "model_from_dict",
    "quartic_moments",
    "run_complex_langevin",
    "simulate",
    "summarize",
    "u1_exp_ix",
]
