r"""Analytic Gaussian RBMs for a known Gaussian target ``p(phi) ∝ exp(-phi^T K_phi phi / 2)``.

Matching ``K = mu^2 1 - sigma_h^2 W W^T`` to ``K_phi`` requires
``W W^T = (mu^2 1 - K_phi) / sigma_h^2 ≡ \mathcal{K}``, symmetric and positive (semi-)definite iff
``mu^2 >= lambda_max(K_phi)``. There are infinitely many solutions (N_h = N_v):

1. Cholesky ``\mathcal{K} = L L^T``: ``W = L`` lower triangular (needs ``mu^2 > lambda_max``);
2. diagonalisation ``\mathcal{K} = O D O^T``: ``W = O sqrt(D) O^T`` symmetric;
3. any ``W O_R`` with O_R in O(N_h) (hidden-layer symmetry).

The maximum-likelihood optimum of the *constrained* family (N_h <= N_v, mu^2 fixed or learned) is
also known in closed form (:func:`optimal_spectrum`, :func:`optimal_weights`): with target
eigenvalues ``lambda_1 <= ... <= lambda_N``, the RBM keeps the N_h lowest (infrared) modes that lie
below mu^2 and puts every other mode at mu^2; a learned global mu^2 converges to the harmonic mean
of the dropped modes, ``mu^2 = n_D / sum_{j in D} 1/lambda_j`` with D the N_v - N_h largest.

Derivation (zero mean): ``<log p> = -tr(K C)/2 + log det K / 2 + const`` with ``C = K_phi^{-1}``.
Per target mode of eigenvalue lambda, a free model eigenvalue k contributes ``-k/(2 lambda) + log k/2``
(maximal at k = lambda, allowed only if lambda <= mu^2 since k = mu^2 - sigma_h^2 xi^2), while a
mode left at mu^2 loses ``f(mu^2/lambda)/2`` with ``f(x) = x - 1 - log x``, which for x >= 1 is
increasing in x: dropping the *largest* lambdas costs least. Maximising the dropped part
``sum_D (-mu^2/(2 lambda_j) + log mu^2/2)`` over mu^2 gives ``mu^2 = n_D / sum_D 1/lambda_j``
(harmonic mean); it lies above every kept eigenvalue, so the solution is consistent.
"""

from __future__ import annotations

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.rbm.gaussian import GaussianRBM

__all__ = [
    "cholesky_weights",
    "diagonal_weights",
    "optimal_spectrum",
    "optimal_weights",
    "optimal_weights_from_correlator",
    "rbm_from_kernel",
    "random_orthogonal",
]


