r"""A trained score model: U-Net + SDE + data scaling + provenance, saved with a format tag.

Units: the network works on ``x = scale * phi`` (model units, float32); :class:`DataScaling` maps
configurations ``phi`` (engine units, float64) to ``x`` and back. Scores transform as
``grad_phi log q_phi = scale * grad_x log q_x`` and densities as
``log q_phi(phi) = log q_x(scale * phi) + V log(scale)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lftml.errors import FileFormatError, LftmlError
from lftml.diffusion.nets import UNet, UNetConfig
from lftml.diffusion.sde import VESDE

__all__ = ["DataScaling", "ScoreModel", "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "load_model", "save_model"]

MODEL_FORMAT = "lftml-diffusion-model"
MODEL_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DataScaling:
    """``x = scale * phi``: maps engine fields to model units (symmetric, so phi -> -phi is kept)."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise LftmlError(f"data scale must be a positive finite number, got {self.scale}")

    @classmethod
    def fit(cls, phi: np.ndarray | torch.Tensor, target: float = 1.0) -> "DataScaling":
        """Scale so that the largest |phi| of the training data becomes ``target`` (data in [-1, 1])."""
        m = float(np.max(np.abs(np.asarray(phi))))
        if not math.isfinite(m) or m == 0.0:
            raise LftmlError("training data are all zero or not finite: cannot fit a data scaling")
        return cls(scale=target / m)

    def to_model(self, phi: torch.Tensor) -> torch.Tensor:
        return phi * self.scale

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale

    def log_jacobian(self, volume: int) -> float:
        """``V log(scale)``: add to ``log q_x`` to get ``log q_phi``."""
        return volume * math.log(self.scale)

    def to_dict(self) -> dict:
        return {"kind": "symmetric_maxabs", "scale": self.scale}


PARAMETRIZATIONS = ("gaussian", "mixture", "edm", "reference")


