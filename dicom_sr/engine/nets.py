"""The four networks of the self-supervised CycleGAN (Liu et al., Fig. 1-3).

- :class:`Generator` ``G: LR -> HR``: multi-scale encoder-decoder of Fig. 1 / Table I.
- :class:`Degrader` ``F: HR -> LR``: the degradation network of Fig. 2 (after Bulat et al. 2018).
- :class:`PatchDiscriminator` ``D_hr`` / ``D_lr``: PatchGAN of Fig. 3.
- :class:`VGG19Features`: VGG19 up to conv4_4 for the perceptual loss (Eq. 3).

All are fully convolutional: any frame size, any batch. Interpolation inside ``G`` and the
skip path of ``F`` use the kernels of :mod:`dicom_sr.engine.resize`, so that the sons, the
generator and back projection share one pixel grid.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from dicom_sr.engine.resize import upscale_bicubic

__all__ = [
    "Generator",
    "Degrader",
    "PatchDiscriminator",
    "VGG19Features",
    "find_vgg19_weights",
    "count_parameters",
]

logger = logging.getLogger(__name__)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class _Branch(nn.Module):
    """One scale of Fig. 1: an encoder-decoder predicting a detail image.

    ``widths`` lists the channel width of each encoder group (two 3x3 convolutions each); the
    first convolution of every group but the first halves the resolution (stride 2). The decoder
    mirrors it with groups of two 3x3 transposed convolutions, the first of which doubles the
    resolution back (``output_size`` keeps odd sizes exact). Mirrored encoder outputs are added
    to the decoder (symmetric skips, as in the encoder-decoder of Liu et al. 2019); a last 3x3
    convolution gives the one-channel detail image.
    """

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.enc = nn.ModuleList()
        c_in = 1
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.enc.append(
                nn.ModuleList(
                    [
                        nn.Conv2d(c_in, w, 3, stride=stride, padding=1),
                        nn.Conv2d(w, w, 3, padding=1),
                    ]
                )
            )
            c_in = w
        # decoder: one group per encoder group, in reverse; the group that follows a strided
        # encoder group upsamples in its first layer
        self.dec = nn.ModuleList()
        rev = list(reversed(widths))
        for i, w in enumerate(rev):
            w_out = rev[i + 1] if i + 1 < len(rev) else w
            up = i + 1 < len(rev)
            self.dec.append(
                nn.ModuleList(
                    [
                        nn.ConvTranspose2d(w, w, 3, padding=1),
                        nn.ConvTranspose2d(
                            w, w_out, 3, stride=2 if up else 1, padding=1, output_padding=0
                        ),
                    ]
                )
            )
        self.out = nn.Conv2d(widths[0], 1, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        h = y
        for conv_a, conv_b in self.enc:
            h = self.act(conv_b(self.act(conv_a(h))))
            skips.append(h)
        sizes = [s.shape[-2:] for s in skips]
        for i, (dec_a, dec_b) in enumerate(self.dec):
            h = h + skips[-1 - i] if i > 0 else h
            h = self.act(dec_a(h))
            if dec_b.stride[0] == 2:
                target = sizes[-2 - i]
                h = self.act(dec_b(h, output_size=list(target)))
            else:
                h = self.act(dec_b(h))
        return self.out(h)


class Generator(nn.Module):
    """``G: LR -> HR``, the three-scale encoder-decoder of Fig. 1 / Table I.

    The LR input is interpolated to the HR grid with :func:`.resize.upscale_bicubic`; three
    branches of growing depth (32 / 32-32 / 32-32-64 channels) each add a detail image to it
    (Eq. 1), and a 3x3 convolution fuses the three reconstructions. About 0.27 M parameters
    (the paper's 1.1 MB). Initialised so that ``G`` starts as the bicubic: detail outputs near
    zero, fusion an average; training learns the residual.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"Generator: scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self.branches = nn.ModuleList([_Branch([32]), _Branch([32, 32]), _Branch([32, 32, 64])])
        self.fuse = nn.Conv2d(3, 1, 3, padding=1)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for b in self.branches:  # detail images start at exactly zero; gradients still flow
            nn.init.zeros_(b.out.weight)
            nn.init.zeros_(b.out.bias)
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.weight[0, :, 1, 1] = 1.0 / 3.0
            self.fuse.bias.zero_()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if torch.amp.is_autocast_available(lr.device.type) and torch.is_autocast_enabled(
            lr.device.type
        ):
            return self._forward_mixed(lr)
        y = upscale_bicubic(lr, self.scale)
        recs = [y + branch(y) for branch in self.branches]
        return self.fuse(torch.cat(recs, dim=1))

    def _forward_mixed(self, lr: torch.Tensor) -> torch.Tensor:
        """The same under autocast, with the image path kept in float32.

        Only the branches, which compute small detail images and hold nearly all the FLOPs,
        run in the autocast precision; the bicubic image ``y``, the sums ``y + d_i`` and the
        3-to-1 fusion stay in float32. In bf16 (8 bits of mantissa) the image itself would be
        rounded by up to 1/256 of its value.
        """
        with torch.autocast(device_type=lr.device.type, enabled=False):
            y = upscale_bicubic(lr.float(), self.scale)
        details = [branch(y).float() for branch in self.branches]
        with torch.autocast(device_type=lr.device.type, enabled=False):
            return self.fuse(torch.cat([y + d for d in details], dim=1))


class _ResBlock(nn.Module):
    """Pre-activation residual block (BN-free: batches are a few crops of one image)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, c, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, c, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Degrader(nn.Module):
    """``F: HR -> LR``, the degradation network of Fig. 2 (after Bulat et al. 2018).

    Input: the HR patch and a Gaussian noise map as a second channel. A head convolution,
    residual blocks, and average pooling down by the scale (one pool by 2 per factor of 2, one
    pool by 3 for x3, ``ceil_mode`` so sizes are ``ceil(H/s)``), more residual blocks, and a
    one-channel output. The output is added to ``downscale(hr)`` when a ``skip`` degradation
    is given, so that ``F`` starts at the configured kernel and learns what it misses
    (our choice, not the paper's: the cycles are then meaningful from the first step).
    Output is at LR size; callers upsample only where a loss compares at HR size.
    """

    def __init__(self, scale: int, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"Degrader: scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        pools = [2, 2] if scale == 4 else [scale]
        layers: list[nn.Module] = [nn.Conv2d(2, width, 3, padding=1)]
        for p in pools:
            layers += [_ResBlock(width) for _ in range(blocks)]
            layers.append(nn.AvgPool2d(p, stride=p, ceil_mode=True, count_include_pad=False))
        layers += [_ResBlock(width) for _ in range(blocks)]
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(width, 1, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)  # F starts at its skip (the configured kernel)
        nn.init.zeros_(self.body[-1].bias)

    def forward(
        self,
        hr: torch.Tensor,
        noise: torch.Tensor | None = None,
        skip: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Degrade ``hr`` (N,1,H,W) to (N,1,ceil(H/s),ceil(W/s)).

        ``noise`` is the Gaussian noise map (zeros when None); ``skip`` the configured
        degradation of ``hr`` to which the learned residual is added.
        """
        if noise is None:
            noise = torch.zeros_like(hr)
        out = self.body(torch.cat([hr, noise], dim=1))
        return out + skip if skip is not None else out


class PatchDiscriminator(nn.Module):
    """PatchGAN of Fig. 3: an input layer and four conv / BN / LeakyReLU blocks.

    Outputs one logit per overlapping patch; the map is ``ceil(H/4) x ceil(W/4)`` (two strided
    blocks), so D_hr on 64x64 crops and D_lr on 64/s crops both give a map.
    :meth:`features` returns the block activations, the fallback perceptual feature space.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.LeakyReLU(0.2))
        chans = [width, 2 * width, 4 * width, 4 * width, 4 * width]
        strides = [2, 2, 1, 1]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=strides[i], padding=1),
                nn.BatchNorm2d(chans[i + 1]),
                nn.LeakyReLU(0.2),
            )
            for i in range(4)
        )
        self.out = nn.Conv2d(chans[-1], 1, 3, padding=1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of the head and every block, for the feature (perceptual) loss."""
        h = self.head(x)
        feats = [h]
        for b in self.blocks:
            h = b(h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x)[-1])


# VGG19 "features" indices up to conv4_4 (the 12th convolution) in torchvision's layout:
# conv at these indices, ReLU after each, max-pool at 4, 9, 18.
_VGG_CFG: list[int | str] = [64, 64, "M", 128, 128, "M"] + [256] * 4 + ["M"] + [512] * 4
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """VGG19 ``features[:27]``: up to the ReLU after conv4_4 (the paper's 12th convolution).

    ``self.features`` is an ``nn.Sequential`` whose indices match torchvision's, so its
    ``features.N.weight`` / ``features.N.bias`` state-dict keys load directly (other keys, e.g.
    the classifier, are ignored). Inputs are grey (N,1,H,W) in [0, 1], repeated to RGB and
    ImageNet-normalised. Parameters are frozen.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def load_torchvision(self, state: dict[str, torch.Tensor]) -> None:
        """Load torchvision ``vgg19`` weights (``features.N.*`` keys); raises on a missing key."""
        own = {k for k in self.state_dict() if k.startswith("features.")}
        picked = {k: v for k, v in state.items() if k in own}
        missing = sorted(own - picked.keys())
        if missing:
            raise KeyError(f"VGG19 state dict lacks {missing[:4]} (expected torchvision layout)")
        self.load_state_dict(picked, strict=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> VGG19Features:
        """Build from a torchvision ``vgg19-*.pth`` state dict on disk (no download)."""
        net = cls()
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        try:
            net.load_torchvision(state)
        except KeyError as exc:
            raise KeyError(f"{path}: {exc.args[0]}") from None
        return net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        return self.features(x)


def find_vgg19_weights(configured: str | None) -> Path | None:
    """Locate a VGG19 state dict: ``configured``, else the torch hub cache; None if absent.

    The hub cache is ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub``, by default
    ``~/.cache/torch/hub``), where torchvision stores ``vgg19-<hash>.pth``. Nothing is
    downloaded.
    """
    if configured:
        p = Path(configured).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"vgg19_weights: no such file {p}")
        return p
    hits = sorted(Path(torch.hub.get_dir(), "checkpoints").glob("vgg19-*.pth"))
    return hits[0] if hits else None
