"""Exact answers for the complex Langevin test models (closed forms and quadrature).

* Gaussian ``S = sigma z^2/2``: ``<z^2> = 1/sigma``, ``<z^4> = 3/sigma^2``; stationary values of
  the discretised processes (noise ``<eta eta> = 2``):
  Euler ``<z^2>_eps = 1/(sigma (1 - eps sigma/2))``;
  Heun (stochastic predictor-corrector) ``<z^2>_eps = (2 - eps sigma)/(sigma (2 - eps sigma + eps^2 sigma^2/2))``
  ``= (1/sigma)(1 - eps^2 sigma^2/4 + O(eps^3))``. The discrete stationary distribution is Gaussian in
  the noise, so ``<z^4>_eps = 3 <z^2>_eps^2`` for both.
* Quartic ``S = sigma z^2/2 + lam z^4/4``: moments by adaptive quadrature along the ray
  ``z = e^{i alpha} t`` with ``alpha = -arg(lam)/4`` (the real line, alpha = 0, for real positive lam;
  for complex lam the rotation is allowed as long as ``|arg lam| < pi/2`` and otherwise *defines*
  the integral by analytic continuation). For lam = 0, ``alpha = -arg(sigma)/2``.
* U(1) one-link model: ``<e^{+-ix}> = (beta + kappa e^{-+mu}) I_1(xi) / (xi I_0(xi))``,
  ``xi^2 = beta^2 + kappa^2 + 2 beta kappa cosh mu`` (see :class:`lftml.complex.models.U1OneLinkModel`),
  and :func:`u1_quadrature` computes the same by direct integration over ``x in (-pi, pi]``.
"""

from __future__ import annotations

import cmath
import math
import warnings
from typing import Sequence

import numpy as np
from scipy import integrate, special

from lftml.errors import LftmlError

__all__ = [
    "gaussian_z2_euler",
    "gaussian_z2_heun",
    "gaussian_z2_discrete",
    "quartic_moments",
    "u1_exp_ix",
    "u1_quadrature",
    "extrapolate_step_size",
]


def gaussian_z2_euler(sigma: complex, eps: float) -> complex:
    """Stationary ``<z^2>`` of the Euler process ``z' = z - eps sigma z + sqrt(eps) eta``, ``<eta^2> = 2``."""
    return 1.0 / (sigma * (1.0 - eps * sigma / 2.0))


def gaussian_z2_heun(sigma: complex, eps: float) -> complex:
    """Stationary ``<z^2>`` of the Heun (predictor-corrector) process for ``S = sigma z^2/2``."""
    a = eps * sigma
    return (2.0 - a) / (sigma * (2.0 - a + a * a / 2.0))


def gaussian_z2_discrete(sigma: complex, eps: float, scheme: str) -> complex:
    """``<z^2>`` at finite step size for ``scheme`` in ``{"euler", "heun"}`` (``eps = 0``: exact)."""
    if eps == 0:
        return 1.0 / sigma
    if scheme == "euler":
        return gaussian_z2_euler(sigma, eps)
    if scheme == "heun":
        return gaussian_z2_heun(sigma, eps)
    raise LftmlError(f"unknown scheme {scheme!r}")


def _ray_integral(f, alpha: float) -> complex:
    """``int_{-inf}^{inf} f(e^{i alpha} t) e^{i alpha} dt`` for a rapidly decaying integrand."""
    rot = cmath.exp(1j * alpha)

    def part(t: float, which: int) -> float:
        v = f(rot * t) * rot
        return v.real if which == 0 else v.imag

    re = integrate.quad(part, -np.inf, np.inf, args=(0,), limit=400, epsabs=1e-13, epsrel=1e-11)[0]
    im = integrate.quad(part, -np.inf, np.inf, args=(1,), limit=400, epsabs=1e-13, epsrel=1e-11)[0]
    return complex(re, im)


