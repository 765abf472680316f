"""Score-based diffusion models as stochastic quantisation (issue #4).

Conventions: diffusion time ``t in [0, 1]`` (0 = data, 1 = noise); VE SDE ``dx = sigma^t dw`` with
``std(t) = sqrt((sigma^{2t} - 1) / (2 ln sigma))``; the score is ``grad_x log p_t(x)`` (for
``p ~ exp(-S)`` at t = 0 it is the force ``-dS/dphi``). Models work in units ``x = scale * phi``
(stored with the model, inverted on output), float32.

Modules: :mod:`.sde`, :mod:`.nets` (periodic U-Net), :mod:`.model` (score model, file format),
:mod:`.losses`, :mod:`.training`, :mod:`.sampling`, :mod:`.likelihood`, :mod:`.evaluation`,
:mod:`.gaussian` (exact free-field reference), :mod:`.baselines` (exact Gaussian / Z2-mixture
proposals; exactness by the ``exp`` sampler's path weights), :mod:`.data`, :mod:`.workflows` (one call per CLI command).
"""

from lftml.diffusion.model import DataScaling, ScoreModel, load_model, save_model
from lftml.diffusion.nets import UNet, UNetConfig, preset
from lftml.diffusion.sde import VESDE

__all__ = ["VESDE", "UNet", "UNetConfig", "preset", "ScoreModel", "DataScaling", "load_model", "save_model"]
