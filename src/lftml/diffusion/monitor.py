r"""What a trained score model has learned beyond its analytic part, measured on held-out data.

* :func:`likelihood_gain` — the held-out gain of the path-space ELBO (nats per configuration) of
  ``score = analytic + network`` over ``score = analytic`` (the network switched off). With the
  likelihood (``g^2``) weighting the score-matching loss is, up to a model-independent constant,
  ``(1/2) int g^2 E |score - grad log p_t|^2 dt``, the KL bound of the diffusion model; the
  difference of the two models' losses is therefore the difference of their bounds, whatever
  unbiased target is used. Both models see the *same* ``(t, z)`` draws (paired), and the
  per-configuration differences are analysed with the Gamma method over (configurations, chains).
  The blended target (force of the held-out configurations, see :mod:`lftml.diffusion.losses`)
  makes the pairs far less noisy than plain DSM.
* :func:`gain_ceiling` — ``KL(p || q)`` of the exact target ``p = exp(-S)/Z`` and an analytic part
  ``q`` with an exact log density (the data-fitted Gaussian or the sign-aligned mixture of
  :mod:`lftml.diffusion.baselines`): the largest held-out gain over ``q`` that *any* model can have.
  With the likelihood weighting the analytic part's ELBO is ``E_p log q`` (its score is the exact
  score of ``q`` diffused), and a model's ELBO is at most ``E_p log p``, so
  ``gain <= E_p[log p - log q] = KL(p || q)``. Computed as ``E_p[-S - log q] - log Z`` with the
  expectation over held-out configurations of ``p`` (Gamma method) and
  ``log Z = log E_q[exp(-S - log q)]`` by importance sampling from ``q`` (exact: both densities
  are known; its error by the delta method, its bias ``-err^2/2`` is negligible when it is small).
* :func:`site_kurtosis` — ``<phi^4> / <phi^2>^2`` over all sites (3 for every Gaussian), with a
  Gamma-method error (derived observable, configurations as the Monte Carlo axis).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lftml.diffusion.losses import nats_per_unit_loss, per_config_loss, loss_weight, sample_times
from lftml.errors import LftmlError

__all__ = ["likelihood_gain", "gain_ceiling", "site_kurtosis", "model_force"]


def model_force(theory: dict | None, phi: np.ndarray, scale: float) -> np.ndarray | None:
    """The force ``-dS/dphi`` of ``phi`` (engine units) in model units ``force / scale``; ``None``
    without a theory."""
    if theory is None:
        return None
    from lftml.theories import theory_from_dict

    th = theory_from_dict(theory)
    f = th.force(torch.as_tensor(np.asarray(phi), dtype=torch.float64)).numpy()
    return f / scale


@torch.no_grad()
def likelihood_gain(model, phi: np.ndarray, *, force: np.ndarray | None = None, draws: int = 8, seed: int = 0,
                    t_sampling: str = "low", batch_size: int = 256, chains_axis: bool = False) -> dict:
    """Held-out ELBO gain (nats/configuration) of ``model`` over its own analytic part.

    ``phi``: held-out configurations, engine units, ``(n, *lattice)`` or, with ``chains_axis``,
    ``(n_configs, n_chains, *lattice)`` (then the Gamma method sees the chains). ``force``: their
    force (engine units); default: from ``model.theory`` (``None`` falls back to plain DSM).
    Returns ``{"value", "error", "tau_int", "z", "loss_analytic_nats", "draws", "n", "target",
    "t_sampling"}``. Only the average over configurations is the ELBO difference: per configuration
    the blended target is unbiased only on average, and the ELBO is not ``log p_model(x)``, so the
    per-configuration terms cannot be paired with per-configuration log densities (tried: the
    noise of ``gain_i`` and of ``log p(x_i) - log q(x_i)`` does not cancel)."""
    from lftml.stats import gamma_method

    phi = np.asarray(phi)
    shape2 = phi.shape[:2] if chains_axis else (phi.shape[0], 1)
    flat = phi.reshape(-1, *model.lattice_shape)
    scale = model.scaling.scale
    dev = next(model.net.parameters()).device
    f_model = None
    if force is not None:
        f_model = np.asarray(force).reshape(flat.shape) / scale
    elif model.theory is not None:
        f_model = model_force(model.theory, flat, scale)
    x_all = torch.as_tensor(flat, dtype=torch.float32) * scale
    f_all = None if f_model is None else torch.as_tensor(f_model, dtype=torch.float32)
    ps = model.power_spectrum if model.power_spectrum is not None else model.estimate_power_spectrum(x_all).float()
    ps = ps.to(dev)
    g = torch.Generator().manual_seed(int(seed))
    sd = float(model.sigma_data)
    diff = torch.zeros(flat.shape[0], dtype=torch.float64)
    la = torch.zeros(flat.shape[0], dtype=torch.float64)
    was_training = model.training
    model.eval()

    def analytic_only(x, t):
        a, _ = model.score_parts(x, t)
        return a if a is not None else torch.zeros_like(x)

    for _ in range(draws):
        for i in range(0, flat.shape[0], batch_size):
            x0 = x_all[i:i + batch_size].to(dev)
            f0 = None if f_all is None else f_all[i:i + batch_size].to(dev)
            n = x0.shape[0]
            t = sample_times(n, model.sde, g, t_sampling, sigma_low=sd)
            z = torch.randn(x0.shape, generator=g)
            w = loss_weight(t, model.sde, "likelihood", t_sampling, sd, sd)
            t, z = t.to(dev), z.to(dev)
            l0 = per_config_loss(analytic_only, x0, t, z, model.sde, force0=f0, power_spectrum=ps).double().cpu()
            l1 = per_config_loss(model, x0, t, z, model.sde, force0=f0, power_spectrum=ps).double().cpu()
            diff[i:i + n] += w * (l0 - l1) / draws
            la[i:i + n] += w * l0 / draws
    if was_training:
        model.train()
    nats = nats_per_unit_loss(model.sde, model.volume)
    est = gamma_method((diff * nats).numpy().reshape(shape2))
    return {"value": est.value, "error": est.error, "tau_int": est.tau_int,
            "z": est.value / est.error if est.error > 0 else float("inf"),
            "loss_analytic_nats": float(la.mean() * nats), "draws": draws, "n": int(flat.shape[0]),
            "target": "tsm" if f_all is not None else "dsm", "t_sampling": t_sampling}


def gain_ceiling(baseline, theory, phi: np.ndarray, *, n_samples: int = 20000, seed: int = 0,
                 chains_axis: bool = False, batch_size: int = 2000) -> dict:
    """``KL(p || q)`` in nats per configuration (see the module docstring), with its error.

    ``baseline``: anything with ``sample(n, generator)`` and an exact ``log_prob`` in engine units
    (:class:`~lftml.diffusion.baselines.GaussianBaseline`, ``MixtureBaseline``, or
    ``GaussianBaseline.from_model(model)`` for a model's own analytic part); ``theory``: the target's
    action; ``phi``: held-out configurations of ``p``, ``(n, *lattice)`` or, with ``chains_axis``,
    ``(n_configs, n_chains, *lattice)``. Returns ``{"value", "error", "e_p", "e_p_error", "log_z",
    "log_z_error", "ess_fraction", "kl_reverse", "jeffreys", "n_samples", "n"}`` (``e_p`` =
    ``E_p[-S - log q]``; ``ess_fraction`` that of q's importance weights; ``kl_reverse = KL(q || p)``
    without an error; ``jeffreys`` the sum of the two KLs, which needs no ``log Z``). Where q's
    ESS/N is small (near kappa_c: 1e-3) ``log Z`` is probably underestimated and the ceiling high.
    """
    from lftml.stats import ess_fraction, gamma_method

    if n_samples < 2:
        raise LftmlError(f"gain_ceiling needs n_samples >= 2, got {n_samples}")
    phi = np.asarray(phi, dtype=np.float64)
    shape2 = phi.shape[:2] if chains_axis else (phi.shape[0], 1)
    flat = torch.as_tensor(phi.reshape(-1, *baseline.lattice_shape))

    def log_ratio(x: torch.Tensor) -> np.ndarray:  # -S - log q per configuration
        return (-theory.action(x) - baseline.log_prob(x)).numpy()

    a = np.concatenate([log_ratio(flat[i:i + batch_size]) for i in range(0, flat.shape[0], batch_size)])
    ep = gamma_method(a.reshape(shape2))
    g = torch.Generator().manual_seed(int(seed))
    w = np.concatenate([log_ratio(baseline.sample(min(batch_size, n_samples - i), g))
                        for i in range(0, n_samples, batch_size)])
    m = float(w.max())
    r = np.exp(w - m)
    log_z = m + math.log(float(r.mean()))
    log_z_error = float(r.std(ddof=1) / r.mean()) / math.sqrt(len(r))
    return {"value": ep.value - log_z, "error": math.hypot(ep.error, log_z_error), "e_p": ep.value,
            "e_p_error": ep.error, "log_z": log_z, "log_z_error": log_z_error,
            "ess_fraction": ess_fraction(w),
            "kl_reverse": log_z - float(w.mean()), "jeffreys": ep.value - float(w.mean()),
            "n_samples": int(n_samples), "n": int(flat.shape[0])}


def site_kurtosis(phi: np.ndarray) -> dict:
    """``<phi^4> / <phi^2>^2`` over sites with a Gamma-method error (configurations = MC time)."""
    from lftml.stats import gamma_method_derived

    phi = np.asarray(phi, dtype=np.float64)
    flat = phi.reshape(phi.shape[0], -1)
    m2 = (flat**2).mean(axis=1)
    m4 = (flat**4).mean(axis=1)
    est = gamma_method_derived(lambda a, b: b / a**2, m2, m4)
    return {"value": est.value, "error": est.error}
