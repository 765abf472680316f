r"""The Gaussian-Gaussian (scalar-field) restricted Boltzmann machine as a lattice field theory.

Conventions
-----------
Visible field ``phi`` (N_v sites, optionally reshaped to a lattice), hidden field ``h`` (N_h
nodes), weights ``W`` of shape ``(N_v, N_h)``, hidden bias ``eta`` (N_h,), masses ``mu_i^2``::

    S(phi, h) = sum_i mu_i^2 phi_i^2 / 2 + sum_a (h_a - eta_a)^2 / (2 sigma_h^2) - sum_{i,a} phi_i W_ia h_a

``sigma_h`` is a fixed hyperparameter (default 1; only the combination ``sigma_h W`` is physical
for eta = 0). Integrating out ``h`` gives a Gaussian theory for ``phi``::

    K = diag(mu^2) - sigma_h^2 W W^T,        J = W eta,
    log p(phi) = -phi^T K phi / 2 + J.phi - J^T K^{-1} J / 2 + log det K / 2 - (N_v/2) log 2 pi

(normalised; requires K positive definite). The conditionals used by block Gibbs sampling are
``h | phi ~ N(eta + sigma_h^2 W^T phi, sigma_h^2)`` and ``phi_i | h ~ N((W h)_i / mu_i^2, 1/mu_i^2)``.

Masses: ``mu2_mode = "fixed"`` (mu^2 a constant, scalar or per site), ``"global"`` (one learned
value) or ``"site"`` (learned per site). Learned masses are parametrised by ``mu = sqrt(mu^2)``
(as in the reference code of Park, Lucini, Aarts), so ``mu^2 > 0`` automatically.

Fields passed to methods are ``(n_chains, N_v)`` or ``(n_chains, *lattice_shape)``; outputs keep
the lattice shape when the model has one.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch

from lftml.errors import LftmlError

__all__ = ["GaussianRBM", "MU2_MODES", "moment_gradients", "sample_gradients", "gaussian_log_likelihood"]

MU2_MODES: tuple[str, ...] = ("fixed", "global", "site")
Mu2Mode = Literal["fixed", "global", "site"]


def _as_tensor(x: object, dtype: torch.dtype, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=dtype)
    except (TypeError, ValueError):
        raise LftmlError(f"{name} must be numeric, got {type(x).__name__}") from None
    if not torch.isfinite(t).all():
        raise LftmlError(f"{name} contains NaN or infinite values")
    return t


class GaussianRBM(torch.nn.Module):
    """Gaussian-Gaussian RBM with weights ``W`` (N_v, N_h); see the module docstring for the action.

    Parameters
    ----------
    n_visible, n_hidden:
        Number of visible sites N_v and hidden nodes N_h (both >= 1).
    mu2:
        Initial (or fixed) mass squared: a number or a per-site array (N_v,). For learned global
        mu^2 a per-site value is not allowed.
    mu2_mode:
        ``"fixed"``, ``"global"`` (one learned mu^2) or ``"site"`` (learned per site).
    sigma_h:
        Fixed width of the hidden Gaussian.
    weights:
        Initial W (N_v, N_h). If omitted, ``W ~ N(0, init_std^2)`` drawn from ``generator``.
    eta:
        Hidden bias (N_h,), zero by default; trained only when ``learn_eta``.
    lattice_shape:
        Lattice on which the visible field lives (product must be N_v); ``(N_v,)`` by default.
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        mu2: float | Sequence[float] | np.ndarray | torch.Tensor = 9.0,
        mu2_mode: Mu2Mode = "fixed",
        sigma_h: float = 1.0,
        weights: np.ndarray | torch.Tensor | None = None,
        eta: np.ndarray | torch.Tensor | None = None,
        learn_eta: bool = False,
        init_std: float = 0.1,
        generator: torch.Generator | None = None,
        lattice_shape: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        n_visible, n_hidden = int(n_visible), int(n_hidden)
        if n_visible < 1:
            raise LftmlError(f"the RBM needs n_visible >= 1 visible sites, got {n_visible}")
        if n_hidden < 1:
            raise LftmlError(f"the RBM needs n_hidden >= 1 hidden nodes (--hidden), got {n_hidden}")
        if mu2_mode not in MU2_MODES:
            raise LftmlError(f"mu2_mode must be one of {MU2_MODES}, got {mu2_mode!r}")
        sigma_h = float(sigma_h)
        if not math.isfinite(sigma_h) or sigma_h <= 0:
            raise LftmlError(f"sigma_h must be a positive number, got {sigma_h}")
        if lattice_shape is None:
            lattice_shape = (n_visible,)
        lattice_shape = tuple(int(s) for s in lattice_shape)
        if int(np.prod(lattice_shape)) != n_visible:
            raise LftmlError(f"lattice_shape {lattice_shape} has {int(np.prod(lattice_shape))} sites, expected n_visible = {n_visible}")
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        self.sigma_h = sigma_h
        self.mu2_mode: str = mu2_mode
        self.learn_eta = bool(learn_eta)
        self.lattice_shape: tuple[int, ...] = lattice_shape

        mu2_t = _as_tensor(mu2, dtype, "mu2")
        if mu2_t.ndim > 1 or (mu2_t.ndim == 1 and mu2_t.shape[0] != n_visible):
            raise LftmlError(f"mu2 must be a number or an array of N_v = {n_visible} values, got shape {tuple(mu2_t.shape)}")
        if (mu2_t <= 0).any():
            raise LftmlError(f"mu2 must be positive, got {mu2_t.tolist()}")
        if mu2_mode == "global" and mu2_t.ndim == 1:
            if not torch.all(mu2_t == mu2_t[0]):
                raise LftmlError("a learned global mu2 needs one number, got a per-site array; use mu2_mode='site'")
            mu2_t = mu2_t[0]
        if mu2_mode == "site" and mu2_t.ndim == 0:
            mu2_t = mu2_t.expand(n_visible).clone()
        if mu2_mode == "fixed":
            self.register_buffer("_mu2_fixed", mu2_t.clone())
            self.mu = None
        else:
            self.register_buffer("_mu2_fixed", None)
            self.mu = torch.nn.Parameter(torch.sqrt(mu2_t).clone())

        if weights is None:
            if generator is None:
                raise LftmlError("give either initial weights or a torch.Generator to draw them from")
            w = torch.randn((n_visible, n_hidden), generator=generator, dtype=dtype) * float(init_std)
        else:
            w = _as_tensor(weights, dtype, "weights").clone()
            if tuple(w.shape) != (n_visible, n_hidden):
                raise LftmlError(f"weights must have shape (N_v, N_h) = ({n_visible}, {n_hidden}), got {tuple(w.shape)}")
        self.W = torch.nn.Parameter(w)
        if eta is None:
            e = torch.zeros(n_hidden, dtype=dtype)
        else:
            e = _as_tensor(eta, dtype, "eta").clone()
            if tuple(e.shape) != (n_hidden,):
                raise LftmlError(f"eta must have shape (N_h,) = ({n_hidden},), got {tuple(e.shape)}")
        self.eta = torch.nn.Parameter(e, requires_grad=self.learn_eta)

    # ------------------------------------------------------------------ parameters
    @property
    def dtype(self) -> torch.dtype:
        return self.W.dtype

    @property
    def mu2(self) -> torch.Tensor:
        """mu^2: shape () for fixed-uniform and learned-global, (N_v,) for per-site."""
        if self._mu2_fixed is not None:
            return self._mu2_fixed
        return self.mu * self.mu

    def mu2_vector(self) -> torch.Tensor:
        """mu_i^2 for every site, shape (N_v,)."""
        return self.mu2.expand(self.n_visible)

    def mu2_value(self) -> float | list[float]:
        """mu^2 as a number (uniform) or a list (per site) -- the JSON representation."""
        m = self.mu2.detach()
        return float(m) if m.ndim == 0 else [float(v) for v in m]

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The parameters that training updates, by name (``W``, optionally ``mu``, ``eta``)."""
        out: dict[str, torch.nn.Parameter] = {"W": self.W}
        if self.mu is not None:
            out["mu"] = self.mu
        if self.learn_eta:
            out["eta"] = self.eta
        return out

    # ------------------------------------------------------------------ induced theory
    def kernel(self) -> torch.Tensor:
        """K = diag(mu^2) - sigma_h^2 W W^T, shape (N_v, N_v)."""
        return torch.diag(self.mu2_vector()) - self.sigma_h**2 * (self.W @ self.W.T)

    def source(self) -> torch.Tensor:
        """J = W eta, shape (N_v,)."""
        return self.W @ self.eta

    def kernel_cholesky(self) -> torch.Tensor:
        """Lower Cholesky factor of K; LftmlError if K is not positive definite."""
        K = self.kernel()
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) != 0:
            lam_min = float(torch.linalg.eigvalsh(K.detach())[0])
            raise LftmlError(
                f"the induced kernel K = diag(mu^2) - sigma_h^2 W W^T is not positive definite (smallest eigenvalue "
                f"{lam_min:.4g}): p(phi) is not normalisable; raise mu^2 or shrink W"
            )
        return L

    def check_positive_definite(self) -> None:
        """Raise LftmlError unless K is positive definite."""
        self.kernel_cholesky()

    def log_det_kernel(self) -> torch.Tensor:
        return 2.0 * torch.log(torch.diagonal(self.kernel_cholesky())).sum()

    def propagator(self) -> torch.Tensor:
        """Connected two-point function K^{-1} (N_v, N_v)."""
        L = self.kernel_cholesky()
        return torch.cholesky_inverse(L)

    def mean(self) -> torch.Tensor:
        """<phi> = K^{-1} J (N_v,)."""
        L = self.kernel_cholesky()
        return torch.cholesky_solve(self.source().unsqueeze(-1), L).squeeze(-1)

    def second_moment(self) -> torch.Tensor:
        """<phi phi^T> = K^{-1} + <phi><phi>^T."""
        mean = self.mean()
        return self.propagator() + torch.outer(mean, mean)

    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of K, ascending (numpy)."""
        return torch.linalg.eigvalsh(self.kernel().detach()).numpy()

    def singular_values(self) -> np.ndarray:
        """Singular values xi of W, descending (numpy)."""
        return torch.linalg.svdvals(self.W.detach()).numpy()

    # ------------------------------------------------------------------ fields
    def _flat(self, phi: torch.Tensor | np.ndarray, name: str = "phi") -> torch.Tensor:
        phi = torch.as_tensor(phi, dtype=self.dtype)
        if tuple(phi.shape[1:]) == self.lattice_shape or (phi.ndim == 2 and phi.shape[1] == self.n_visible):
            return phi.reshape(phi.shape[0], self.n_visible)
        raise LftmlError(
            f"{name} has shape {tuple(phi.shape)}; expected (n_chains, {self.n_visible}) or (n_chains, *{self.lattice_shape})"
        )

    def _unflat(self, phi: torch.Tensor) -> torch.Tensor:
        return phi.reshape(*phi.shape[:-1], *self.lattice_shape)

    def log_prob(self, phi: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Normalised log p(phi) per configuration, shape (n_chains,)."""
        x = self._flat(phi)
        K = self.kernel()
        J = self.source()
        L = self.kernel_cholesky()
        KinvJ = torch.cholesky_solve(J.unsqueeze(-1), L).squeeze(-1)
        quad = 0.5 * torch.einsum("ni,ij,nj->n", x, K, x)
        const = -0.5 * J @ KinvJ + torch.log(torch.diagonal(L)).sum() - 0.5 * self.n_visible * math.log(2 * math.pi)
        return -quad + x @ J + const

    def action(self, phi: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Induced visible action S(phi) = phi^T K phi/2 - J.phi (no constant), shape (n_chains,)."""
        x = self._flat(phi)
        return 0.5 * torch.einsum("ni,ij,nj->n", x, self.kernel(), x) - x @ self.source()

    def force(self, phi: torch.Tensor | np.ndarray) -> torch.Tensor:
        """-dS/dphi = -K phi + J, with the shape of ``phi``."""
        x = self._flat(phi)
        f = -x @ self.kernel() + self.source()
        return f.reshape(torch.as_tensor(phi).shape)

    def joint_action(self, phi: torch.Tensor | np.ndarray, h: torch.Tensor) -> torch.Tensor:
        """S(phi, h) per chain."""
        x = self._flat(phi)
        return (
            0.5 * (self.mu2_vector() * x * x).sum(-1)
            + ((h - self.eta) ** 2).sum(-1) / (2 * self.sigma_h**2)
            - torch.einsum("ni,ia,na->n", x, self.W, h)
        )

    def log_likelihood(self, correlator: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """Exact average log-likelihood <log p(phi)> over a distribution with second moment
        ``correlator`` = <phi phi^T> (N_v, N_v) and mean ``mean`` (N_v,) (differentiable)."""
        return gaussian_log_likelihood(self.kernel(), self.source(), correlator, mean)

    # ------------------------------------------------------------------ Gibbs sampling
    @torch.no_grad()
    def sample_hidden(self, phi: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw h ~ p(h | phi) = N(eta + sigma_h^2 W^T phi, sigma_h^2); phi (n, N_v) -> h (n, N_h)."""
        x = self._flat(phi)
        mean = self.eta + self.sigma_h**2 * (x @ self.W)
        return mean + self.sigma_h * torch.randn(mean.shape, generator=generator, dtype=self.dtype)

    @torch.no_grad()
    def sample_visible(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw phi ~ p(phi | h) = N(W h / mu^2, 1/mu^2) per site; h (n, N_h) -> phi (n, N_v)."""
        mu2 = self.mu2_vector()
        mean = (h @ self.W.T) / mu2
        return mean + torch.randn(mean.shape, generator=generator, dtype=self.dtype) / torch.sqrt(mu2)

    @torch.no_grad()
    def gibbs(self, phi: torch.Tensor, n_sweeps: int, generator: torch.Generator) -> torch.Tensor:
        """``n_sweeps`` block-Gibbs sweeps phi -> h -> phi; input and output (n_chains, N_v)."""
        x = self._flat(phi)
        for _ in range(int(n_sweeps)):
            x = self.sample_visible(self.sample_hidden(x, generator), generator)
        return x

    @torch.no_grad()
    def sample_exact(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` independent exact draws from p(phi) (Cholesky of K), shape (n, *lattice_shape)."""
        if n < 1:
            raise LftmlError(f"number of samples must be >= 1, got {n}")
        L = self.kernel_cholesky()
        z = torch.randn((self.n_visible, n), generator=generator, dtype=self.dtype)
        # K = L L^T  =>  phi = L^{-T} z has covariance K^{-1}
        x = torch.linalg.solve_triangular(L.T, z, upper=True).T + self.mean()
        return self._unflat(x)

    @torch.no_grad()
    def sample(
        self,
        n_configs: int,
        n_chains: int,
        generator: torch.Generator,
        *,
        n_therm: int = 100,
        every: int = 1,
        start: torch.Tensor | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Block-Gibbs Markov chains: history (n_configs, n_chains, *lattice_shape).

        ``n_therm`` sweeps are discarded, then one configuration is kept every ``every`` sweeps.
        Chains start at zero unless ``start`` (n_chains, N_v) is given.
        """
        if n_configs < 1 or n_chains < 1:
            raise LftmlError(f"need n_configs >= 1 and n_chains >= 1, got {n_configs}, {n_chains}")
        if n_therm < 0 or every < 1:
            raise LftmlError(f"need n_therm >= 0 and every >= 1, got {n_therm}, {every}")
        self.check_positive_definite()
        x = torch.zeros((n_chains, self.n_visible), dtype=self.dtype) if start is None else self._flat(start)
        x = self.gibbs(x, n_therm, generator)
        out = torch.empty((n_configs, n_chains, self.n_visible), dtype=self.dtype)
        it = range(n_configs)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="gibbs", leave=False)
        for t in it:
            x = self.gibbs(x, every, generator)
            out[t] = x
        return self._unflat(out)

    # ------------------------------------------------------------------ hidden symmetry
    @torch.no_grad()
    def rotate_hidden(self, rotation: torch.Tensor | np.ndarray) -> "GaussianRBM":
        """A copy with W -> W O and eta -> O^T eta (O orthogonal N_h x N_h): the hidden O(N_h)
        symmetry, which leaves K, J and every visible observable unchanged."""
        O = torch.as_tensor(rotation, dtype=self.dtype)
        if tuple(O.shape) != (self.n_hidden, self.n_hidden):
            raise LftmlError(f"rotation must be ({self.n_hidden}, {self.n_hidden}), got {tuple(O.shape)}")
        if not torch.allclose(O.T @ O, torch.eye(self.n_hidden, dtype=self.dtype), atol=1e-10):
            raise LftmlError("rotation is not orthogonal (O^T O != 1)")
        new = self.copy()
        new.W.copy_(self.W @ O)
        new.eta.copy_(O.T @ self.eta)
        return new

    def copy(self) -> "GaussianRBM":
        """A deep copy with the same settings and parameter values."""
        import copy

        return copy.deepcopy(self)

    def config(self) -> dict:
        """Settings (JSON-serialisable) needed to rebuild the model together with its tensors."""
        return {
            "n_visible": self.n_visible,
            "n_hidden": self.n_hidden,
            "mu2_mode": self.mu2_mode,
            "sigma_h": self.sigma_h,
            "learn_eta": self.learn_eta,
            "lattice_shape": list(self.lattice_shape),
        }


def gaussian_log_likelihood(
    K: torch.Tensor, J: torch.Tensor, correlator: torch.Tensor, mean: torch.Tensor | None = None
) -> torch.Tensor:
    """<log p(phi)> for p(phi) ∝ exp(-phi^T K phi/2 + J.phi) (normalised) over data with
    <phi phi^T> = ``correlator`` and <phi> = ``mean``:
    ``-tr(K C)/2 + J.m - J^T K^-1 J/2 + log det K/2 - (N/2) log 2 pi``."""
    n = K.shape[0]
    L, info = torch.linalg.cholesky_ex(K)
    if int(info) != 0:
        raise LftmlError("the induced kernel K is not positive definite: the log-likelihood is undefined; raise mu^2 or shrink W")
    if mean is None:
        mean = torch.zeros(n, dtype=K.dtype)
    KinvJ = torch.cholesky_solve(J.unsqueeze(-1), L).squeeze(-1)
    return (
        -0.5 * torch.sum(K * correlator)
        + J @ mean
        - 0.5 * J @ KinvJ
        + torch.log(torch.diagonal(L)).sum()
        - 0.5 * n * math.log(2 * math.pi)
    )


def moment_gradients(
    model: GaussianRBM,
    data_second_moment: torch.Tensor,
    data_mean: torch.Tensor,
    model_second_moment: torch.Tensor,
    model_mean: torch.Tensor,
) -> dict[str, torch.Tensor]:
    r"""Gradient of the average log-likelihood L = <log p(phi)>_data (ascent direction).

    With ``C = <phi phi^T>``, ``m = <phi>``, and model moments ``M2``, ``mu_phi``
    (exact: ``M2 = K^-1 + K^-1 J J^T K^-1``; PCD/CD: chain averages), using
    ``dL/dK = -(C - M2)/2`` and ``dL/dJ = m - mu_phi``::

        dL/dW     = sigma_h^2 (C - M2) W + (m - mu_phi) eta^T
        dL/deta   = W^T (m - mu_phi)
        dL/dmu_i^2 = -(C_ii - M2_ii)/2            (per site: the *diagonal* of the correlators)
        dL/dmu^2  = -(tr C - tr M2)/2             (global)
        dL/dmu    = 2 mu dL/dmu^2

    These are also <-dS/dtheta>_data - <-dS/dtheta>_model with h integrated out given phi
    (Rao-Blackwellised CD estimator). Returns gradients keyed like ``trainable_parameters``.
    """
    G = data_second_moment - model_second_moment
    dm = data_mean - model_mean
    out: dict[str, torch.Tensor] = {}
    out["W"] = model.sigma_h**2 * (G @ model.W) + torch.outer(dm, model.eta)
    if model.learn_eta:
        out["eta"] = model.W.T @ dm
    if model.mu is not None:
        diag = torch.diagonal(G)
        if model.mu2_mode == "site":
            dmu2 = -0.5 * diag
        else:
            dmu2 = -0.5 * diag.sum()
        out["mu"] = 2.0 * model.mu * dmu2
    return {k: v.detach() for k, v in out.items()}


def sample_gradients(
    model: GaussianRBM,
    model_samples: torch.Tensor,
    *,
    data_samples: torch.Tensor | None = None,
    data_second_moment: torch.Tensor | None = None,
    data_mean: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`moment_gradients` with the model moments (and optionally the data moments) given by
    samples ``(n, N_v)``, without forming N_v x N_v matrices: ``C W = X^T (X W) / n`` costs
    O(n N_v N_h) instead of O(N_v^2 N_h). Give either ``data_samples`` or
    ``data_second_moment`` (and ``data_mean``)."""
    W = model.W.detach()
    xm = model_samples
    m_m = xm.mean(0)
    diag_m = (xm * xm).mean(0)
    s2 = model.sigma_h**2
    if data_samples is not None:
        xd = data_samples
        m_d = xd.mean(0)
        diag_d = (xd * xd).mean(0)
        # s2 (X_d^T X_d W / n_d - X_m^T X_m W / n_m) as two fused GEMMs
        dW = torch.mm(xd.T, xd @ W) if s2 / xd.shape[0] == 1.0 else torch.mm(xd.T, xd @ W).mul_(s2 / xd.shape[0])
    else:
        if data_second_moment is None:
            raise LftmlError("sample_gradients needs data_samples or data_second_moment")
        m_d = torch.zeros_like(m_m) if data_mean is None else data_mean
        diag_d = torch.diagonal(data_second_moment)
        dW = torch.mm(data_second_moment, W).mul_(s2)
    dW = torch.addmm(dW, xm.T, xm @ W, alpha=-s2 / xm.shape[0])
    dm = m_d - m_m
    if model.learn_eta or bool(torch.any(model.eta != 0)):
        dW.add_(torch.outer(dm, model.eta.detach()))
    out: dict[str, torch.Tensor] = {"W": dW}
    if model.learn_eta:
        out["eta"] = W.T @ dm
    if model.mu is not None:
        d = diag_d - diag_m
        dmu2 = -0.5 * (d if model.mu2_mode == "site" else d.sum())
        out["mu"] = 2.0 * model.mu * dmu2
    return {k: v.detach() for k, v in out.items()}
