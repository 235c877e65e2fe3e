"""Make README's picture from the tool's own output: a source frame beside its derived frame.

Usage: python scripts/readme_figure.py SOURCE.dcm OUT_DIR [docs/_static/readme_pair.png]
where OUT_DIR is the --out folder of a ``dicom-sr process`` run that included SOURCE.dcm.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402


def main(source: str, out_dir: str, target: str = "docs/_static/readme_pair.png") -> None:
    src = pydicom.dcmread(source)
    uid = src.SOPInstanceUID
    entry = next(
        json.loads(line)
        for line in (Path(out_dir) / "manifest.jsonl").read_text().splitlines()
        if json.loads(line)["source_sop_uid"] == uid
    )
    out = pydicom.dcmread(Path(out_dir) / entry["output"])
    s = out.Rows // src.Rows
    a = src.pixel_array.astype(np.float32)
    b = out.pixel_array.astype(np.float32)
    if a.ndim == 3 and a.shape[-1] != 3:  # cine: first frame
        a, b = a[0], b[0]
    rep = np.repeat(np.repeat(a, s, axis=0), s, axis=1)
    h, w = rep.shape[:2]
    y0, x0, side = h // 3, w // 3, min(h, w) // 3
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), dpi=110)
    for ax, img, title in (
        (axes[0], rep, f"source, pixel replication x{s}"),
        (axes[1], b, f"dicom-sr {entry['method']} x{s}"),
    ):
        ax.imshow(
            img[y0 : y0 + side, x0 : x0 + side],
            cmap="gray",
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(*sys.argv[1:])
