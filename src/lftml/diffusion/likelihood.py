r"""Log-likelihoods ``log q(x)`` of a score model by the probability-flow ODE.

The probability-flow ODE ``dx/dt = f(x, t) = -g(t)^2 s(x, t) / 2`` maps the model's distribution at
``t = eps`` onto the prior at ``t = 1`` deterministically, and along a trajectory
``d log p_t(x(t)) / dt = -div f``. Hence

``log q(x(eps)) = log p_prior(x(1)) + int_eps^1 div f(x(t), t) dt``,

with the prior ``N(0, C + sigma_max^2)`` when the score has an analytic Gaussian part of per-mode
variance ``c_p`` (exact for that part), else ``N(0, sigma_max^2)``. This ``log q`` is a diagnostic:
it is approximate (ODE discretisation; Hutchinson probe noise for the network part, exact with
``probe = "exact"``, one vector-Jacobian product per site). The exact route to unbiased estimates is
the path-space weights of :func:`lftml.diffusion.sampling.sample_path_weighted`.

The divergence is estimated with Hutchinson's trick ``div f = E[v^T (df/dx) v]`` with ``probes``
fixed probe vectors ``v`` per configuration (``gaussian`` N(0, 1) or ``rademacher`` +-1 entries),
drawn once per configuration (the ODE right-hand side must be a fixed smooth function), or exactly
(``exact``: one vector-Jacobian product per lattice site; small lattices only). When the score has
an analytic part (``score_parts``/``analytic_divergence``, e.g. the ``gaussian`` and ``edm``
parametrizations of :class:`~lftml.diffusion.model.ScoreModel`), its divergence is taken exactly
and only the network's correction is estimated: a control variate that cuts the Hutchinson noise
of ``log q`` by a large factor (what makes the Metropolis acceptance usable). The estimator is
unbiased for ``log q`` at fixed trajectory; ``exp(log q)`` inherits some noise.

Two directions:

* :func:`log_likelihood` (encode): given configurations, integrate ``eps -> 1``;
* :func:`sample_with_log_likelihood` (generate): draw ``x(1)`` from the prior and integrate ``1 -> eps``,
  obtaining samples *and* their ``log q`` in one pass (used for Metropolis and reweighting).

``log q`` is returned in model units (``x = scale * phi``) by these functions; add
``V log(scale)`` (:meth:`DataScaling.log_jacobian`) for the density of ``phi``; the model-level
helpers :func:`model_log_likelihood` and :func:`model_sample_with_log_likelihood` do that.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.samplers.rng import torch_generator
from lftml.diffusion.sde import VESDE

__all__ = [
    "PROBES", "LikelihoodSettings", "log_likelihood", "sample_with_log_likelihood", "model_log_likelihood",
    "model_sample_with_log_likelihood", "action_vs_log_q", "plot_action_vs_log_q",
]

log = logging.getLogger(__name__)
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PROBES = ("gaussian", "rademacher", "exact")


@dataclass(frozen=True)
class LikelihoodSettings:
    """``probes``: Hutchinson probe vectors per configuration; ``probe``: gaussian | rademacher |
    exact; ``solver``: ``rk45`` (scipy adaptive, ``rtol``/``atol``) or ``heun`` (``steps`` fixed
    steps on the ``schedule`` grid: ``edm`` (default, the samplers' grid) or ``uniform`` in t, see
    :func:`lftml.diffusion.sampling.time_grid`).

    ``edm`` is the default because the uniform grid is too coarse at small noise, where a trained
    network's score is stiff: on the 4x4 strongly coupled test model (tests/test_diffusion_learning.py)
    40 uniform Heun steps gave log-weight outliers (max - median 8.4 nats) and a Metropolis
    acceptance of 0.05, 40 edm steps 0.63 (the regression after the diffl/diffx merge)."""

    probes: int = 1
    probe: str = "rademacher"
    solver: str = "rk45"
    rtol: float = 1e-5
    atol: float = 1e-5
    steps: int = 100
    schedule: str = "edm"

    def __post_init__(self) -> None:
        if self.probe not in PROBES:
            raise LftmlError(f"unknown probe kind {self.probe!r}; choose one of {', '.join(PROBES)}")
        if self.probes < 1:
            raise LftmlError(f"--probes must be >= 1, got {self.probes}")
        if self.solver not in ("rk45", "heun"):
            raise LftmlError(f"unknown ODE solver {self.solver!r}; choose rk45 or heun")
        if not (self.rtol > 0 and self.atol > 0):
            raise LftmlError("ODE tolerances must be positive")
        if self.steps < 2:
            raise LftmlError(f"--steps must be >= 2, got {self.steps}")
        if self.schedule not in ("uniform", "edm"):
            raise LftmlError(f"unknown time schedule {self.schedule!r}; choose uniform or edm")


def _drift_and_div(score_fn: ScoreFn, sde: VESDE, x: torch.Tensor, t: float, probes: torch.Tensor | None,
                   exact: bool, divergence: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``f(x, t)`` and ``div f`` (per configuration; ``None`` when ``divergence`` is False)."""
    n = x.shape[0]
    tt = torch.full((n,), float(t), dtype=x.dtype, device=x.device)
    g2 = float(sde.diffusion(torch.tensor(float(t), dtype=torch.float64))) ** 2
    if not divergence:
        with torch.no_grad():
            return -0.5 * g2 * score_fn(x, tt), None
    if not exact and hasattr(score_fn, "score_parts") and hasattr(score_fn, "analytic_divergence"):
        base_div = score_fn.analytic_divergence(tt.to(torch.float64).cpu(), x)
        if base_div is not None:
            # exact divergence of the analytic part, Hutchinson only for the network correction
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                base, corr = score_fn.score_parts(xr, tt)
                fc = -0.5 * g2 * corr
                div = (-0.5 * g2 * base_div).to(x.device)
                if corr.requires_grad:
                    k = probes.shape[0]
                    for j in range(k):
                        (gj,) = torch.autograd.grad((fc * probes[j]).sum(), xr, retain_graph=j + 1 < k)
                        div = div + (gj * probes[j]).reshape(n, -1).sum(1).to(torch.float64) / k
            return (-0.5 * g2 * base.detach() + fc.detach()), div
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        f = -0.5 * g2 * score_fn(xr, tt)
        div = torch.zeros(n, dtype=torch.float64, device=x.device)
        if exact:
            flat = f.reshape(n, -1)
            V = flat.shape[1]
            for i in range(V):
                (gi,) = torch.autograd.grad(flat[:, i].sum(), xr, retain_graph=i + 1 < V)
                div += gi.reshape(n, -1)[:, i].to(torch.float64)
        else:
            k = probes.shape[0]
            for j in range(k):
                (gj,) = torch.autograd.grad((f * probes[j]).sum(), xr, retain_graph=j + 1 < k)
                div += (gj * probes[j]).reshape(n, -1).sum(1).to(torch.float64) / k
    return f.detach(), div


def _draw_probes(shape, settings: LikelihoodSettings, generator: torch.Generator, dtype, device):
    if settings.probe == "exact":
        return None
    v = torch.randn((settings.probes, *shape), generator=generator, dtype=dtype, device=generator.device)
    if settings.probe == "rademacher":
        v = torch.sign(v)
        v[v == 0] = 1.0
    return v.to(device)


def _heun_times(sde: VESDE, t0: float, t1: float, settings: LikelihoodSettings) -> np.ndarray:
    """The Heun grid from ``t0`` to ``t1`` (either direction), ``settings.steps`` points."""
    if settings.schedule == "uniform":
        return np.linspace(t0, t1, settings.steps)
    from lftml.diffusion.sampling import time_grid

    ts = time_grid(sde, settings.steps, "edm", dtype=torch.float64).numpy()  # 1 -> eps
    ts = ts if t0 > t1 else ts[::-1].copy()
    ts[0], ts[-1] = t0, t1
    return ts


def integrate_pf_ode(score_fn: ScoreFn, sde: VESDE, x: torch.Tensor, t0: float, t1: float, settings: LikelihoodSettings,
               probes, *, times: np.ndarray | None = None, divergence: bool = True,
               callback=None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Integrate the PF-ODE from t0 to t1; returns ``(x(t1), int_{t0}^{t1} div f dt, nfe)``.

    The one Heun integrator of the package (also behind ``sample(sampler="ode")``, which passes its
    ``times`` grid, ``divergence=False`` and a snapshot ``callback(t, x)``)."""
    exact = settings.probe == "exact"
    n = x.shape[0]
    shape = x.shape
    nfe = 0
    if settings.solver == "heun" or times is not None:
        ts = np.asarray(times, dtype=np.float64) if times is not None else _heun_times(sde, t0, t1, settings)
        integral = torch.zeros(n, dtype=torch.float64, device=x.device) if divergence else None
        f0, d0 = _drift_and_div(score_fn, sde, x, ts[0], probes, exact, divergence)
        nfe += 1
        for k in range(len(ts) - 1):
            h = float(ts[k + 1] - ts[k])
            xe = x + h * f0
            f1, d1 = _drift_and_div(score_fn, sde, xe, ts[k + 1], probes, exact, divergence)
            nfe += 1
            x = x + 0.5 * h * (f0 + f1)
            if divergence:
                integral = integral + 0.5 * h * (d0 + d1)
            if callback is not None:
                callback(float(ts[k + 1]), x)
            if k + 2 < len(ts):
                f0, d0 = _drift_and_div(score_fn, sde, x, ts[k + 1], probes, exact, divergence)
                nfe += 1
        return x, integral, nfe
    from scipy.integrate import solve_ivp

    dtype, device = x.dtype, x.device
    m = x[0].numel()

    def rhs(t, y):
        nonlocal nfe
        nfe += 1
        xx = torch.as_tensor(y[: n * m], dtype=dtype, device=device).reshape(shape)
        f, d = _drift_and_div(score_fn, sde, xx, t, probes, exact)
        return np.concatenate([f.reshape(-1).cpu().numpy().astype(np.float64), d.cpu().numpy()])

    y0 = np.concatenate([x.reshape(-1).cpu().numpy().astype(np.float64), np.zeros(n)])
    sol = solve_ivp(rhs, (t0, t1), y0, rtol=settings.rtol, atol=settings.atol, method="RK45")
    if not sol.success:
        raise LftmlError(f"probability-flow ODE failed: {sol.message}; loosen --rtol/--atol")
    y = sol.y[:, -1]
    xe = torch.as_tensor(y[: n * m], dtype=dtype, device=device).reshape(shape)
    return xe, torch.as_tensor(y[n * m :], dtype=torch.float64), nfe


def pf_ode_prior(score_fn, sde: VESDE):
    """``(log_prob, sample)`` of the prior at t = 1: ``N(0, C + sigma_max^2)`` when the score has an
    analytic Gaussian part with per-mode variance ``c_p`` (exact for that part), the mixture
    ``1/2 N(+-mu, C + sigma_max^2)`` when that part is a sign-aligned mixture (``analytic_vacuum``),
    else ``N(0, sigma_max^2)``."""
    c = score_fn.analytic_power_spectrum() if hasattr(score_fn, "analytic_power_spectrum") else None
    if c is None:
        return sde.prior_log_prob, sde.prior_sample
    from lftml.diffusion.baselines import GaussianBaseline, MixtureBaseline
    from lftml.diffusion.sampling import color_noise

    gauss = GaussianBaseline(torch.as_tensor(c, dtype=torch.float64).cpu() + sde.sigma_max**2)  # symmetrises c
    var = gauss.power_spectrum
    vac = score_fn.analytic_vacuum() if hasattr(score_fn, "analytic_vacuum") else None
    density = gauss if vac is None else MixtureBaseline(GaussianBaseline(var, vac))

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return density.log_prob(x.to(torch.float64).cpu())

    def sample(shape, generator, dtype=torch.float32, device="cpu"):
        z = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        x = color_noise(z, torch.sqrt(var), tuple(range(1, len(shape))))
        if vac is not None:
            u = torch.rand(shape[0], generator=generator, dtype=torch.float64, device=generator.device).cpu()
            x = x + torch.where(u < 0.5, vac, -vac).reshape(-1, *([1] * (len(shape) - 1)))
        return x.to(dtype=dtype, device=device)

    return log_prob, sample


def log_likelihood(score_fn: ScoreFn, sde: VESDE, x0: torch.Tensor, *, settings: LikelihoodSettings = LikelihoodSettings(),
                   generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """``log q(x0)`` per configuration (model units, float64) of the model's ``t = eps`` distribution.

    Returns ``(log_q, info)`` with ``info = {"nfe", "prior_log_prob", "divergence_integral"}``."""
    probes = _draw_probes(tuple(x0.shape), settings, generator, x0.dtype, x0.device)
    x1, integral, nfe = integrate_pf_ode(score_fn, sde, x0, sde.eps, 1.0, settings, probes)
    prior = pf_ode_prior(score_fn, sde)[0](x1.to(torch.float64)).cpu()
    return prior + integral.cpu(), {"nfe": nfe, "prior_log_prob": prior, "divergence_integral": integral.cpu()}


def sample_with_log_likelihood(score_fn: ScoreFn, sde: VESDE, shape: tuple[int, ...], *,
                               settings: LikelihoodSettings = LikelihoodSettings(solver="heun"),
                               generator: torch.Generator, dtype=torch.float32, device="cpu"
                               ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Draw ``x(1)`` from the prior, integrate the PF-ODE to ``eps``; returns ``(x, log_q, info)``."""
    prior_log_prob, prior_sample = pf_ode_prior(score_fn, sde)
    x1 = prior_sample(shape, generator, dtype=dtype, device=device)
    probes = _draw_probes(shape, settings, generator, dtype, device)
    x0, integral, nfe = integrate_pf_ode(score_fn, sde, x1, 1.0, sde.eps, settings, probes)
    prior = prior_log_prob(x1.to(torch.float64)).cpu()
    return x0, prior - integral.cpu(), {"nfe": nfe}


def model_log_likelihood(model, phi: np.ndarray | torch.Tensor, *, settings: LikelihoodSettings = LikelihoodSettings(),
                         seed: int = 0, batch_size: int = 64, device="cpu", progress: bool = False) -> np.ndarray:
    """``log q(phi)`` (engine units, density of phi) for configurations ``(n, *lattice_shape)``."""
    phi = torch.as_tensor(np.asarray(phi), dtype=torch.float64)
    model.check_input(phi)
    g = torch_generator(seed, "likelihood")
    out = []
    it = range(0, phi.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="log q", unit="batch")
    for i in it:
        x = model.scaling.to_model(phi[i : i + batch_size]).to(torch.float32).to(device)
        lq, _ = log_likelihood(model, model.sde, x, settings=settings, generator=g)
        out.append(lq.numpy() + model.scaling.log_jacobian(model.volume))
    return np.concatenate(out)


def model_sample_with_log_likelihood(model, n: int, *, settings: LikelihoodSettings = LikelihoodSettings(solver="heun", steps=100),
                                     seed: int = 0, batch_size: int = 64, device="cpu",
                                     progress: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` PF-ODE samples (engine units, float64) with their ``log q(phi)``, and the wall time."""
    g = torch_generator(seed, "sampling")
    xs, lqs = [], []
    t0 = time.perf_counter()
    it = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="sample + log q", unit="batch")
    for i in it:
        b = min(batch_size, n - i)
        x, lq, _ = sample_with_log_likelihood(model, model.sde, (b, *model.lattice_shape), settings=settings,
                                              generator=g, device=device)
        xs.append(model.scaling.to_data(x).to(torch.float64).cpu().numpy())
        lqs.append(lq.numpy() + model.scaling.log_jacobian(model.volume))
    return np.concatenate(xs), np.concatenate(lqs), time.perf_counter() - t0


def action_vs_log_q(action: np.ndarray, log_q: np.ndarray) -> dict:
    """Least-squares fit ``-log q = slope * S + intercept`` with R^2: the learned effective action
    against the true one (slope 1 and R^2 = 1 for a perfect model, since log q = -S - log Z)."""
    S = np.asarray(action, dtype=float)
    y = -np.asarray(log_q, dtype=float)
    ok = np.isfinite(S) & np.isfinite(y)
    S, y = S[ok], y[ok]
    if len(S) < 3:
        raise LftmlError("need at least 3 configurations for the S vs -log q fit")
    A = np.column_stack([S, np.ones_like(S)])
    (slope, intercept), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (slope * S + intercept)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else float("nan")
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "n": int(len(S)),
            "log_z_estimate": float(-intercept) if abs(slope - 1) < 0.05 else None}


def plot_action_vs_log_q(action: np.ndarray, log_q: np.ndarray, ax=None, fit: dict | None = None):
    """Scatter of ``-log q`` against ``S`` with the fitted line; returns ``ax``."""
    from lftml.plots import pyplot

    plt = pyplot()

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    fit = fit or action_vs_log_q(action, log_q)
    ax.scatter(action, -np.asarray(log_q), s=6, alpha=0.5)
    xs = np.linspace(np.min(action), np.max(action), 2)
    ax.plot(xs, fit["slope"] * xs + fit["intercept"], color="C1",
            label=f"slope {fit['slope']:.3f}, $R^2$ = {fit['r2']:.3f}")
    ax.set_xlabel(r"$S(\phi)$")
    ax.set_ylabel(r"$-\log q(\phi)$")
    ax.legend(frameon=False)
    return ax
