"""Stage 1 of FQCDM: a vector-quantised autoencoder trained against a (dual-branch) discriminator.

FQCDM's feature-quantisation block (paper Sec. 3.2, Eq. 7) is trained with
``L = L_reconstruct + L_codebook + lambda * L_GAN``: a VQGAN recipe with the paper's dual-branch
discriminator (Sec. 3.4) and VQGAN's adaptive lambda. MONAI ships the pieces (``VQVAE``, patch
discriminators, ``AdversarialTrainer``) but not this iteration, because

- ``AdversarialTrainer`` expects a generator that returns an image; ``VQVAE`` returns
  ``(reconstruction, quantization_loss)`` and the quantisation loss must join the generator loss;
- the dual-branch discriminator judges an image *given the Canny edges of the real slice*
  (``D(image, edges=...)``), for the reconstruction as well as for the real slice;
- the adversarial weight is adaptive: lambda balances the gradient norms of the reconstruction and the
  GAN losses at the decoder's last layer (:func:`pathosynth.losses.adversarial.adaptive_adversarial_weight`), which
  needs both losses of the same forward pass before the backward pass.

:class:`AdversarialVQTrainer` is a MONAI ``Trainer`` whose ``_iteration`` does exactly that, so MONAI and
ignite handlers (``StatsHandler``, ``TensorBoardStatsHandler``, ``LrScheduleHandler``, ``ProgressBar``,
:class:`~pathosynth.engines.checkpoint.ResumableCheckpoint`) attach as to any MONAI trainer. One iteration:

1. generator step: ``recon, q = VQVAE(x)``; ``L_rec = L1(recon, x) [+ w_p * perceptual(recon, x)]``;
   ``L_G = L_rec + w_q * q``; from ``adversarial_start_step`` on also ``+ lambda * (-mean D(recon | edges(x)))``
   with ``lambda = adversarial_weight * ||grad_w L_rec|| / ||grad_w L_GAN||`` at the decoder's last layer ``w``.
   The discriminator is frozen during this step (its weights get no gradient; only the generator moves).
2. discriminator step (from ``adversarial_start_step`` on): hinge loss on ``D(x | edges(x))`` versus
   ``D(recon.detach() | edges(x))``. The real slice's edges are computed once per iteration and used in
   both steps and for both judgements, so real and fake differ only in the judged image.

Before ``adversarial_start_step`` neither adversarial term exists (VQGAN's ``disc_start``: the GAN factor
is zero for the generator *and* the discriminator), so the output holds no adversarial entries then.

``L_codebook`` with MONAI's ``VQVAE``: its codebook is updated by exponential moving averages of the encoder
outputs assigned to each code (VQ-VAE, van den Oord et al. 2017, App. A.1), not by gradients, so the
codebook half of the usual VQ loss has no gradient to give; the ``quantization_loss`` the network returns
is the commitment term ``beta * MSE(E(x), sg[e])`` (the paper's "mean squared error") that keeps the encoder
close to its codes. It is weighted by ``quantization_weight``.

Distributed training: both networks may be DDP-wrapped (the generator step calls the unwrapped
discriminator, so DDP never waits for discriminator gradients that step does not produce); convert the
discriminator's BatchNorm with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` for batch statistics over
all ranks.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.utils import convert_to_tensor
from monai.utils.enums import CommonKeys as Keys
from torch import Tensor, nn

from ..distributed import unwrap
from ..losses.adversarial import adaptive_adversarial_weight, hinge_discriminator_loss, hinge_generator_loss

__all__ = ["LOSS_TERMS", "AdversarialVQTrainer", "decoder_last_layer", "local_perceptual_loss", "vq_loss_terms"]

#: scalar entries of the trainer's output, in logging order; the adversarial ones exist only once the GAN is on.
LOSS_TERMS = (
    "loss",  # total generator loss that was back-propagated
    "rec_loss",  # L_reconstruct = l1_loss + perceptual_weight * perceptual_loss
    "l1_loss",
    "perceptual_loss",  # only with a perceptual loss
    "quantization_loss",  # VQVAE's commitment loss (codebook updated by EMA, see the bundle docs)
    "g_adv_loss",  # generator hinge loss -mean D(recon)
    "adv_weight",  # lambda (adaptive weight x adversarial_weight)
    "d_loss",  # discriminator hinge loss
    "d_real",  # mean logit on real slices
    "d_fake",  # mean logit on reconstructions
)


def vq_loss_terms(output) -> dict[str, float]:
    """The scalar loss terms of an :class:`AdversarialVQTrainer` output, for ``StatsHandler`` / TensorBoard.

    Use as ``output_transform`` (``"$pathosynth.engines.adversarial.vq_loss_terms"``). Accepts the output dict, or a
    decollated list of them (the terms are then taken from the first item).
    """
    if isinstance(output, (list, tuple)):
        output = output[0] if output else {}
    terms = {}
    for key in LOSS_TERMS:
        value = output.get(key) if isinstance(output, Mapping) else None
        if value is not None:
            terms[key] = float(value.item() if isinstance(value, Tensor) else value)
    return terms


def decoder_last_layer(network: nn.Module) -> nn.Parameter:
    """The weight of the last convolution of ``network.decoder`` (or of ``network``): VQGAN's ``last_layer``.

    The adaptive adversarial weight compares gradients at this layer: it is the one layer every image-space
    loss reaches first, whatever the decoder's depth. For MONAI's ``VQVAE`` it is the final transposed conv
    (``decoder.blocks[-1].conv.weight``, or the one before an output activation).
    """
    module = unwrap(network)
    decoder = getattr(module, "decoder", module)
    convs = [m for m in decoder.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not convs:
        raise ValueError(f"{type(decoder).__name__} has no convolution whose weight could serve as the last layer")
    return convs[-1].weight


def local_perceptual_loss(
    weights_path: str | os.PathLike | None = None,
    network_type: str = "resnet50",
    state_dict_key: str | None = None,
    device: torch.device | str | None = None,
) -> nn.Module | None:
    """MONAI ``PerceptualLoss`` built only from a local weights file; ``None`` (term off) without one.

    Why this wrapper: ``monai.losses.PerceptualLoss`` downloads its weights by default (LPIPS alex/vgg/squeeze,
    RadImageNet and MedicalNet through torch hub, torchvision ImageNet weights). In MONAI 1.6 only
    ``network_type="resnet50"`` accepts a local file (``pretrained_path``), and it needs an importable
    torchvision. So: no file -> ``None`` and the bundle trains without the perceptual term (documented
    fallback); a file -> ResNet-50 features (``layer4``) loaded with ``torch.load(..., weights_only=True)``,
    never a download. ``state_dict_key`` picks the state dict inside a checkpoint dict.
    """
    if weights_path is None or str(weights_path).strip() == "":
        return None
    if network_type != "resnet50":
        raise ValueError(
            f"perceptual network_type {network_type!r} would download its weights; only 'resnet50' loads a local file "
            "(monai.losses.PerceptualLoss pretrained_path). Leave perceptual_weights_path null to train without it."
        )
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"perceptual weights file not found: {path} (a local torchvision resnet50 state dict; "
            "nothing is downloaded). Leave perceptual_weights_path null to train without the perceptual term."
        )
    try:  # PerceptualLoss imports torchvision lazily; fail here, before training, with a clear reason
        importlib.import_module("torchvision.models")
    except Exception as err:  # ImportError, or a torchvision build that does not match torch
        raise ImportError(
            "the resnet50 perceptual loss needs torchvision, which could not be imported "
            f"({type(err).__name__}: {err}); "
            f"install a torchvision matching torch {torch.__version__}, or leave perceptual_weights_path null"
        ) from err
    from monai.losses import PerceptualLoss

    loss = PerceptualLoss(
        spatial_dims=2,
        network_type="resnet50",
        is_fake_3d=False,
        pretrained=True,
        pretrained_path=str(path),
        pretrained_state_dict_key=state_dict_key,
    )
    return loss.to(device) if device is not None else loss


class AdversarialVQTrainer(Trainer):
    """MONAI trainer for a VQ autoencoder with a (dual-branch) discriminator, FQCDM Eq. 7 (see the module doc).

    Args:
        device: device to train on.
        max_epochs: epochs to run (an epoch is ``epoch_length`` iterations).
        train_data_loader: yields dicts holding ``image_key`` (``(B, C, H, W)`` slices).
        network: the autoencoder, called as ``network(x) -> (reconstruction, quantization_loss)`` (MONAI
            ``VQVAE``; DDP-wrapped is fine).
        optimizer: its optimizer.
        discriminator: judges images. If it has an ``edges(real)`` method (``DualBranchDiscriminator``) it is
            called as ``D(image, edges=edges(real))``, otherwise as ``D(image)``; a list/tuple output (MONAI
            ``PatchDiscriminator``: features then logits) is reduced to its last item. The plain call lets the
            paper's PatchGAN-only ablation run with the same trainer.
        d_optimizer: the discriminator's optimizer.
        epoch_length: iterations per epoch (default ``len(train_data_loader)``).
        non_blocking: passed to the host-to-device copy.
        image_key: batch key of the slices.
        reconstruction_loss: pixel loss ``f(recon, x)``; default L1 (VQGAN).
        perceptual_loss: optional ``f(recon, x)`` (e.g. :func:`local_perceptual_loss`); ``None`` = off.
        perceptual_weight: its weight inside ``L_rec``.
        quantization_weight: weight of the VQVAE's quantisation (commitment) loss.
        adversarial_weight: base factor of the adaptive lambda (VQGAN's ``disc_weight``).
        adversarial_start_step: optimisation steps without any adversarial term (0 = from the first step).
            Counted in global iterations, so a resumed run continues where it stopped.
        adaptive_weight: False uses ``lambda = adversarial_weight`` (no gradient balancing).
        max_adaptive_weight: clamp of the adaptive ratio (VQGAN: 1e4).
        generator_loss: ``f(logits_fake)``; default margin hinge (VQGAN).
        discriminator_loss: ``f(logits_real, logits_fake)``; default margin hinge (VQGAN).
        last_layer: the decoder weight for lambda: a parameter, a parameter name of ``network``, or None to
            use :func:`decoder_last_layer`.
        key_train_metric, additional_metrics, metric_cmp_fn: as for ``SupervisedTrainer`` (e.g. an ignite
            ``Average`` of ``rec_loss`` per epoch for ``ReduceLROnPlateau``).
        train_handlers: ignite/MONAI handlers to attach.
        decollate: decollate the output after each iteration (default False: the output is a dict of batch
            tensors and scalars; :func:`vq_loss_terms` reads either form).
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        to_kwargs: extra ``Tensor.to`` arguments for the batch.

    Output (``engine.state.output``): ``image``, ``pred`` (detached reconstruction) and the scalar terms of
    :data:`LOSS_TERMS` (detached), adversarial ones only from ``adversarial_start_step`` on.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        discriminator: nn.Module,
        d_optimizer: torch.optim.Optimizer,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        image_key: str = "image",
        reconstruction_loss: Callable | None = None,
        perceptual_loss: Callable | None = None,
        perceptual_weight: float = 1.0,
        quantization_weight: float = 1.0,
        adversarial_weight: float = 1.0,
        adversarial_start_step: int = 0,
        adaptive_weight: bool = True,
        max_adaptive_weight: float = 1e4,
        generator_loss: Callable = hinge_generator_loss,
        discriminator_loss: Callable = hinge_discriminator_loss,
        last_layer: nn.Parameter | str | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        decollate: bool = False,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
    ) -> None:
        if int(adversarial_start_step) < 0:
            raise ValueError(f"adversarial_start_step must be >= 0, got {adversarial_start_step}")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=False,
            decollate=decollate,
            to_kwargs=to_kwargs,
        )
        self.network = network
        self.optimizer = optimizer
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.image_key = image_key
        self.reconstruction_loss = reconstruction_loss if reconstruction_loss is not None else nn.L1Loss()
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = float(perceptual_weight)
        self.quantization_weight = float(quantization_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.adversarial_start_step = int(adversarial_start_step)
        self.adaptive_weight = bool(adaptive_weight)
        self.max_adaptive_weight = float(max_adaptive_weight)
        self.generator_loss = generator_loss
        self.discriminator_loss = discriminator_loss
        if isinstance(last_layer, str):
            last_layer = dict(unwrap(network).named_parameters())[last_layer]
        self.last_layer = last_layer if last_layer is not None else decoder_last_layer(network)
        self.optim_set_to_none = optim_set_to_none

    # ------------------------------------------------------------------------------------------ pieces
    def adversarial_active(self, iteration: int) -> bool:
        """Whether the 1-based ``iteration`` uses the GAN terms (after ``adversarial_start_step`` plain steps)."""
        return iteration - 1 >= self.adversarial_start_step

    def _images(self, batchdata) -> Tensor:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images = batchdata[self.image_key] if isinstance(batchdata, Mapping) else batchdata
        images = convert_to_tensor(images, track_meta=False)  # MetaTensor -> Tensor: the losses need no metadata
        return images.to(self.state.device, non_blocking=self.non_blocking, **self.to_kwargs)

    @staticmethod
    def _judge(discriminator: nn.Module, images: Tensor, edges: Tensor | None) -> Tensor:
        logits = discriminator(images, edges=edges) if edges is not None else discriminator(images)
        return logits[-1] if isinstance(logits, (list, tuple)) else logits

    def _lambda(self, rec_loss: Tensor, g_adv_loss: Tensor) -> Tensor:
        """``adversarial_weight * ||grad L_rec|| / ||grad L_GAN||`` at the decoder's last layer (VQGAN Eq. 7)."""
        if not self.adaptive_weight:
            return torch.tensor(self.adversarial_weight, device=rec_loss.device)
        ratio = adaptive_adversarial_weight(rec_loss, g_adv_loss, self.last_layer, max_weight=self.max_adaptive_weight)
        return ratio * self.adversarial_weight

    # ------------------------------------------------------------------------------------------ iteration
    def _iteration(self, engine: AdversarialVQTrainer, batchdata) -> dict:
        """One generator step, then (once the GAN is on) one discriminator step; see the module docstring."""
        real = engine._images(batchdata)
        adversarial = engine.adversarial_active(engine.state.iteration)
        judge = unwrap(engine.discriminator)
        # Edges of the real slice, once: the generator's fake, the discriminator's real and fake all see them.
        edges = judge.edges(real) if adversarial and callable(getattr(judge, "edges", None)) else None
        out: dict = {Keys.IMAGE: real}
        engine.state.output = out

        # --- generator (autoencoder) step
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        recon, quantization_loss = engine.network(real)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        l1_loss = engine.reconstruction_loss(recon, real)
        rec_loss = l1_loss
        if engine.perceptual_loss is not None:
            perceptual = engine.perceptual_loss(recon.float(), real.float())
            rec_loss = rec_loss + engine.perceptual_weight * perceptual
            out["perceptual_loss"] = perceptual.detach()
        loss = rec_loss + engine.quantization_weight * quantization_loss
        if adversarial:
            # Freeze D for the generator step: the GAN gradient must move the autoencoder only. The unwrapped
            # module is called so a DDP-wrapped D does not wait for gradients this step never produces.
            trainable = [p.requires_grad for p in judge.parameters()]
            judge.requires_grad_(False)
            judge.train()
            try:
                g_adv_loss = engine.generator_loss(engine._judge(judge, recon, edges))
            finally:
                for p, flag in zip(judge.parameters(), trainable):
                    p.requires_grad_(flag)
            adv_weight = engine._lambda(rec_loss, g_adv_loss)
            loss = loss + adv_weight * g_adv_loss
            out["g_adv_loss"] = g_adv_loss.detach()
            out["adv_weight"] = adv_weight.detach()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        out.update(
            {
                Keys.PRED: recon.detach(),
                Keys.LOSS: loss.detach(),
                "rec_loss": rec_loss.detach(),
                "l1_loss": l1_loss.detach(),
                "quantization_loss": quantization_loss.detach(),
            }
        )

        # --- discriminator step (real vs detached reconstruction, same edges)
        if adversarial:
            engine.discriminator.train()
            engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            logits_real = engine._judge(engine.discriminator, real.detach(), edges)
            logits_fake = engine._judge(engine.discriminator, recon.detach(), edges)
            d_loss = engine.discriminator_loss(logits_real, logits_fake)
            d_loss.backward()
            engine.d_optimizer.step()
            out.update(
                {
                    "d_loss": d_loss.detach(),
                    "d_real": logits_real.detach().mean(),
                    "d_fake": logits_fake.detach().mean(),
                }
            )

        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
