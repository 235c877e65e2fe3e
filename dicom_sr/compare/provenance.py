"""What a derived image's header says about how it was made, as rows for the page.

The DerivationDescription (0008,2111) that :func:`dicom_sr.dicom.provenance.derivation_description`
writes is the record: method, scale, pipeline, config hash, output syntax and the guard's
decision with both of its scores, and the blend weight (``model weight W``). Headers written
before the weight was recorded get it from the configuration's ``engine.model_weight`` when the
config hash names a known configuration (a named pipeline, or the one ``--method`` ran with);
otherwise the page says it is not recorded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydicom import Dataset

from dicom_sr.config import PipelineConfig, available_pipelines, load_pipeline
from dicom_sr.engine import get_method
from dicom_sr.engine.infer import model_weight

__all__ = ["parse_description", "provenance_rows", "known_configs"]

_PATTERNS = {
    "scale": r"Super-resolution x(\d+)",
    "software": r"by (dicom-sr [^;]+)",
    "method": r"(?:^|; )method ([^;]+)",
    "iterations": r"(?:^|; )iterations (\d+)",
    "pipeline": r"(?:^|; )pipeline (\S+ v\S+)",
    "config_hash": r"config ([0-9a-f]{8,64})",
    "output": r"(?:^|; )output ([^;]+)",
    "guard": r"(?:^|; )guard: output (model|ibp)",
    "model_db": r"\(model (-?[\d.]+) dB",
    "ibp_db": r"ibp (-?[\d.]+) dB",
    "pairs": r"on (\d+) held-aside pairs",
    "guard_reason": r"held-aside pairs\): ([^;]+)|guard: output (?:model|ibp): ([^;]+)",
    "model_weight": r"(?:^|; )model weight ([\d.]+)",
}


def parse_description(text: str) -> dict[str, str]:
    """The fields of a DerivationDescription that are present (values as text)."""
    out: dict[str, str] = {}
    for key, pattern in _PATTERNS.items():
        match = re.search(pattern, text or "")
        if match:
            out[key] = next(g for g in match.groups() if g is not None).strip()
    return out


def known_configs(extra: Mapping[str, PipelineConfig] = ()) -> dict[str, PipelineConfig]:
    """Configurations by hash: the named pipelines, plus ``extra`` (hash -> config)."""
    found: dict[str, PipelineConfig] = {}
    for name in available_pipelines():
        try:
            cfg = load_pipeline(name)
        except Exception:  # noqa: BLE001 - an invalid shipped pipeline is `pipelines`' to report
            continue
        found[cfg.hash()] = cfg
    found.update(dict(extra))
    return found


def _blend(fields: Mapping[str, str], configs: Mapping[str, PipelineConfig]) -> str:
    method = fields.get("method", "").split(" ")[0]
    try:
        learned = get_method(method).learned
    except Exception:  # noqa: BLE001 - an unknown method name in a foreign header
        learned = True
    if not learned:
        return f"none: {method} learns nothing"
    if fields.get("guard") == "ibp":
        return "none: the guard chose ibp"
    if "model_weight" in fields:  # recorded in the header
        w = float(fields["model_weight"])
        return f"{w:g} model + {1 - w:g} ibp"
    cfg = configs.get(fields.get("config_hash", ""))
    if cfg is None:
        return "not recorded (configuration not known here)"
    w = model_weight(cfg.engine)
    return f"{w:g} model + {1 - w:g} ibp"


def provenance_rows(ds: Dataset, configs: Mapping[str, PipelineConfig]) -> dict[str, str]:
    """Rows for the page's provenance table, from one derived instance's header."""
    text = str(ds.get("DerivationDescription", "") or "")
    fields = parse_description(text)
    rows: dict[str, str] = {}
    rows["method"] = fields.get("method", "not recorded")
    rows["scale"] = f"x{fields['scale']}" if "scale" in fields else "not recorded"
    if "guard" in fields:
        rows["guard chose"] = fields["guard"]
        if "model_db" in fields:
            rows["guard scores"] = (
                f"model {fields['model_db']} dB, ibp {fields['ibp_db']} dB "
                f"on {fields.get('pairs', '?')} held-aside pairs"
            )
        if "guard_reason" in fields:
            rows["guard reason"] = fields["guard_reason"]
    else:
        rows["guard chose"] = "no guard (method does not learn, or guard off)"
    rows["blend weight"] = _blend(fields, configs)
    rows["pipeline"] = fields.get("pipeline", "not recorded")
    rows["config hash"] = fields.get("config_hash", "not recorded")
    if "iterations" in fields:
        rows["training iterations"] = fields["iterations"]
    if "output" in fields:
        rows["stored as"] = fields["output"]
    if "software" in fields:
        rows["software"] = fields["software"]
    rows["DerivationDescription"] = text or "(absent)"
    return rows
