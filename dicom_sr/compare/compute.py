"""``--method M``: derive the series on the fly into a scratch folder, to compare against.

The scratch folder is an ordinary output folder (derived DICOM plus ``manifest.jsonl``) made by
the pipeline's own :func:`~dicom_sr.pipeline.process_series`, so the computed side has exactly
what ``dicom-sr process --method M`` would write: tissue regions by the method, the rest by
pixel replication, the regions rescaled, the provenance in the header.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from dicom_sr.config import PipelineConfig
from dicom_sr.dicom.discover import Series
from dicom_sr.pipeline import SeriesResult, process_series

__all__ = ["compute_derived"]

logger = logging.getLogger(__name__)


def compute_derived(
    series: Sequence[Series], config: PipelineConfig, scratch: Path
) -> list[SeriesResult]:
    """Derive each series with ``config`` into ``scratch``; failures are logged and reported
    in the results (the page then shows the series without the computed side)."""
    results = []
    for s in series:
        result = process_series(s, config, scratch)
        if result.status == "failed":
            logger.warning(
                "--method %s: series not derived: %s", config.engine.method, result.reason
            )
        results.append(result)
    return results
