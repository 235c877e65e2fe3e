"""The losses of Eq. 2-7 and the discriminator objective.

:func:`generator_losses` computes only the terms whose weight in ``config.losses`` is non-zero,
and only the network passes those terms need (``F(G(x))`` exists only for the forward cycle,
``G(F(y))`` only for the backward one, the discriminators only for the adversarial term or
the D_hr perceptual fallback). It returns the unweighted value of every computed term, so a
caller (and the tests) can see exactly which terms an ablation computes.

Notation of the paper: ``x`` LR sons, ``y`` HR fathers, ``G: LR -> HR``, ``F: HR -> LR``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn

from dicom_sr.config import EngineConfig
from dicom_sr.engine.nets import PatchDiscriminator, VGG19Features

__all__ = [
    "TERMS",
    "Networks",
    "GeneratorStep",
    "generator_losses",
    "discriminator_loss",
    "gan_loss",
    "feature_distance",
]

#: Term names, as in :class:`dicom_sr.config.LossWeights`.
TERMS = ("pixel", "perceptual", "adversarial", "cycle_forward", "cycle_backward")


@dataclass
class Networks:
    """The CycleGAN's networks. ``d_hr``/``d_lr``/``vgg`` are None when no term needs them."""

    g: nn.Module
    f: nn.Module
    d_hr: PatchDiscriminator | None = None
    d_lr: PatchDiscriminator | None = None
    vgg: VGG19Features | None = None
    #: ``F``'s skip: the configured degradation (``resize.downscale``), or None
    degrade: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class GeneratorStep:
    """Result of one generator-side evaluation."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    #: generated images the discriminators train on (detached later): ``G(x)``, ``F(y)``
    sr: torch.Tensor | None
    lr_fake: torch.Tensor | None


def gan_loss(logits: torch.Tensor, real: bool, mode: str) -> torch.Tensor:
    """``-log D`` (``mode="log"``, as a logit BCE) or least squares (``"lsgan"``) to a target."""
    if mode == "log":
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return nnf.binary_cross_entropy_with_logits(logits, target)
    if mode == "lsgan":
        return ((logits - (1.0 if real else 0.0)) ** 2).mean()
    raise ValueError(f"unknown gan_mode {mode!r} (expected 'log' or 'lsgan')")


def feature_distance(
    nets: Networks, a: torch.Tensor, b: torch.Tensor, feats_a: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """Perceptual distance of Eq. 3: mean squared feature difference.

    VGG19 conv4_4 features when ``nets.vgg`` is set; otherwise the fallback, the activations of
    the five layers of ``D_hr`` (its parameters frozen by the caller during the generator
    step), averaged over layers; ``feats_a`` passes ``D_hr.features(a)`` when already computed.
    ``b`` is the target and carries no gradient.
    """
    if nets.vgg is not None:
        with torch.no_grad():
            fb = nets.vgg(b)
        return nnf.mse_loss(nets.vgg(a), fb)
    if nets.d_hr is None:
        raise ValueError("perceptual loss needs VGG19 weights or D_hr")
    fa = nets.d_hr.features(a) if feats_a is None else feats_a
    with torch.no_grad():
        fb = nets.d_hr.features(b)
    return torch.stack([nnf.mse_loss(p, q) for p, q in zip(fa, fb, strict=True)]).mean()


def _degrade(nets: Networks, hr: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    skip = nets.degrade(hr) if nets.degrade is not None else None
    return nets.f(hr, noise, skip)


def generator_losses(
    x: torch.Tensor,
    y: torch.Tensor,
    nets: Networks,
    config: EngineConfig,
    noise: Callable[[torch.Tensor], torch.Tensor],
) -> GeneratorStep:
    """Eq. 7 for LR sons ``x`` and HR fathers ``y``: only the non-zero-weight terms.

    ``noise(hr)`` returns the Gaussian noise map fed to ``F`` with ``hr``. Returns the weighted
    total and the unweighted terms (means over pixels and batch).
    """
    w = config.losses
    need_sr = w.pixel > 0 or w.perceptual > 0 or w.adversarial > 0 or w.cycle_forward > 0
    need_lr_fake = w.pixel > 0 or w.perceptual > 0 or w.adversarial > 0 or w.cycle_backward > 0
    sr = nets.g(x) if need_sr else None
    lr_fake = _degrade(nets, y, noise(y)) if need_lr_fake else None
    terms: dict[str, torch.Tensor] = {}
    if w.pixel > 0:
        terms["pixel"] = nnf.l1_loss(sr, y) + nnf.l1_loss(lr_fake, x)
    sr_feats = None  # D_hr's features of G(x), shared by the perceptual and adversarial terms
    if w.perceptual > 0:
        if nets.vgg is None and nets.d_hr is not None:
            sr_feats = nets.d_hr.features(sr)
        terms["perceptual"] = feature_distance(nets, sr, y, sr_feats) + feature_distance(
            nets, lr_fake, x
        )
    if w.adversarial > 0:
        if nets.d_hr is None or nets.d_lr is None:
            raise ValueError("adversarial loss needs both discriminators")
        logits_hr = nets.d_hr(sr) if sr_feats is None else nets.d_hr.out(sr_feats[-1])
        terms["adversarial"] = gan_loss(logits_hr, True, config.gan_mode) + gan_loss(
            nets.d_lr(lr_fake), True, config.gan_mode
        )
    if w.cycle_forward > 0:  # LR -> SR -> LR
        terms["cycle_forward"] = nnf.l1_loss(_degrade(nets, sr, noise(sr)), x)
    if w.cycle_backward > 0:  # HR -> LR -> SR
        terms["cycle_backward"] = nnf.l1_loss(nets.g(lr_fake), y)
    if not terms:
        raise ValueError("all loss weights are zero: nothing to train")
    total = sum(getattr(w, k) * v for k, v in terms.items())
    return GeneratorStep(total=total, terms=terms, sr=sr, lr_fake=lr_fake)


def discriminator_loss(
    d: nn.Module, real: torch.Tensor, fake: torch.Tensor, mode: str
) -> torch.Tensor:
    """PatchGAN objective: real patches to 1, (pooled, detached) fakes to 0, halved."""
    return 0.5 * (gan_loss(d(real), True, mode) + gan_loss(d(fake.detach()), False, mode))
