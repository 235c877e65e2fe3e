"""How far from converged is back projection, and what does that do to the gain over ``ibp``?

``ibp`` is bicubic followed by back projection; every learned output is back-projected too.
This script takes saved crops (``hr``, ``lr`` and the model's own output ``sr``, back-projected
with 10 plain steps as versions 1 to 4 did) and, for several back-projection settings (steps,
momentum), scores ``ibp`` run with that setting and the model's output given the same steps
on top, so both sides get the same projection. Prints one JSON line per crop and the mean and
worst gain per setting. ``--fit`` first makes the arrays: the model alone (``model_weight``
1, guard on) at ``--scale`` on the crops of ``x4_strategies.py``.

Usage::

    python benchmarks/bp_anchor.py /tmp/x2 --fit --scale 2 --threads 1
    python benchmarks/bp_anchor.py /tmp/x4/arr --pattern "*-direct.npz" --out anchor-x4.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import append_jsonl, provenance, results_path  # noqa: E402
from x4_strategies import FILES  # noqa: E402  (benchmarks/ is on sys.path)

from dicom_sr.config import EngineConfig, load_pipeline  # noqa: E402
from dicom_sr.engine import fit, upscale  # noqa: E402
from dicom_sr.engine.infer import back_project  # noqa: E402
from dicom_sr.evaluate.protocol import Degradation, load_images, score  # noqa: E402

#: (steps, momentum): versions 1-4 (10 plain), version 5 (20 at 0.8), and further out
SETTINGS = ((10, 0.0), (160, 0.0), (10, 0.8), (20, 0.8), (40, 0.8), (200, 0.9))
#: what the saved outputs already had
SAVED = EngineConfig(back_projection_iters=10, back_projection_momentum=0.0)


def make_arrays(folder: Path, args) -> None:
    """Fit the model alone on each crop with versions 1-4's back projection; save the arrays."""
    from pydicom.data import get_testdata_file

    s = args.scale
    paths = [Path(get_testdata_file(n)) for n in args.files.split(",")]
    images, _ = load_images(paths, scales=[s], margin=8)
    base = dict(scale=s, iterations=300, device="cpu", threads=args.threads, model_weight=1.0)
    cfg = EngineConfig(**base, back_projection_iters=10, back_projection_momentum=0.0)
    folder.mkdir(parents=True, exist_ok=True)
    for img in images:
        hr = img.hr[: args.max_side, : args.max_side]
        hr = hr[: hr.shape[0] // s * s, : hr.shape[1] // s * s]
        lr = Degradation("bicubic").apply(hr, s)
        sr = upscale(lr, fit([lr], cfg), cfg)
        np.savez_compressed(folder / f"{img.id.replace('#', '_')}-x{s}.npz", hr=hr, lr=lr, sr=sr)


def rows(folder: Path, pattern: str) -> list[dict]:
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]

    out = []
    for path in sorted(folder.glob(pattern)):
        d = np.load(path)
        hr, lr, sr = d["hr"], d["lr"], d["sr"]
        s = hr.shape[0] // lr.shape[0]
        row: dict = {"crop": path.stem, "scale": s}
        for steps, beta in SETTINGS:
            cfg = EngineConfig(
                method="ibp", scale=s, device="cpu", back_projection_iters=steps,
                back_projection_momentum=beta,
            )  # fmt: skip
            anchor = score(hr, upscale(lr, fit([], cfg), cfg), s)["psnr"]
            # the saved output had 10 plain steps: plain settings add the rest, momentum all
            extra = steps - SAVED.back_projection_iters if beta == 0 else steps
            model = back_project(t(sr), t(lr), s, cfg, max(extra, 0))[0, 0].numpy()
            key = f"{steps}/{beta}"
            row[f"ibp {key}"] = round(anchor, 3)
            row[f"gain {key}"] = round(score(hr, model, s)["psnr"] - anchor, 3)
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--pattern", default="*.npz")
    ap.add_argument("--fit", action="store_true", help="first fit and save the arrays")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--files", default=",".join(FILES[:5]))
    ap.add_argument("--max-side", type=int, default=320)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSONL, one record per crop (record.py)")
    args = ap.parse_args(argv)
    if args.fit:
        make_arrays(args.folder, args)
    found = rows(args.folder, args.pattern)
    if args.out:
        prov = provenance(__file__, load_pipeline(None), device="cpu", argv=argv)
        for row in found:
            append_jsonl(results_path(__file__, args.out), row, prov)
    summary = {}
    for steps, beta in SETTINGS:
        gains = [r[f"gain {steps}/{beta}"] for r in found]
        summary[f"{steps}/{beta}"] = {"mean_gain": round(float(np.mean(gains)), 3),
                                      "worst": min(gains)}  # fmt: skip
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
