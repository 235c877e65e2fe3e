"""Quality evaluation: the paper's protocol on real frames (PSNR, SSIM, VIF-P), with figures.

:func:`run_evaluation` crops real frames to tissue, degrades them, super-resolves them with each
method and writes ``report.json``, ``report.md``, PNG figures and ``report.html`` (whose viewer
pages, :mod:`.html`, show every image at the same place and zoom); see :mod:`.protocol`.
:mod:`.metrics` and :mod:`.figures` need only numpy, scipy and matplotlib, so importing them
does not pull in torch or the DICOM stack (``run_evaluation`` is imported on first use).
"""

from __future__ import annotations

__all__ = ["run_evaluation"]


def __getattr__(name: str):
    if name == "run_evaluation":
        from dicom_sr.evaluate.runner import run_evaluation

        return run_evaluation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