def quartic_moments(sigma: complex, lam: complex, orders: Sequence[int] = (2, 4)) -> dict[int, complex]:
    """Exact ``<z^n>`` for ``S = sigma z^2/2 + lam z^4/4`` by quadrature (see module docstring)."""
    sigma, lam = complex(sigma), complex(lam)
    if lam != 0:
        if abs(cmath.phase(lam)) >= math.pi * 0.999:
            raise LftmlError(f"lam = {lam} has arg(lam) ~ pi: the quartic integral is not defined")
        alpha = -cmath.phase(lam) / 4.0
    else:
        if abs(cmath.phase(sigma)) >= math.pi * 0.999:
            raise LftmlError(f"sigma = {sigma} with lam = 0: the Gaussian integral is not defined")
        alpha = -cmath.phase(sigma) / 2.0

    # subtract the minimum of Re S along the ray to avoid overflow for large negative Re sigma
    rot = cmath.exp(1j * alpha)
    ts = np.linspace(-20, 20, 4001)
    zs = rot * ts
    shift = float(np.min((sigma * zs**2 / 2 + lam * zs**4 / 4).real))

    def weight(z: complex) -> complex:
        return cmath.exp(-(sigma * z * z / 2 + lam * z**4 / 4) + shift)

    z0 = _ray_integral(weight, alpha)
    return {n: _ray_integral(lambda z, n=n: z**n * weight(z), alpha) / z0 for n in orders}


def u1_exp_ix(beta: float, kappa: float, mu: float) -> tuple[complex, complex]:
    """Exact ``(<e^{ix}>, <e^{-ix}>)`` of the U(1) one-link model ``S = -beta cos x - kappa cos(x - i mu)``."""
    a_plus = beta + kappa * math.exp(mu)  # xi e^{+theta}
    a_minus = beta + kappa * math.exp(-mu)  # xi e^{-theta}
    xi = cmath.sqrt(complex(a_plus * a_minus))
    if abs(xi) < 1e-12:
        ratio = 0.5  # I_1(xi) / xi -> 1/2
    else:
        ratio = complex(special.iv(1, xi) / (xi * special.iv(0, xi)))
    return complex(a_minus * ratio), complex(a_plus * ratio)


def u1_quadrature(beta: float, kappa: float, mu: float) -> tuple[complex, complex]:
    """``(<e^{ix}>, <e^{-ix}>)`` of the U(1) one-link model by direct quadrature over ``(-pi, pi]``."""

    def w(x: float) -> complex:
        return cmath.exp(beta * math.cos(x) + kappa * cmath.cos(x - 1j * mu))

    def integral(g) -> complex:
        with warnings.catch_warnings():  # an imaginary part that vanishes exactly triggers roundoff warnings
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            re = integrate.quad(lambda x: g(x).real, -math.pi, math.pi, limit=200, epsabs=1e-13, epsrel=1e-12)[0]
            im = integrate.quad(lambda x: g(x).imag, -math.pi, math.pi, limit=200, epsabs=1e-13, epsrel=1e-12)[0]
        return complex(re, im)

    z = integral(w)
    return integral(lambda x: cmath.exp(1j * x) * w(x)) / z, integral(lambda x: cmath.exp(-1j * x) * w(x)) / z


def extrapolate_step_size(
    step_sizes: Sequence[float],
    values: Sequence[complex],
    errors: Sequence[complex],
    powers: Sequence[int] = (1,),
) -> tuple[complex, complex]:
    """Extrapolate ``O(eps) = O_0 + sum_k c_k eps^k`` (k in ``powers``) to eps = 0, real and imaginary
    parts separately, with the package's one fitter :func:`lftml.samplers.langevin.extrapolate`.

    ``errors`` hold ``err_re + 1j*err_im``. Returns ``(O_0, err_re + 1j*err_im)``. A part whose errors
    are all zero (an exactly real or imaginary observable) is fitted with unit weights and given error 0.
    Euler: leading correction ``powers=(1,)`` (or ``(1, 2)``); Heun: ``powers=(2,)``.
    """
    from lftml.samplers.langevin import extrapolate

    vals = np.asarray(values, dtype=complex)
    errs = np.asarray(errors, dtype=complex)
    out = []
    for part_v, part_e in ((vals.real, errs.real), (vals.imag, errs.imag)):
        if np.all(part_e == 0):
            fit = extrapolate(step_sizes, part_v, np.ones_like(part_v), powers=powers)
            out.append((fit.value, 0.0))
        else:
            fit = extrapolate(step_sizes, part_v, part_e, powers=powers)
            out.append((fit.value, fit.error))
    return complex(out[0][0], out[1][0]), complex(out[0][1], out[1][1])