class ScoreModel(nn.Module):
    """Score model on a fixed lattice, in model units, with noise level ``s = std(t)``:

    * ``parametrization = "reference"``: ``score = net(x, log s) / s`` (the reference code);
    * ``parametrization = "edm"`` (default): preconditioning after Karras et al. (2022),
      ``score = -x / (s^2 + sd^2) + sd * net(x / sqrt(s^2 + sd^2), log s) / (s sqrt(s^2 + sd^2))``,
      with ``sd = sigma_data`` the per-site standard deviation of the training data (model units).
      The first term is the exact large-noise limit of every score, so the network only learns a
      correction. With ``reference``, the net must output ``-x/s`` to better than 1% at large s:
      errors there integrate over the whole range of s in the reverse process and leave the
      samples far too noisy unless trained for very long.

    * ``parametrization = "gaussian"`` (default of :func:`~lftml.diffusion.training.train`): as
      ``edm`` but the first term is the exact score of the Gaussian with the training data's
      two-point function, ``-F^{-1}[ F(x)_p / (c_p + s^2) ]`` with ``c_p = <|F(x)_p|^2> / V`` the
      data's power spectrum (stored with the model). The network then learns only the
      non-Gaussian correction. Reason: the DSM loss weights each of the V momentum modes equally,
      so the zero mode (which alone sets chi_2 = a^-2 c_0) gets 1/V of the training signal, and
      GroupNorm hides it from the U-Net; without this the fast preset needs far longer training
      to get chi_2 right.

    * ``parametrization = "mixture"`` (broken phase): as ``gaussian`` but the first term is the exact
      diffused score of the sign-aligned two-Gaussian mixture ``1/2 N(mu, C) + 1/2 N(-mu, C)``
      (``mu = vacuum * 1``, a constant field; ``C`` the within-well two-point function, fitted as
      :class:`~lftml.diffusion.baselines.MixtureBaseline`): with ``A = (C + s^2)^{-1}``,
      ``-A x + tanh(mu.A x) A mu``, where ``A mu = mu / (c_0 + s^2)`` and ``mu.A x = vacuum V xbar /
      (c_0 + s^2)``. Odd in ``x``, both vacua with equal weight by construction. Reason: in the broken
      phase the Gaussian of the data's two-point function is unimodal in M with its peak where the
      density vanishes, so the network would have to learn the whole double well; the mixture starts
      from the exact Z2 structure and the network learns the within-well non-Gaussianity.

    The training loss is the same DSM loss with ``lambda(t) = std(t)^2`` in all cases.

    Attributes: ``net`` (:class:`UNet`), ``sde`` (:class:`VESDE`), ``lattice_shape``, ``scaling``
    (:class:`DataScaling`), ``theory`` (``theory.to_dict()`` of the training data or ``None``),
    ``info`` (JSON-able provenance: preset, seeds, training summary).
    """

    def __init__(
        self,
        net: UNet,
        sde: VESDE,
        lattice_shape: tuple[int, ...],
        scaling: DataScaling | None = None,
        theory: dict | None = None,
        info: dict | None = None,
        parametrization: str = "edm",
        sigma_data: float = 1.0,
        power_spectrum: torch.Tensor | np.ndarray | None = None,
        vacuum: float | None = None,
    ):
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise LftmlError(f"unknown parametrization {parametrization!r}; choose one of {', '.join(PARAMETRIZATIONS)}")
        if not (sigma_data > 0 and math.isfinite(sigma_data)):
            raise LftmlError(f"sigma_data must be positive, got {sigma_data}")
        self.parametrization = parametrization
        self.sigma_data = float(sigma_data)
        if parametrization == "mixture":
            if vacuum is None or not (float(vacuum) > 0 and math.isfinite(float(vacuum))):
                raise LftmlError(f"the mixture parametrization needs a positive vacuum value, got {vacuum}")
        self.vacuum = float(vacuum) if parametrization == "mixture" else None
        if parametrization in ("gaussian", "mixture"):
            if power_spectrum is None:
                raise LftmlError(f"the {parametrization} parametrization needs the training data's power spectrum")
            ps = torch.as_tensor(np.asarray(power_spectrum), dtype=torch.float32)
            if tuple(ps.shape) != tuple(int(v) for v in lattice_shape):
                raise LftmlError(f"power spectrum shape {tuple(ps.shape)} does not match the lattice {tuple(lattice_shape)}")
            self.register_buffer("power_spectrum", ps)
        else:
            self.power_spectrum = None
        net.config.check_lattice(tuple(lattice_shape))
        self.net = net
        self.sde = sde
        self.lattice_shape = tuple(int(s) for s in lattice_shape)
        self.scaling = scaling or DataScaling(1.0)
        self.theory = theory
        self.info: dict[str, Any] = dict(info or {})

    @property
    def volume(self) -> int:
        return int(np.prod(self.lattice_shape))

    def check_input(self, x: torch.Tensor, name: str = "configurations") -> None:
        """Raise :class:`LftmlError` unless the trailing axes of ``x`` are the model's lattice."""
        d = len(self.lattice_shape)
        if x.ndim < d + 1 or tuple(x.shape[-d:]) != self.lattice_shape:
            raise LftmlError(
                f"{name} have shape {tuple(x.shape)}, but this model was trained on a "
                f"{'x'.join(map(str, self.lattice_shape))} lattice: expected (n, {', '.join(map(str, self.lattice_shape))})"
            )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Score ``grad_x log p_t(x)`` in model units; ``t`` is a scalar or ``(n,)``."""
        analytic, network = self.score_parts(x, t)
        return network if analytic is None else analytic + network

    def score_parts(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(analytic, network)`` with ``score = analytic + network``; ``analytic`` is ``None`` for the
        reference parametrization. Used by the likelihood to take the divergence of the analytic
        part exactly (:meth:`analytic_divergence`) and Hutchinson-estimate only the network part."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        std = self.sde.std(t)
        c = torch.log(std) if self.net.config.time_input == "log_std" else t
        s = std.reshape(-1, *([1] * (x.ndim - 1)))
        if self.parametrization == "reference":
            return None, self.net(x, c) / s
        sd2 = self.sigma_data**2
        norm = torch.sqrt(s * s + sd2)
        correction = self.sigma_data * self.net(x / norm, c) / (s * norm)
        if self.parametrization == "edm":
            return -x / (s * s + sd2), correction
        dims = tuple(range(1, x.ndim))
        xh = torch.fft.fftn(x, dim=dims)
        analytic = -torch.fft.ifftn(xh / (self.power_spectrum + s * s), dim=dims).real.to(x.dtype)
        if self.parametrization == "mixture":
            analytic = analytic + mixture_mean_term(x, s, self.vacuum, self.power_spectrum.flatten()[0])
        return analytic, correction

    def analytic_divergence(self, t: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor | None:
        """Exact divergence (per configuration, float64) of the analytic part of the score; the
        ``mixture`` part's depends on ``x`` (``sech^2(mu.A x) V vacuum^2 / (c_0 + s^2)^2`` on top of
        the Gaussian's ``-sum_p 1/(c_p + s^2)``), so it needs ``x``."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        s2 = (self.sde.std(t) ** 2)[:, None]
        if self.parametrization == "reference":
            return None
        if self.parametrization == "edm":
            return (-self.volume / (s2 + self.sigma_data**2)).reshape(-1)
        ps = self.power_spectrum.to(torch.float64).cpu().reshape(1, -1)
        div = -(1.0 / (ps + s2)).sum(dim=1)
        if self.parametrization == "mixture":
            if x is None:
                raise LftmlError("the mixture part's divergence depends on the configuration: pass x")
            c0 = ps[0, 0]
            xs = x.detach().to(torch.float64).cpu().reshape(x.shape[0], -1).sum(1)
            a = self.vacuum * xs / (c0 + s2[:, 0])
            div = div + self.volume * self.vacuum**2 / (c0 + s2[:, 0]) ** 2 / torch.cosh(a) ** 2
        return div

    def analytic_vacuum(self) -> float | None:
        """``vacuum`` (model units) of the ``mixture`` part, ``None`` otherwise."""
        return self.vacuum

    def analytic_power_spectrum(self) -> torch.Tensor | None:
        """Per-mode variance ``c_p`` (model units, float64, lattice shape) of the Gaussian whose exact
        diffused score is the analytic part: the stored power spectrum (``gaussian``), ``sigma_data^2``
        on every mode (``edm``), ``None`` (``reference``: no analytic part). The path-weighted sampler
        (:func:`lftml.diffusion.sampling.sample_path_weighted`) uses it for its prior and covariances."""
        if self.parametrization == "reference":
            return None
        if self.parametrization == "edm":
            return torch.full(self.lattice_shape, self.sigma_data**2, dtype=torch.float64)
        return self.power_spectrum.detach().to(torch.float64).cpu()  # gaussian; mixture: within-well C

    @staticmethod
    def estimate_power_spectrum(x: torch.Tensor) -> torch.Tensor:
        """``c_p = <|F(x)_p|^2> / V`` over the batch axis (Z2- and translation-symmetric by construction;
        :func:`lftml.diffusion.sampling.power_spectrum`)."""
        from lftml.diffusion.sampling import power_spectrum

        return power_spectrum(x)

    score = forward

    def check_theory(self, theory: dict | None, what: str = "data") -> None:
        """Raise :class:`FileFormatError` if ``theory`` differs from the model's training theory."""
        if theory is None or self.theory is None:
            return
        a = {k: v for k, v in self.theory.items()}
        b = {k: v for k, v in theory.items()}
        if a != b:
            raise FileFormatError(
                f"the model was trained on {_describe(a)} but the {what} is {_describe(b)}; "
                "train a model on this theory or pick the matching model file"
            )


