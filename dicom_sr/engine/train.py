"""Self-supervised training of ``G`` on the input frame(s): ZSSR or the paper's CycleGAN.

``method="zssr"`` trains ``G`` alone with L1 on father/son pairs (the ZSSR recipe, with the
Fig. 1 generator). ``method="cyclegan"`` trains ``G``, ``F`` and the two PatchGANs with the
losses of Eq. 2-7 (:mod:`dicom_sr.engine.losses`); the discriminators see a history pool of
generated images (Shrivastava et al. 2017).

Learning-rate policy (ZSSR, Shocher et al. 2018, applied to every optimiser): every
``lr_check_every // 4`` iterations the reconstruction error ``mean|G(downscale(c)) - c|`` is
measured on fixed central crops ``c`` (up to 256 px) of the input frame(s). Every
``lr_check_every`` iterations, once ``lr_min_iterations`` have passed since the start or the last
change, a line is fitted to the errors measured since then (within the last
``max(lr_min_iterations, lr_check_every)`` iterations); when its slope is not clearly negative,
``slope >= -std / 1.5`` with ``std`` the standard error of the slope (ZSSR's
``-learning_rate_change_ratio * slope < std``, ratio 1.5; ``>=`` so an exact plateau decays too),
the rate is divided by ``lr_factor``. Training stops when the rate falls below ``lr_min`` or at
the iteration cap.

Early stopping (``config.stop_patience`` > 0, given held-aside pairs): every evaluation the
mean ``|G(son) - father|`` of the guard's pairs, which no training crop touches, is measured;
training ends when it has not improved (by ``STOP_TOLERANCE``) for ``stop_patience``
iterations, and ``G`` goes back to the weights of its best evaluation. The cap stays the
limit. The rate policy then reads that error instead of the fixed crops' (which cost a
forward pass of up to 256 px crops each time: a quarter of a cine's training).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from dicom_sr.config import EngineConfig
from dicom_sr.engine.fathers import Fathers, Strip, build_fathers, sample_batch
from dicom_sr.engine.losses import Networks, discriminator_loss, generator_losses
from dicom_sr.engine.nets import (
    Degrader,
    Generator,
    PatchDiscriminator,
    VGG19Features,
    find_vgg19_weights,
)
from dicom_sr.engine.resize import downscale

__all__ = ["TrainResult", "train", "ImagePool", "plateau", "SLOPE_RATIO"]

logger = logging.getLogger(__name__)

#: ZSSR's ``learning_rate_change_ratio``: decay when ``slope >= -std / SLOPE_RATIO``.
SLOPE_RATIO = 1.5
_EVAL_CROP = 256
#: Early stopping: an evaluation improves on the best when its held-aside error is lower by
#: this share (smaller steps are noise of the crops drawn, not learning).
STOP_TOLERANCE = 1e-3
#: What ``TrainResult.perceptual`` (and the provenance) says when the term was left out for
#: want of VGG19 weights, as opposed to ``"off"`` (weight zero).
NO_VGG19 = "off (no VGG19 weights)"


@dataclass
class TrainResult:
    """What one training run produced (see CONTRACTS.md)."""

    generator_state: dict[str, torch.Tensor]
    iterations: int
    final_lr: float
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    perceptual: str = "off"


class ImagePool:
    """History of generated images for the discriminator (CycleGAN's ``ImagePool``).

    Until full, every new image is stored and returned; then each new image is, with
    probability 1/2, swapped for a random stored one (which is returned instead).
    """

    def __init__(self, size: int, gen: torch.Generator) -> None:
        self.size = size
        self.gen = gen
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return batch.detach()
        out = []
        for img in batch.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif torch.rand(1, generator=self.gen).item() < 0.5:
                j = int(torch.randint(self.size, (1,), generator=self.gen).item())
                out.append(self.images[j])
                self.images[j] = img
            else:
                out.append(img)
        return torch.cat(out, dim=0)


def plateau(steps: Sequence[float], errors: Sequence[float], ratio: float = SLOPE_RATIO) -> bool:
    """ZSSR's test: is the fitted slope of ``errors`` over ``steps`` not clearly negative?

    Least-squares line; ``std`` is the standard error of the slope (residual variance over
    ``n - 2``). True when ``slope >= -std / ratio``. Needs three points or more.
    """
    t = np.asarray(steps, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if t.size < 3:
        return False
    tc = t - t.mean()
    sxx = float((tc * tc).sum())
    slope = float((tc * (e - e.mean())).sum()) / sxx
    resid = e - (e.mean() + slope * tc)
    std = float(np.sqrt((resid * resid).sum() / (t.size - 2) / sxx))
    return -ratio * slope <= std


def _eval_crops(frames: Sequence[np.ndarray], scale: int, device: torch.device) -> torch.Tensor:
    """Central crops (up to 256 px, multiple of the scale) of the first and middle frames."""
    picks = sorted({0, len(frames) // 2})
    crops = []
    side = min(_EVAL_CROP, *(min(frames[i].shape) for i in picks)) // scale * scale
    for i in picks:
        f = frames[i]
        top, left = (f.shape[0] - side) // 2, (f.shape[1] - side) // 2
        crop = np.ascontiguousarray(f[top : top + side, left : left + side], dtype=np.float32)
        crops.append(torch.from_numpy(crop)[None, None])
    return torch.cat(crops).to(device)


def _perceptual_net(config: EngineConfig, device: torch.device) -> VGG19Features | None:
    path = find_vgg19_weights(config.vgg19_weights)
    if path is not None:
        logger.info("perceptual loss: VGG19 conv4_4 from %s", path)
        return VGG19Features.from_file(path).to(device)
    _warn_no_vgg19(config.perceptual_fallback)
    return None


@functools.cache
def _warn_no_vgg19(fallback: str) -> None:
    """Warn once per process and fallback. Deliberately process-wide: the missing file is a
    fact of this machine, not of one series, and a worker runs thousands of series; each
    series' provenance still records what its perceptual term was."""
    instead = "uses the features of D_hr instead" if fallback == "d_hr" else "is left out"
    logger.warning(
        "no VGG19 weights (engine.vgg19_weights or the torch hub cache): the perceptual loss %s"
        " (engine.perceptual_fallback)",
        instead,
    )


def _build(
    config: EngineConfig, method: str, device: torch.device, init_state: dict | None
) -> tuple[Networks, str]:
    """Networks, initialised under ``config.seed`` without touching the global RNG."""
    w = config.losses
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        g = Generator(config.scale)
        if init_state is not None:
            g.load_state_dict(init_state)
        if method == "zssr":
            return Networks(g=g.to(device), f=nn.Identity()), "off"
        f = Degrader(config.scale)
        vgg = _perceptual_net(config, device) if w.perceptual > 0 else None
        if vgg is not None:
            perceptual = "vgg19"
        elif w.perceptual == 0:
            perceptual = "off"
        elif config.perceptual_fallback == "d_hr":
            perceptual = "d_hr"
        else:
            perceptual = NO_VGG19
        need_d = w.adversarial > 0 or perceptual == "d_hr"
        d_hr = PatchDiscriminator().to(device) if need_d else None
        d_lr = PatchDiscriminator().to(device) if w.adversarial > 0 else None
    nets = Networks(
        g=g.to(device),
        f=f.to(device),
        d_hr=d_hr,
        d_lr=d_lr,
        vgg=vgg,
        degrade=lambda t: downscale(t, config.scale, config),
    )
    return nets, perceptual


@dataclass
class _Loop:
    """Everything one training run steps: networks, optimisers, random sources, the rate."""

    config: EngineConfig
    method: str
    nets: Networks
    opts: list[torch.optim.Optimizer]
    discs: list[nn.Module]
    train_d: bool
    pools: list[ImagePool]
    fathers: Fathers
    gen: torch.Generator  # CPU: crops, augmentation, the pools
    noise_gen: torch.Generator | None  # on the device (None on the CPU: ``gen``)
    rate: float
    perceptual: str

    def noise(self, t: torch.Tensor) -> torch.Tensor:
        """A Gaussian map like ``t``, drawn on its device (no blocking host copy on CUDA)."""
        g = self.noise_gen if self.noise_gen is not None else self.gen
        return torch.randn(t.shape, generator=g, device=g.device).to(t.device)


def _setup(
    frames: Sequence[np.ndarray],
    config: EngineConfig,
    method: str,
    init_state: dict | None,
    rate: float,
    device: torch.device,
    strips: Sequence[Strip | None] | None,
) -> _Loop:
    """Fathers, networks and optimisers for one run, seeded by ``config.seed``."""
    gen = torch.Generator().manual_seed(config.seed)
    noise_gen = None
    if device.type == "cuda":  # the CPU keeps one stream, as it always had
        noise_gen = torch.Generator(device=device).manual_seed(config.seed)
    fathers = build_fathers(frames, config, device, strips)
    nets, perceptual = _build(config, method, device, init_state)
    if config.channels_last:  # G's step 1.4x faster on a 2-core AVX512 CPU (train_cost.py)
        nets.g.to(memory_format=torch.channels_last)
    if perceptual == NO_VGG19:
        # no feature space (no VGG19, fallback "none"): the losses must not compute the term
        off = config.losses.model_copy(update={"perceptual": 0.0})
        config = config.model_copy(update={"losses": off})
    g_params = list(nets.g.parameters())
    if method == "cyclegan":
        g_params += list(nets.f.parameters())
    opts: list[torch.optim.Optimizer] = [torch.optim.Adam(g_params, lr=rate)]
    discs = [d for d in (nets.d_hr, nets.d_lr) if d is not None]
    train_d = method == "cyclegan" and config.losses.adversarial > 0
    if train_d:
        d_params = [p for d in discs for p in d.parameters()]
        opts.append(torch.optim.Adam(d_params, lr=rate, betas=(0.5, 0.999)))
    pools = [ImagePool(config.pool_size, gen), ImagePool(config.pool_size, gen)]
    return _Loop(
        config,
        method,
        nets,
        opts,
        discs,
        train_d,
        pools,
        fathers,
        gen,
        noise_gen,
        rate,
        perceptual,
    )


def _step(loop: _Loop) -> dict[str, torch.Tensor]:
    """One iteration: a batch, the generator step, the discriminators' step.

    Returns the loss terms detached and left on the device: reading them (a GPU sync each)
    is :class:`_History`'s business, once per interval.
    """
    config, nets = loop.config, loop.nets
    x, y = sample_batch(loop.fathers, config, loop.gen, loop.noise_gen)
    if loop.method == "zssr":
        loss = nn.functional.l1_loss(nets.g(x), y)
        terms = {"pixel": loss}
    else:
        for d in loop.discs:
            d.requires_grad_(False)
        step = generator_losses(x, y, nets, config, loop.noise)
        loss, terms = step.total, dict(step.terms)
    loop.opts[0].zero_grad(set_to_none=True)
    loss.backward()
    loop.opts[0].step()
    if loop.train_d:
        for d in loop.discs:
            d.requires_grad_(True)
        pools = loop.pools
        d_loss_hr = discriminator_loss(nets.d_hr, y, pools[0].query(step.sr), config.gan_mode)
        d_loss_lr = discriminator_loss(nets.d_lr, x, pools[1].query(step.lr_fake), config.gan_mode)
        loop.opts[1].zero_grad(set_to_none=True)
        (d_loss_hr + d_loss_lr).backward()
        loop.opts[1].step()
        terms["d_hr"], terms["d_lr"] = d_loss_hr, d_loss_lr
    terms["total"] = loss
    return {k: v.detach() for k, v in terms.items()}


class _EarlyStop:
    """Held-aside error of ``G`` at every evaluation; the best weights and when to stop."""

    def __init__(self, pairs: tuple[list[torch.Tensor], list[torch.Tensor]], patience: int):
        self.lr, self.hr = list(pairs[0]), list(pairs[1])
        self.patience = patience
        self.best = math.inf
        self.best_it = 0
        self.state: dict[str, torch.Tensor] | None = None
        self.curve: list[float] = []

    @torch.no_grad()
    def update(self, g: nn.Module, it: int) -> bool:
        """Measure at iteration ``it``; True when training should end."""
        # one host read per pair (8 small syncs on CUDA every evaluation): kept as measured
        err = sum(float((g(x) - y).abs().mean()) for x, y in zip(self.lr, self.hr, strict=True))
        err /= len(self.lr)
        self.curve.append(err)
        if err < self.best * (1.0 - STOP_TOLERANCE):
            self.best, self.best_it = err, it
            self.state = {k: v.detach().clone() for k, v in g.state_dict().items()}
        return it - self.best_it >= self.patience


class _History:
    """Per-iteration loss terms, kept on the device and read in one transfer per interval."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {"lr": [], "recon": [], "recon_iter": []}
        self._pending: dict[str, list[torch.Tensor]] = {}

    def add(self, terms: dict[str, torch.Tensor], loop: _Loop) -> None:
        for k, v in terms.items():
            self.values.setdefault(k, [])
            self._pending.setdefault(k, []).append(v)
        self.values["lr"].append(loop.opts[0].param_groups[0]["lr"])
        if loop.train_d:
            self.values.setdefault("lr_d", []).append(loop.opts[1].param_groups[0]["lr"])

    def flush(self) -> dict[str, list[float]]:
        """Move the pending terms to ``values`` (one device-to-host copy); return ``values``."""
        keys = [k for k, v in self._pending.items() if v]
        if keys:
            flat = torch.cat([torch.stack(self._pending[k]).float() for k in keys]).cpu()
            rows = flat.split([len(self._pending[k]) for k in keys])
            for k, row in zip(keys, rows, strict=True):
                self.values[k].extend(row.tolist())
        self._pending.clear()
        return self.values


def _adjust_rate(loop: _Loop, history: dict[str, list[float]], it: int, last_change: int) -> int:
    """ZSSR's policy at iteration ``it``: divide the rate on a plateau of the recon error.

    Returns the iteration of the last change (``it`` when it changed now)."""
    config = loop.config
    window = max(config.lr_min_iterations, config.lr_check_every)
    lo = max(last_change, it - window)
    recent = [
        (s, e) for s, e in zip(history["recon_iter"], history["recon"], strict=True) if s > lo
    ]
    if len(recent) < 3 or not plateau([s for s, _ in recent], [e for _, e in recent]):
        return last_change
    loop.rate /= config.lr_factor
    for opt in loop.opts:
        for group in opt.param_groups:
            group["lr"] = loop.rate
    logger.debug("iteration %d: recon error plateau, lr -> %.2e", it, loop.rate)
    return it


def train(
    frames: Sequence[np.ndarray],
    config: EngineConfig,
    *,
    method: Literal["cyclegan", "zssr"],
    init_state: dict | None = None,
    iterations: int | None = None,
    lr: float | None = None,
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
    strips: Sequence[Strip | None] | None = None,
    held_pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
    recon: bool = True,
) -> TrainResult:
    """Train ``G`` on ``frames`` (2-D float32 in [0, 1]) by self-supervision.

    ``iterations`` / ``lr`` override ``config.iterations`` / ``config.lr`` (fine-tuning);
    ``init_state`` warm-starts ``G``; ``strips`` (one per frame) are bands no training crop
    touches (the guard's); ``held_pairs`` (sons, fathers) cut from them stop training early
    when ``config.stop_patience`` is set. ``recon=False``: the caller drops the history, so
    the reconstruction error is measured only where the rate policy could act within the run
    (a short refit saves those forward passes). Deterministic for a given ``config.seed`` and
    device.
    """
    if method not in ("cyclegan", "zssr"):
        raise ValueError(f"train: method must be 'cyclegan' or 'zssr', got {method!r}")
    t0 = time.perf_counter()
    total = config.iterations if iterations is None else iterations
    loop = _setup(
        frames, config, method, init_state, config.lr if lr is None else lr, device, strips
    )
    history = _History()
    eval_every = max(1, config.lr_check_every // 4)
    stop = None
    if held_pairs and held_pairs[0] and config.stop_patience > 0:
        lr_pairs = [x.to(device) for x in held_pairs[0]]
        stop = _EarlyStop((lr_pairs, [y.to(device) for y in held_pairs[1]]), config.stop_patience)
    # the first iteration at which the rate policy may act (a check, past lr_min_iterations)
    checks = -(-max(config.lr_min_iterations, 1) // config.lr_check_every)
    measure = stop is not None or recon or total >= checks * config.lr_check_every
    if stop is None and measure:  # the rate policy's error: fixed crops of the frames
        eval_lr_hr = _eval_crops(frames, config.scale, device)
        eval_lr = downscale(eval_lr_hr, config.scale, config)
    last_change = done = 0
    for it in range(1, total + 1):
        history.add(_step(loop), loop)
        done = it
        if measure and it % eval_every == 0:
            if stop is not None:
                ended = stop.update(loop.nets.g, it)
                err = stop.curve[-1]
            else:
                ended = False
                with torch.no_grad():  # the interval's one sync
                    err = (loop.nets.g(eval_lr) - eval_lr_hr).abs().mean().item()
            values = history.flush()
            values["recon"].append(err)
            values["recon_iter"].append(float(it))
            if it % config.lr_check_every == 0 and it - last_change >= config.lr_min_iterations:
                last_change = _adjust_rate(loop, values, it, last_change)
            if ended:
                logger.debug("iteration %d: held-aside error flat since %d", it, stop.best_it)
                break
        if progress is not None:
            progress(it, total)
        if loop.rate < config.lr_min:
            logger.debug("iteration %d: lr %.2e below lr_min, stopping", it, loop.rate)
            break

    if stop is not None and stop.state is not None:
        loop.nets.g.load_state_dict(stop.state)
        history.values["held"] = stop.curve
        history.values["best_iteration"] = [float(stop.best_it)]
    state = {k: v.detach().to("cpu").clone() for k, v in loop.nets.g.state_dict().items()}
    return TrainResult(
        generator_state=state,
        iterations=done,
        final_lr=loop.rate,
        seconds=time.perf_counter() - t0,
        history=history.flush(),
        perceptual=loop.perceptual,
    )
