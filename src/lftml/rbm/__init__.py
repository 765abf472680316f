"""Scalar-field restricted Boltzmann machines as lattice field theories.

* :class:`GaussianRBM` -- Gaussian visible and hidden layers; induced kernel
  ``K = diag(mu^2) - sigma_h^2 W W^T`` and source ``J = W eta``;
* :func:`train` -- exact maximum likelihood, PCD and CD-k (:class:`TrainConfig`, :class:`Target`);
* analytic constructions (Cholesky, diagonalisation, the ML optimum with N_h <= N_v);
* spectral analysis (the RBM as an ultraviolet regulator);
* :class:`ScalarBernoulliRBM` -- continuous visible, hidden +-1 (interactions of all orders), trained
  by :func:`lftml.rbm.bernoulli_training.train_bernoulli`, log Z by enumeration or AIS;
* :class:`lftml.rbm.phi4.Phi4VisibleRBM` -- lam phi^4/4! on the visible nodes (exact conditional sampler);
* data sets: :mod:`lftml.datasets`; MNIST figures: ``python -m lftml.rbm.mnist OUTDIR``;
* save/load of models (:func:`save_model`, :func:`load_model`).
"""

from lftml.rbm.gaussian import GaussianRBM, gaussian_log_likelihood, moment_gradients, sample_gradients
from lftml.rbm.constructions import (
    cholesky_weights,
    diagonal_weights,
    optimal_spectrum,
    optimal_weights,
    optimal_weights_from_correlator,
    random_orthogonal,
    rbm_from_kernel,
)
from lftml.rbm.training import ReferenceSGD, Target, TrainConfig, pcd_tolerance, train

__all__ = [
    "GaussianRBM",
    "gaussian_log_likelihood",
    "moment_gradients",
    "sample_gradients",
    "cholesky_weights",
    "diagonal_weights",
    "optimal_spectrum",
    "optimal_weights",
    "optimal_weights_from_correlator",
    "random_orthogonal",
    "rbm_from_kernel",
    "ReferenceSGD",
    "Target",
    "TrainConfig",
    "pcd_tolerance",
    "train",
]