def mixture_mean_term(x: torch.Tensor, s, vacuum: float, c0) -> torch.Tensor:
    """``tanh(mu.A x) A mu`` of the mixture score (a constant field per configuration): ``mu = vacuum *
    1``, ``A mu = mu / (c_0 + s^2)``, ``mu.A x = vacuum sum_x x / (c_0 + s^2)``; ``s`` a float or a
    tensor broadcastable to ``(n, 1, ..., 1)``, ``c_0`` the zero-mode variance of ``C``."""
    n = x.shape[0]
    shape = (n, *([1] * (x.ndim - 1)))
    s2 = (torch.as_tensor(s, dtype=x.dtype, device=x.device) ** 2).reshape(-1)
    s2 = s2.expand(n) if s2.numel() == 1 else s2
    denom = (torch.as_tensor(c0, dtype=x.dtype, device=x.device) + s2)
    a = vacuum * x.reshape(n, -1).sum(1) / denom
    return (torch.tanh(a) * vacuum / denom).reshape(shape)


def _describe(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _embedding_matrix(L0: int, L: int) -> torch.Tensor:
    """``E (L x L0)``: separation ``d`` of an ``L0``-periodic axis (minimum image) to the same
    separation on an ``L``-periodic axis, ``L >= L0``; for even ``L0`` the separation ``L0/2`` (its
    own image) goes half to ``+L0/2`` and half to ``-L0/2``, so every sum over separations is kept."""
    E = torch.zeros(L, L0, dtype=torch.float64)
    for i in range(L0):
        d = i if i <= L0 // 2 else i - L0
        if L0 % 2 == 0 and d == L0 // 2:
            E[d % L, i] += 0.5
            E[(-d) % L, i] += 0.5
        else:
            E[d % L, i] += 1.0
    return E


def embed_spectrum(c: torch.Tensor, shape: tuple[int, ...], floor: float = 1e-6) -> torch.Tensor:
    """Per-mode variances on a lattice of ``shape`` from those ``c`` of a smaller (or equal) lattice
    of the same dimension, by periodic embedding of the position-space two-point function
    ``C(r) = F^-1 c``: each separation of the old lattice (minimum image; ``L0/2`` split half and half
    between ``+-L0/2``) keeps its value, larger separations get 0. The sum over separations (the
    zero mode, i.e. chi_2) is unchanged. Exact when the correlations have died out before ``L0 / 2``;
    near kappa_c it misses the long-range part. Modes below ``floor`` times the mean are raised to
    it: any positive spectrum is a valid analytic part (the path weights stay exact), only the
    efficiency depends on it."""
    c = torch.as_tensor(c, dtype=torch.float64)
    shape = tuple(int(v) for v in shape)
    if c.ndim != len(shape):
        raise LftmlError(f"cannot embed a {c.ndim}d spectrum into a {len(shape)}d lattice {shape}")
    if any(L < L0 for L, L0 in zip(shape, c.shape)):
        raise LftmlError(f"a model trained on {'x'.join(map(str, c.shape))} samples lattices at least that large, "
                         f"got {'x'.join(map(str, shape))}")
    if tuple(c.shape) == shape:
        return c.clone()
    C = torch.fft.ifftn(c).real
    for axis, (L0, L) in enumerate(zip(c.shape, shape)):
        C = torch.movedim(torch.tensordot(_embedding_matrix(L0, L), torch.movedim(C, axis, 0), dims=1), 0, axis)
    cn = torch.fft.fftn(C).real
    return cn.clamp_min(floor * float(cn.mean()))


def resize_model(model: "ScoreModel", shape: tuple[int, ...]) -> "ScoreModel":
    """The same network and data scaling on a lattice of ``shape`` (for a translation-equivariant,
    fully convolutional preset such as ``equi``: circular padding, GroupNorm and the zero-mode head
    work at any extent): the analytic part's spectrum by :func:`embed_spectrum`, the vacuum kept,
    the theory's lattice replaced. The network was trained at the old size; at the new size it is a
    proposal like any other, made exact by the path weights."""
    shape = tuple(int(v) for v in shape)
    if shape == model.lattice_shape:
        return model
    if model.power_spectrum is None and model.parametrization != "edm":
        raise LftmlError(f"the {model.parametrization} parametrisation has no analytic part to carry to another lattice")
    model.net.config.check_lattice(shape)
    ps = None if model.power_spectrum is None else embed_spectrum(model.power_spectrum, shape).float()
    theory = None
    if model.theory is not None:
        theory = dict(model.theory)
        theory["shape"] = list(shape)
    info = {**model.info, "resized_from": list(model.lattice_shape)}
    return ScoreModel(model.net, model.sde, shape, model.scaling, theory, info, parametrization=model.parametrization,
                      sigma_data=model.sigma_data, power_spectrum=ps, vacuum=model.vacuum).to(
                          next(model.net.parameters()).device).eval()


def save_model(model: ScoreModel, path: str | Path, *, ema_state: dict | None = None) -> Path:
    """Write ``model`` (its current weights, or ``ema_state`` when given) atomically to ``path``."""
    path = Path(path)
    state = ema_state if ema_state is not None else model.net.state_dict()
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "net_config": model.net.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()},
        "sde": model.sde.to_dict(),
        "lattice_shape": list(model.lattice_shape),
        "scaling": model.scaling.to_dict(),
        "theory": model.theory,
        "info": model.info,
        "parametrization": model.parametrization,
        "sigma_data": model.sigma_data,
        "power_spectrum": None if model.power_spectrum is None else model.power_spectrum.detach().cpu().clone(),
        "vacuum": model.vacuum,
    }
    from lftml.safeio import atomic_output

    with atomic_output(path) as tmp:  # a full disk leaves the old file (or none), never a temp file
        torch.save(payload, tmp)
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ScoreModel:
    """Read a model written by :func:`save_model`; a missing, damaged or foreign file raises
    :class:`FileFormatError`."""
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, foreign formats
        raise FileFormatError(f"{path} is not a readable lftml diffusion model ({type(exc).__name__}): "
                              "pass a file written by `lftml diffusion train`") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise FileFormatError(
            f"{path} is not an lftml diffusion model (format tag {found!r}, expected {MODEL_FORMAT!r}); "
            "pass a file written by `lftml diffusion train`"
        )
    if int(payload.get("format_version", 0)) > MODEL_FORMAT_VERSION:
        raise FileFormatError(f"{path} was written by a newer lftml (format version {payload['format_version']})")
    try:
        cfg = UNetConfig.from_dict(payload["net_config"])
        net = UNet(cfg)
        net.load_state_dict(payload["state_dict"])
        model = ScoreModel(
            net,
            VESDE.from_dict(payload["sde"]),
            tuple(payload["lattice_shape"]),
            DataScaling(float(payload["scaling"]["scale"])),
            payload.get("theory"),
            payload.get("info"),
            parametrization=payload.get("parametrization", "reference"),
            sigma_data=float(payload.get("sigma_data", 1.0)),
            power_spectrum=payload.get("power_spectrum"),
            vacuum=payload.get("vacuum"),
        )
    except (KeyError, RuntimeError, TypeError) as exc:
        raise FileFormatError(f"{path}: damaged lftml diffusion model ({exc})") from None
    return model.to(device).eval()
