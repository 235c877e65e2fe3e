"""The click layer: options reach the library, results come back as files and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dicom_sr import __version__
from dicom_sr.cli import main
from dicom_sr.config import load_pipeline
from tests.conftest import us_file


def test_version_and_pipelines() -> None:
    runner = CliRunner()
    assert __version__ in runner.invoke(main, ["--version"]).output
    result = runner.invoke(main, ["pipelines"])
    assert result.exit_code == 0
    line = next(x for x in result.output.splitlines() if x.startswith("bmode-default"))
    assert load_pipeline("bmode-default").hash() in line
    assert "INVALID" not in result.output


def test_evaluate_writes_report_with_psf_degradation(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(us_file("US1_UNCR.dcm")),
            "--out",
            str(out),
            "--methods",
            "bicubic,ibp",
            "--scale",
            "2",
            "--degradation",
            "psf",
            "-q",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["degradation_params"]["kernel"] == "psf"
    assert (out / "report.md").read_text().count("ibp") >= 1
    assert list(out.rglob("*.png"))


def test_evaluate_rejects_bad_scale(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["evaluate", str(us_file("US1_UNCR.dcm")), "--out", str(tmp_path), "--scale", "5"]
    )
    assert result.exit_code == 2
    assert "--scale" in result.output


def test_method_names_are_the_engine_registry() -> None:
    """One fact: the names the configuration and the CLI accept are the registered methods."""
    from dicom_sr.cli.options import METHOD_NAMES
    from dicom_sr.engine import METHODS

    assert sorted(METHOD_NAMES) == sorted(METHODS)


def test_process_listen_and_batch_take_the_same_pipeline_options() -> None:
    from dicom_sr.cli.options import OPTION_KEYS

    for name in ("process", "listen", "batch"):
        params = {p.name for p in main.commands[name].params}
        assert set(OPTION_KEYS) <= params, name


def test_model_weight_option_reaches_the_engine_and_is_checked(tmp_path: Path) -> None:
    """--model-weight sets engine.model_weight; a weight outside [0, 1] is a bad option."""
    from dicom_sr.cli.options import load_config

    assert load_config({"model_weight": 1.0}).engine.model_weight == 1.0
    assert load_config({}).engine.model_weight == "auto"
    src = str(us_file("US1_UNCR.dcm"))
    bad = CliRunner().invoke(
        main, ["process", src, "--out", str(tmp_path / "x"), "--model-weight", "2"]
    )
    assert bad.exit_code == 2 and "--model-weight" in bad.output
    args = ["--method", "ibp", "--model-weight", "1", "--json"]
    ok = CliRunner().invoke(main, ["process", src, "--out", str(tmp_path / "o"), *args])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["instances_written"] == 1


def test_model_scale_option_reaches_the_engine_and_is_checked(tmp_path: Path) -> None:
    """--model-scale sets engine.model_scale; one that does not divide --scale is exit 2."""
    from dicom_sr.cli.options import load_config

    assert load_config({"model_scale": "4", "scale": "4"}).engine.model_scale == 4
    assert load_config({}).engine.model_scale == "auto"
    src = str(us_file("US1_UNCR.dcm"))
    args = ["--scale", "3", "--model-scale", "2"]
    bad = CliRunner().invoke(main, ["process", src, "--out", str(tmp_path / "x"), *args])
    assert bad.exit_code == 2 and "model_scale 2 does not divide scale 3" in bad.output
    assert not (tmp_path / "x").exists()
