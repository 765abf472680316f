r"""Periodic U-Net score networks with Gaussian Fourier time embedding.

The network ``net(x, c)`` maps a batch of fields ``x`` of shape ``(n, *lattice_shape)`` (model units,
float32) and a noise-level input ``c`` of shape ``(n,)`` to an output of the same shape as ``x``.
``c`` is ``log std(t)`` (``time_input = "log_std"``, default, with Fourier scale 16 as in Song et
al.'s NCSN++ for VE SDEs) or ``t`` itself (``"t"``, Fourier scale 30, as in their tutorial
``ScoreNet``). With ``t`` the network cannot resolve the small noise levels (``t`` in ``[1e-5, 1e-3]``
all look like ``t = 0``) where ``score = net / std`` amplifies every error; ``log std`` fixes that. The *score* used by the samplers is ``net(x, t) / std(t)`` (see
:class:`lftml.diffusion.model.ScoreModel`), the parametrisation of the reference implementation:
for ``lambda(t) = std(t)^2`` denoising score matching the network then predicts ``-z``, an O(1)
target at every noise level.

Every convolution uses **circular (periodic) padding**, so with stride 1 the network commutes with
lattice translations exactly (with stride-2 levels, with translations by multiples of the total
stride). Architecture (after Song et al.'s ``ScoreNet``, as used for 2d phi^4 by Wang, Aarts & Zhou):

* encoder level ``i``: ``conv3(stride s_i) -> + Dense(embed) -> GroupNorm -> SiLU`` with ``c_i`` channels;
* decoder level ``i`` (reverse order): ``[nearest upsample by s_{i+1}] -> conv3 -> + Dense(embed) ->
  GroupNorm -> SiLU`` on the concatenation with the encoder skip of the same resolution;
* final ``conv3`` to one channel;
* optional **linear skip** (``linear_skip = k > 0``): ``sum_j a_j(t) (K_j * x)`` with ``k`` circular
  3x3 kernels ``K_j`` and time-dependent gains ``a_j(t)`` from the embedding, added to the output.
  GroupNorm removes the absolute amplitude and the lattice average (zero mode) of its input, so the
  plain U-Net struggles to output the *linear* (Gaussian, free-field-like) part of the score,
  ``-std (C + std^2)^{-1} x``, which fixes chi_2; the skip represents it directly. Not in the
  reference (``paper`` preset has none); it is what makes the small ``fast`` preset train in minutes.
* optional **zero-mode head** (``zero_mode_head``): an MLP of ``(sqrt(V) * mean(x), embedding)``
  whose scalar output is added to every site. GroupNorm subtracts the lattice average of the
  features, so the U-Net is nearly blind to the zero mode M, which carries chi_2 and U_L; this
  head models the (non-Gaussian) distribution of M directly. Not in the reference.

* optional **Z2 antisymmetrisation** (``odd``): ``out(x) = (f(x) - f(-x)) / 2``, so the network's
  score is exactly odd, as the score of any Z2-symmetric density (phi -> -phi) is.

Presets: ``equi`` (the default of ``lftml diffusion train``) = channels 16/32/32, **all strides 1**
(exactly equivariant under every lattice translation: circular padding, no resampling), embedding
64, linear skip, zero-mode head and Z2 antisymmetrisation; ``tiny-equi`` its small sibling (tests).
``paper`` = channels 32/64/128/256, all strides 1, embedding 256 (the reference); ``fast`` =
channels 16/32/64 with strides 1/2/2, embedding 64 and a 4-kernel linear skip (a few percent of
the cost, for CPUs; *not* translation-equivariant: stride-2 levels commute only with even shifts,
a one-site shift changes its output by O(1)); ``tiny`` = channels 8/16 with linear skip (tests only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lftml.errors import LftmlError

__all__ = ["UNetConfig", "UNet", "GaussianFourierProjection", "PRESETS", "DEFAULT_PRESET", "preset"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet`. ``strides[0]`` must be 1 (the first level sees the full lattice)."""

    channels: tuple[int, ...] = (32, 64, 128, 256)
    strides: tuple[int, ...] = (1, 1, 1, 1)
    embed_dim: int = 256
    fourier_scale: float = 16.0
    ndim: int = 2
    linear_skip: int = 0
    time_input: str = "log_std"
    zero_mode_head: bool = False
    odd: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if len(self.channels) < 1 or len(self.channels) != len(self.strides):
            raise LftmlError(f"U-Net needs one stride per level: channels {self.channels}, strides {self.strides}")
        if self.strides[0] != 1 or any(s not in (1, 2) for s in self.strides):
            raise LftmlError(f"U-Net strides must be 1 or 2 and the first must be 1, got {self.strides}")
        if self.time_input not in ("log_std", "t"):
            raise LftmlError(f"time_input must be 'log_std' or 't', got {self.time_input!r}")
        if self.linear_skip < 0:
            raise LftmlError(f"linear_skip must be >= 0, got {self.linear_skip}")
        if self.ndim not in (1, 2, 3):
            raise LftmlError(f"the U-Net supports 1, 2 or 3 lattice dimensions, got {self.ndim}")

    @property
    def total_stride(self) -> int:
        return int(math.prod(self.strides))

    def check_lattice(self, shape: tuple[int, ...]) -> None:
        """Raise if a lattice of ``shape`` cannot pass through this U-Net."""
        if len(shape) != self.ndim:
            raise LftmlError(f"this U-Net is for {self.ndim}d lattices, got lattice shape {tuple(shape)}")
        if any(L % self.total_stride for L in shape):
            raise LftmlError(
                f"lattice extents {tuple(shape)} must be divisible by the U-Net's total stride {self.total_stride}; "
                "use the paper preset (stride 1) or a lattice with even extents"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


PRESETS: dict[str, UNetConfig] = {
    "equi": UNetConfig(channels=(16, 32, 32), strides=(1, 1, 1), embed_dim=64, linear_skip=4, zero_mode_head=True,
                       odd=True),
    "paper": UNetConfig(channels=(32, 64, 128, 256), strides=(1, 1, 1, 1), embed_dim=256),
    "fast": UNetConfig(channels=(16, 32, 64), strides=(1, 2, 2), embed_dim=64, linear_skip=4, zero_mode_head=True),
    "tiny": UNetConfig(channels=(8, 16), strides=(1, 2), embed_dim=32, linear_skip=4, zero_mode_head=True),
    "tiny-equi": UNetConfig(channels=(8, 16), strides=(1, 1), embed_dim=32, linear_skip=4, zero_mode_head=True,
                            odd=True),
}
#: the preset ``lftml diffusion train`` uses when none is given (benchmarks/diffusion_results.md, "learning")
DEFAULT_PRESET = "equi"


def preset(name: str, ndim: int = 2) -> UNetConfig:
    """The named architecture (``paper``, ``fast`` or ``tiny``) for ``ndim``-dimensional lattices."""
    if name not in PRESETS:
        raise LftmlError(f"unknown U-Net preset {name!r}; choose one of {', '.join(PRESETS)}")
    d = PRESETS[name].to_dict()
    d["ndim"] = ndim
    return UNetConfig.from_dict(d)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of the time: ``[sin(2 pi W t), cos(2 pi W t)]`` with fixed
    ``W ~ N(0, scale^2)`` (``embed_dim / 2`` frequencies, not trained; stored in the state dict)."""

    def __init__(self, embed_dim: int, scale: float = 30.0, generator: torch.Generator | None = None):
        super().__init__()
        w = torch.randn(embed_dim // 2, generator=generator) * scale
        self.register_buffer("W", w)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        proj = t[:, None] * self.W[None, :] * 2.0 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def _conv_cls(ndim: int) -> type[nn.Module]:
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim]


def _groups(c: int) -> int:
    g = min(32, max(1, c // 4))
    while c % g:
        g -= 1
    return g


class _Block(nn.Module):
    """conv (circular) -> + time embedding -> GroupNorm -> SiLU."""

    def __init__(self, ndim: int, c_in: int, c_out: int, embed_dim: int, stride: int = 1, upsample: int = 1):
        super().__init__()
        conv = _conv_cls(ndim)
        self.up = nn.Upsample(scale_factor=upsample, mode="nearest") if upsample > 1 else nn.Identity()
        self.conv = conv(c_in, c_out, 3, stride=stride, padding=1, padding_mode="circular", bias=False)
        self.dense = nn.Linear(embed_dim, c_out)
        self.norm = nn.GroupNorm(_groups(c_out), c_out)
        self.ndim = ndim

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.up(h))
        h = h + self.dense(emb).reshape(*emb.shape[:1], -1, *([1] * self.ndim))
        return torch.nn.functional.silu(self.norm(h))


class UNet(nn.Module):
    """Periodic U-Net ``(n, *lattice_shape), (n,) -> (n, *lattice_shape)`` (see module docstring)."""

    def __init__(self, config: UNetConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        nd, ch, st, E = config.ndim, config.channels, config.strides, config.embed_dim
        self.embed = nn.Sequential(GaussianFourierProjection(E, config.fourier_scale, generator), nn.Linear(E, E))
        self.down = nn.ModuleList()
        c_prev = 1
        for c, s in zip(ch, st):
            self.down.append(_Block(nd, c_prev, c, E, stride=s))
            c_prev = c
        # decoder: from the deepest level back to level 0
        self.up = nn.ModuleList()
        n = len(ch)
        for i in range(n - 1, 0, -1):
            c_in = ch[i] if i == n - 1 else 2 * ch[i]
            self.up.append(_Block(nd, c_in, ch[i - 1], E, upsample=st[i]))
        c_last = 2 * ch[0] if n > 1 else ch[0]
        self.final = _conv_cls(nd)(c_last, 1, 3, padding=1, padding_mode="circular")
        if config.zero_mode_head:
            self.zero_mode = nn.Sequential(nn.Linear(E + 3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))
        else:
            self.zero_mode = None
        if config.linear_skip > 0:
            self.skip_conv = _conv_cls(nd)(1, config.linear_skip, 3, padding=1, padding_mode="circular", bias=False)
            self.skip_gain = nn.Linear(E, config.linear_skip)
        else:
            self.skip_conv = None
            self.skip_gain = None
        if generator is not None:
            self.reset_parameters(generator)
        self.zero_output_layers()

    @torch.no_grad()
    def zero_output_layers(self) -> None:
        """Zero the last layer of every output path, so an untrained network outputs exactly 0 (the
        model starts as the analytic part of its parametrization, e.g. the data's Gaussian)."""
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        if self.zero_mode is not None:
            nn.init.zeros_(self.zero_mode[-1].weight)
            nn.init.zeros_(self.zero_mode[-1].bias)
        if self.skip_gain is not None:
            nn.init.zeros_(self.skip_gain.weight)
            nn.init.zeros_(self.skip_gain.bias)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Re-initialise all weights from ``generator`` (PyTorch's default schemes, reproducible)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 2 * bound - bound)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * 2 * bound - bound)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.config.odd:
            # exact Z2: f(x) - f(-x) over 2, one pass on the doubled batch
            n = x.shape[0]
            y = self._forward(torch.cat([x, -x]), torch.cat([t, t]))
            return 0.5 * (y[:n] - y[n:])
        return self._forward(x, t)

    def _forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        act = torch.nn.functional.silu
        emb = act(self.embed(t))
        h = x.unsqueeze(1)
        skips = []
        for blk in self.down:
            h = blk(h, emb)
            skips.append(h)
        h = skips.pop()
        for k, blk in enumerate(self.up):
            if k > 0:
                h = torch.cat([h, skips.pop()], dim=1)
            else:
                pass
            h = blk(h, emb)
        if len(self.down) > 1:
            h = torch.cat([h, skips.pop()], dim=1)
        out = self.final(h)
        if self.skip_conv is not None:
            gain = self.skip_gain(emb).reshape(emb.shape[0], -1, *([1] * self.config.ndim))
            out = out + (gain * self.skip_conv(x.unsqueeze(1))).sum(dim=1, keepdim=True)
        out = out.squeeze(1)
        if self.zero_mode is not None:
            dims = tuple(range(1, x.ndim))
            v = math.prod(x.shape[1:])
            m = x.mean(dim=dims) * math.sqrt(v)
            feat = torch.cat([emb, m[:, None], (m * m)[:, None], (m**3)[:, None] / 3.0], dim=1)
            out = out + self.zero_mode(feat).reshape(-1, *([1] * (x.ndim - 1))) / math.sqrt(v)
        return out
