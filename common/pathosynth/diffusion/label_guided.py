"""Label-map-conditioned DDPM: the training batch (Eq. 8-10) and sampling (Algorithm 1, optionally respaced or DDIM).

The denoiser is MONAI's ``SPADEDiffusionModelUNet``: the noisy features go through its encoder, the label
map enters its decoder through SPADE normalisation (Eq. 9, ``D(E(F_t, t), l)``). The label map is given
one-hot, one channel per declared class, resized (nearest) to the size of the diffusion space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from monai.engines.utils import DiffusionPrepareBatch
from monai.inferers import DiffusionInferer
from monai.networks.nets import SPADEDiffusionModelUNet

from ..distributed import unwrap
from .latent import DiffusionSpace, _plain_tensor
from .steps import ReverseChain, sample_noise


def label_values_of(labels: Mapping[str, int] | Sequence[int]) -> list[int]:
    """Label values in channel order: a ``labels`` map's values as declared, or a list of values."""
    return [int(v) for v in (labels.values() if isinstance(labels, Mapping) else labels)]


def one_hot_labels(
    label: torch.Tensor, labels: Mapping[str, int] | Sequence[int], size: Sequence[int] | None = None
) -> torch.Tensor:
    """(B, 1, H, W) label map -> (B, L, h, w) float one-hot, channel k = ``label == values[k]``, resized (nearest)
    to ``size``. Label values may be any integers (not only 0..L-1); a value that is not declared has no channel."""
    label = _plain_tensor(label)
    if label.ndim < 3 or label.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, *spatial) label map, got shape {tuple(label.shape)}")
    label = torch.round(label.float())
    onehot = torch.cat([(label == v).float() for v in label_values_of(labels)], dim=1)
    if size is not None and tuple(size) != tuple(onehot.shape[2:]):
        onehot = F.interpolate(onehot, size=tuple(int(s) for s in size), mode="nearest")
    return onehot


class LabelConditionedPrepareBatch(DiffusionPrepareBatch):
    """Batch for ``SupervisedTrainer`` + MONAI ``DiffusionInferer`` with a SPADE denoiser.

    From a batch of (image, label) slices: x0 = the normalised features of the frozen autoencoder (or the
    normalised image, in pixel space), a timestep t per sample, noise eps; the inferer forms
    F_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Eq. 8) and calls the network with ``seg`` = the one-hot label
    map at the size of x0; the target is eps, so ``torch.nn.MSELoss`` is Eq. 10.

    Args:
        num_train_timesteps: T.
        space: :class:`~pathosynth.diffusion.latent.DiffusionSpace` (latent or pixel).
        labels: class name -> value (one SPADE channel per class, in this order), or the values.
        image_key, label_key: batch keys.
    """

    def __init__(
        self,
        num_train_timesteps: int,
        space: DiffusionSpace,
        labels: Mapping[str, int] | Sequence[int],
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps)
        self.space = space
        self.labels = label_values_of(labels)
        self.image_key = image_key
        self.label_key = label_key

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        images = _plain_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking)
        label = _plain_tensor(batchdata[self.label_key]).to(device=device, non_blocking=non_blocking)
        x0 = self.space.encode(images)
        seg = one_hot_labels(label, self.labels, size=x0.shape[2:])
        noise = self.get_noise(x0)
        timesteps = self.get_timesteps(x0)
        return x0, noise, (), {"noise": noise, "timesteps": timesteps, "seg": seg}


def _bind_seg(network, seg: torch.Tensor | None):
    """A wrapped (DDP) SPADE network with ``seg`` bound to its calls; any other network unchanged."""
    if seg is None or network is unwrap(network) or not isinstance(unwrap(network), SPADEDiffusionModelUNet):
        return network
    return partial(network, seg=seg)


