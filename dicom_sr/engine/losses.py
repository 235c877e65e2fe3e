"""The losses of Eq. 2-7 and the discriminator objective.

:func:`generator_losses` computes only the terms whose weight in ``config.losses`` is non-zero,
and only the network passes those terms need (``F(G(x))`` exists only for the forward cycle,
``G(F(y))`` only for the backward one, the discriminators only for the adversarial term or
the D_hr perceptual fallback). It returns the unweighted value of every computed term, so a
caller (and the tests) can see exactly which terms an ablation computes.

Notation of the paper: ``x`` LR sons, ``y`` HR fathers, ``G: LR -> HR``, ``F: HR -> LR``.

Norms as written in Eq. 2, 3 and 6: each image contributes the L1 norm of its pixel difference
(L2 norm of its feature difference), and the batch is averaged (the ``1/N`` sum); the
adversarial term (Eq. 4-5) is ``-log D`` averaged over the patch map of each image. This is
what makes the paper's weights (5 / 0.1 / 5 / 0.3) a sensible balance: with per-pixel means
instead, ``gamma = 5`` on ``-log D`` outweighs ``alpha = 5`` on a mean L1 by the pixel count,
and on real ultrasound the GAN wrecked the reconstruction within 40 iterations (recon error
0.033 -> 0.14, measured).
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
    "paired_features",
    "l1_norm",
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


def paired_features(
    d: PatchDiscriminator, fake: torch.Tensor, real: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """D's features of ``fake`` and ``real`` from ONE forward pass of both.

    The PatchGAN has batch normalisation: run on a batch of fakes alone, it would normalise
    away exactly the per-channel statistics (contrast, high-frequency energy) that tell a
    blurred reconstruction from a sharp father, and D would stay at chance. Real and fake
    share every batch, in the discriminator step and in the generator step alike.
    """
    n = fake.shape[0]
    feats = d.features(torch.cat([fake, real.detach()], dim=0))
    return [f[:n] for f in feats], [f[n:].detach() for f in feats]


def feature_distance(
    nets: Networks,
    a: torch.Tensor,
    b: torch.Tensor,
    pair: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Perceptual distance of Eq. 3: L2 norm of the feature difference of ``a`` to target ``b``.

    VGG19 conv4_4 features when ``nets.vgg`` is set; otherwise the fallback, the activations of
    the five layers of ``D_hr`` (concatenated; its parameters frozen by the caller during the
    generator step); ``pair`` passes :func:`paired_features` when already computed.
    """
    if nets.vgg is not None:
        with torch.no_grad():
            fb = nets.vgg(b)
        return _l2_norm([nets.vgg(a)], [fb])
    if nets.d_hr is None:
        raise ValueError("perceptual loss needs VGG19 weights or D_hr")
    fa, fb = paired_features(nets.d_hr, a, b) if pair is None else pair
    return _l2_norm(fa, fb)


def l1_norm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1/N sum_i ||a_i - b_i||_1``: per-image L1 norm, averaged over the batch."""
    return (a - b).abs().flatten(1).sum(1).mean()


def _l2_norm(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
    """``1/N sum_i ||phi(a_i) - phi(b_i)||_2`` over the concatenation of the feature maps."""
    sq = sum((p - q).pow(2).flatten(1).sum(1) for p, q in zip(fa, fb, strict=True))
    return (sq + 1e-12).sqrt().mean()


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
    total and the unweighted terms (per-image norms averaged over the batch).
    """
    w = config.losses
    need_sr = w.pixel > 0 or w.perceptual > 0 or w.adversarial > 0 or w.cycle_forward > 0
    need_lr_fake = w.pixel > 0 or w.perceptual > 0 or w.adversarial > 0 or w.cycle_backward > 0
    sr = nets.g(x) if need_sr else None
    lr_fake = _degrade(nets, y, noise(y)) if need_lr_fake else None
    terms: dict[str, torch.Tensor] = {}
    if w.pixel > 0:
        terms["pixel"] = l1_norm(sr, y) + l1_norm(lr_fake, x)
    pair = None  # D_hr's features of (G(x), y), shared by the perceptual and adversarial terms
    if w.perceptual > 0:
        if nets.vgg is None and nets.d_hr is not None:
            pair = paired_features(nets.d_hr, sr, y)
        terms["perceptual"] = feature_distance(nets, sr, y, pair) + feature_distance(
            nets, lr_fake, x
        )
    if w.adversarial > 0:
        if nets.d_hr is None or nets.d_lr is None:
            raise ValueError("adversarial loss needs both discriminators")
        if pair is None:
            pair = paired_features(nets.d_hr, sr, y)
        logits_lr = nets.d_lr.out(paired_features(nets.d_lr, lr_fake, x)[0][-1])
        terms["adversarial"] = gan_loss(nets.d_hr.out(pair[0][-1]), True, config.gan_mode) + (
            gan_loss(logits_lr, True, config.gan_mode)
        )
    if w.cycle_forward > 0:  # LR -> SR -> LR
        terms["cycle_forward"] = l1_norm(_degrade(nets, sr, noise(sr)), x)
    if w.cycle_backward > 0:  # HR -> LR -> SR
        terms["cycle_backward"] = l1_norm(nets.g(lr_fake), y)
    if not terms:
        raise ValueError("all loss weights are zero: nothing to train")
    total = sum(getattr(w, k) * v for k, v in terms.items())
    return GeneratorStep(total=total, terms=terms, sr=sr, lr_fake=lr_fake)


def discriminator_loss(
    d: nn.Module, real: torch.Tensor, fake: torch.Tensor, mode: str
) -> torch.Tensor:
    """PatchGAN objective: real patches to 1, (pooled, detached) fakes to 0, halved.

    Real and fake go through D in one batch (see :func:`paired_features`).
    """
    n = real.shape[0]
    logits = d(torch.cat([real, fake.detach()], dim=0))
    return 0.5 * (gan_loss(logits[:n], True, mode) + gan_loss(logits[n:], False, mode))
