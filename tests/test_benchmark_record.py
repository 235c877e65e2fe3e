"""benchmarks/record.py: where results go and the provenance every record carries."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_sr.config import load_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def record():
    spec = importlib.util.spec_from_file_location("record", ROOT / "benchmarks" / "record.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_a_bare_name_goes_under_the_scripts_folder(record, tmp_path):
    assert record.results_path("benchmarks/tissue_crops.py", "x4.jsonl") == (
        ROOT / "benchmarks" / "results" / "tissue_crops" / "x4.jsonl"
    )
    assert record.results_path("benchmarks/run.py", tmp_path / "a.json") == tmp_path / "a.json"


def test_records_carry_their_provenance(record, tmp_path):
    config = load_pipeline(None, {"engine.scale": 4})
    prov = record.provenance(ROOT / "benchmarks" / "tissue_crops.py", config, argv=["--set", "C"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert prov["script"] == "benchmarks/tissue_crops.py"
    assert prov["command"] == "python benchmarks/tissue_crops.py --set C"
    if head.returncode == 0:  # a checkout; an sdist has no git
        assert prov["commit"] == head.stdout.strip() and isinstance(prov["dirty"], bool)
    assert prov["pipeline"] == {"name": "bmode-default", "version": config.version,
                                "hash": config.hash()}  # fmt: skip
    machine = prov["machine"]
    assert machine["device"] == "cpu" and machine["torch_threads"] >= 1
    assert {"cpu_capability", "cpu_native_bf16", "load_average"} <= set(machine)

    one = record.write_json(tmp_path / "one.json", {"runs": [{"seconds": 1.5}]}, prov)
    data = json.loads(one.read_text())
    assert data["runs"] == [{"seconds": 1.5}] and data["provenance"] == prov
    lines = tmp_path / "sub" / "rows.jsonl"
    record.append_jsonl(lines, {"crop": "a", "gain": 0.1}, prov)
    record.append_jsonl(lines, {"crop": "b", "gain": -0.2}, prov)
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["crop"] for r in rows] == ["a", "b"]
    assert all(r["provenance"]["pipeline"]["hash"] == config.hash() for r in rows)