class SpadeDiffusionInferer(DiffusionInferer):
    """MONAI's ``DiffusionInferer`` that also gives ``seg`` to a SPADE denoiser wrapped in ``DistributedDataParallel``.

    MONAI 1.6 passes ``seg`` only when ``isinstance(network, SPADEDiffusionModelUNet)``; a DDP wrapper fails that
    check, so under torchrun the label map never reaches the network (whose forward then fails for want of ``seg``).
    Here ``seg`` is bound to the wrapper before MONAI sees it and DDP forwards it to the module. For an unwrapped
    network this is MONAI's inferer unchanged.
    """

    def __call__(self, inputs, diffusion_model, noise, timesteps, condition=None, mode="crossattn", seg=None):
        return super().__call__(
            inputs, _bind_seg(diffusion_model, seg), noise, timesteps, condition=condition, mode=mode, seg=seg
        )

    def sample(self, input_noise, diffusion_model, *args, seg=None, **kwargs):
        return super().sample(input_noise, _bind_seg(diffusion_model, seg), *args, seg=seg, **kwargs)

    def get_likelihood(self, inputs, diffusion_model, *args, seg=None, **kwargs):
        return super().get_likelihood(inputs, _bind_seg(diffusion_model, seg), *args, seg=seg, **kwargs)


class LabelGuidedSampler:
    """DDPM sampling conditioned on a label map (Algorithm 1, lines 2-6), shaped like a MONAI inferer.

    F_T ~ N(0, I); for t = T-1 .. 0: F_{t-1} = mean(F_t, eps_theta(F_t, t, l)) + sigma_t z with the DDPM posterior
    mean (equal to line 4 of Algorithm 1 when x0 is not clipped) and the scheduler's variance, z = 0 at the last
    step. ``num_inference_steps`` respaces the chain and ``eta`` switches to DDIM steps (the shared
    :class:`~pathosynth.diffusion.steps.ReverseChain`). All noise comes from one CPU generator per sample, so a
    sample depends on its generator only, never on the batch it is drawn in or on the device.

    Args:
        scheduler: a MONAI ``DDPMScheduler`` (its noise schedule, ``prediction_type``, ``clip_sample`` and range).
        num_inference_steps: respace the T training steps to this many (None = all T, the paper's sampler).
        eta: None = DDPM posterior steps (the paper); a float = DDIM steps with that stochasticity.

    Why clip x0: with T = 100 the cosine schedule ends in beta = 0.999 (MONAI's cap) and alpha_bar_T ~ 2.4e-7, so at
    the first reverse step an eps error enters the x0 estimate multiplied by sqrt((1 - alpha_bar_T) / alpha_bar_T)
    ~ 2,000 (and x_{T-1} by ~ 32); unclipped, latent samples of a briefly trained model diverge (measured
    on ACDC at CPU scale: std ~50 instead of ~1). The bundle clips x0 to the data's range: [-1, 1] for images,
    ±4 standard deviations of the normalised latent features.
    """

    def __init__(self, scheduler, num_inference_steps: int | None = None, eta: float | None = None) -> None:
        self.scheduler = scheduler
        self.chain = ReverseChain(scheduler, num_inference_steps, eta)
        self.last_network_evaluations = 0

    @property
    def num_train_timesteps(self) -> int:
        return self.chain.num_train_timesteps

    def settings(self) -> dict:
        return {"sampler": "ddpm_ancestral" if self.chain.eta is None else "ddim", **self.chain.settings()}

    @torch.no_grad()
    def __call__(
        self,
        network: torch.nn.Module,
        seg: torch.Tensor,
        shape: Sequence[int],
        generators: Sequence[torch.Generator],
    ) -> torch.Tensor:
        """Samples (B, *shape) for the B one-hot label maps ``seg``; ``generators``: one per sample."""
        if len(generators) != seg.shape[0]:
            raise ValueError(f"need one generator per sample: {seg.shape[0]} label maps, {len(generators)} generators")
        template = torch.empty((seg.shape[0], *(int(s) for s in shape)), device=seg.device)
        x = sample_noise(template, generators)
        chain = self.chain
        for index in range(len(chain) - 1, -1, -1):
            eps = network(x, timesteps=chain.timestep(index, x.shape[0], x.device), seg=seg)
            stochastic = index > 0 and (chain.eta is None or chain.eta > 0)
            x = chain.step(eps, x, index, sample_noise(template, generators) if stochastic else None)
        self.last_network_evaluations = len(chain)
        return x