def _check_kernel(K_target: np.ndarray | torch.Tensor) -> np.ndarray:
    K = np.asarray(K_target.detach().numpy() if isinstance(K_target, torch.Tensor) else K_target, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise LftmlError(f"target kernel must be a square (N_v, N_v) matrix, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise LftmlError("target kernel contains NaN or infinite entries")
    if not np.allclose(K, K.T, atol=1e-12 * max(1.0, np.abs(K).max())):
        raise LftmlError("target kernel is not symmetric")
    return 0.5 * (K + K.T)


def _weight_matrix(K: np.ndarray, mu2: float, sigma_h: float) -> np.ndarray:
    return (float(mu2) * np.eye(K.shape[0]) - K) / sigma_h**2


def cholesky_weights(K_target: np.ndarray | torch.Tensor, mu2: float, sigma_h: float = 1.0) -> np.ndarray:
    """Lower-triangular W (N_v, N_v) with ``mu^2 1 - sigma_h^2 W W^T = K_target``; needs
    ``mu2 > lambda_max(K_target)`` strictly (the Cholesky factor of a singular matrix does not exist)."""
    K = _check_kernel(K_target)
    lam_max = float(np.linalg.eigvalsh(K)[-1])
    if not float(mu2) > lam_max:
        raise LftmlError(
            f"the Cholesky construction needs mu2 > lambda_max = {lam_max:.6g} of the target kernel, got mu2 = {mu2}; "
            f"raise mu2 (or use the diagonalisation construction, which allows mu2 = lambda_max)"
        )
    M = _weight_matrix(K, mu2, sigma_h)
    try:
        return np.linalg.cholesky(M)
    except np.linalg.LinAlgError:  # pragma: no cover - only for mu2 within rounding of lambda_max
        raise LftmlError(f"mu2 = {mu2} is too close to lambda_max = {lam_max:.6g} for a Cholesky factor; raise mu2") from None


def diagonal_weights(K_target: np.ndarray | torch.Tensor, mu2: float, sigma_h: float = 1.0) -> np.ndarray:
    """Symmetric W = O sqrt(D) O^T (N_v, N_v) with ``mu^2 1 - sigma_h^2 W W^T = K_target``; needs
    ``mu2 >= lambda_max(K_target)`` (up to rounding)."""
    K = _check_kernel(K_target)
    lam, O = np.linalg.eigh(K)
    tol = 1e-12 * max(1.0, abs(lam[-1]))
    if float(mu2) < lam[-1] - tol:
        raise LftmlError(
            f"an exact RBM construction needs mu2 >= lambda_max = {lam[-1]:.6g} of the target kernel, got mu2 = {mu2}; "
            f"raise mu2 (below lambda_max the best RBM clips the spectrum: see optimal_weights)"
        )
    D = np.clip(float(mu2) - lam, 0.0, None) / sigma_h**2
    return (O * np.sqrt(D)) @ O.T


def optimal_spectrum(target_eigenvalues: np.ndarray, n_hidden: int, mu2: float | None = None) -> tuple[np.ndarray, float]:
    """Maximum-likelihood spectrum of a Gaussian RBM with N_h hidden nodes and uniform mu^2.

    ``mu2=None`` means learned: mu^2 = harmonic mean of the N_v - N_h largest target eigenvalues
    (for N_h >= N_v any mu^2 >= lambda_max is optimal; lambda_max is returned). With fixed mu^2 the
    N_h lowest modes are kept if below mu^2, everything else sits at mu^2.
    Returns (model eigenvalues ascending, mu^2).
    """
    lam = np.sort(np.asarray(target_eigenvalues, dtype=np.float64).ravel())
    n = lam.size
    if n_hidden < 1:
        raise LftmlError(f"n_hidden must be >= 1, got {n_hidden}")
    k = min(int(n_hidden), n)
    if mu2 is None:
        dropped = lam[k:]
        mu2 = float(dropped.size / np.sum(1.0 / dropped)) if dropped.size else float(lam[-1])
    mu2 = float(mu2)
    kept = np.minimum(lam[:k], mu2)
    model = np.sort(np.concatenate([kept, np.full(n - k, mu2)]))
    return model, mu2


def optimal_weights(
    K_target: np.ndarray | torch.Tensor, n_hidden: int, mu2: float | None = None, sigma_h: float = 1.0
) -> tuple[np.ndarray, float]:
    """Weights (N_v, N_h) and mu^2 of the maximum-likelihood RBM for target kernel ``K_target``
    (see :func:`optimal_spectrum`): the columns are the N_h lowest target eigenvectors scaled by
    ``sqrt(max(mu^2 - lambda, 0)) / sigma_h``."""
    K = _check_kernel(K_target)
    if n_hidden < 1:
        raise LftmlError(f"n_hidden must be >= 1, got {n_hidden}")
    lam, O = np.linalg.eigh(K)
    _, mu2 = optimal_spectrum(lam, n_hidden, mu2)
    k = min(int(n_hidden), lam.size)
    W = np.zeros((lam.size, int(n_hidden)))
    W[:, :k] = O[:, :k] * np.sqrt(np.clip(mu2 - lam[:k], 0.0, None)) / sigma_h
    return W, mu2


def optimal_weights_from_correlator(
    correlator: np.ndarray | torch.Tensor, n_hidden: int, mu2: float | None = None, sigma_h: float = 1.0
) -> tuple[np.ndarray, float]:
    """The same ML optimum for a target given by its second moment ``C = <phi phi^T>`` (zero-mean
    model), e.g. image data whose correlator has exact zero modes (kappa = 1/var = inf: never kept).
    Kept: the N_h modes of largest variance; learned mu^2 = n_D / sum_{dropped} var_j."""
    C = np.asarray(correlator.detach().numpy() if isinstance(correlator, torch.Tensor) else correlator, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or not np.all(np.isfinite(C)):
        raise LftmlError(f"correlator must be a finite square (N_v, N_v) matrix, got shape {C.shape}")
    if n_hidden < 1:
        raise LftmlError(f"n_hidden must be >= 1, got {n_hidden}")
    var, O = np.linalg.eigh(0.5 * (C + C.T))
    var, O = var[::-1], O[:, ::-1]  # descending variance = ascending kappa
    tiny = max(var[0], 0.0) * 1e-13
    with np.errstate(divide="ignore"):
        kappa = np.where(var > tiny, 1.0 / np.where(var > tiny, var, 1.0), np.inf)
    n = var.size
    k = min(int(n_hidden), n)
    if mu2 is None:
        dropped = np.clip(var[k:], 0.0, None)
        if dropped.size == 0:
            mu2 = float(kappa[np.isfinite(kappa)].max())
        elif dropped.sum() <= 0:
            raise LftmlError("all dropped modes have zero variance, so the learned mu^2 would be infinite; give a fixed mu^2")
        else:
            mu2 = float(dropped.size / dropped.sum())
    mu2 = float(mu2)
    if not (np.isfinite(mu2) and mu2 > 0):
        raise LftmlError(f"mu^2 must be a positive number, got {mu2}")
    W = np.zeros((n, int(n_hidden)))
    with np.errstate(invalid="ignore"):
        x = np.where(np.isfinite(kappa[:k]), np.clip(mu2 - kappa[:k], 0.0, None), 0.0)
    W[:, :k] = O[:, :k] * np.sqrt(x) / sigma_h
    return W, mu2


def rbm_from_kernel(
    K_target: np.ndarray | torch.Tensor,
    mu2: float,
    *,
    method: str = "cholesky",
    sigma_h: float = 1.0,
    lattice_shape: tuple[int, ...] | None = None,
) -> GaussianRBM:
    """A GaussianRBM (N_h = N_v, fixed mu^2) whose induced kernel equals ``K_target`` exactly,
    built by ``method = "cholesky"`` or ``"diagonal"``."""
    if method == "cholesky":
        W = cholesky_weights(K_target, mu2, sigma_h)
    elif method in ("diagonal", "diagonalisation", "symmetric"):
        W = diagonal_weights(K_target, mu2, sigma_h)
    else:
        raise LftmlError(f"unknown construction {method!r}: use 'cholesky' or 'diagonal'")
    n = W.shape[0]
    return GaussianRBM(n, n, mu2=float(mu2), mu2_mode="fixed", sigma_h=sigma_h, weights=W, lattice_shape=lattice_shape)


def random_orthogonal(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Haar-random orthogonal n x n matrix (QR of a Gaussian matrix with sign fix)."""
    A = torch.randn((n, n), generator=generator, dtype=dtype)
    Q, R = torch.linalg.qr(A)
    return Q * torch.sign(torch.diagonal(R))
