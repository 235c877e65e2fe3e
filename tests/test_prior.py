"""Scanner priors: ``dicom-sr prior build``, the ``[[priors]]`` rules, the warm start, identity.

Priors here are trained a couple of iterations of ``zssr`` on the sample phantoms: the method
and the weights' quality do not matter to what is checked (files, metadata, UIDs, headers).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from conftest import us_file

from dicom_sr.cli import main
from dicom_sr.config import ConfigError, PipelineConfig, PriorRule, load_pipeline
from dicom_sr.dicom.discover import discover
from dicom_sr.engine import load_weights
from dicom_sr.engine.prior import read_prior, weights_digest
from dicom_sr.pipeline import derived_series_uid_for, identity_hash, process_series
from dicom_sr.pipeline.prior import build_prior, prior_for_series

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
ENGINE = {"method": "zssr", "iterations": 3, "prior_iterations": 2, "ensemble": 1}
ENGINE |= {"cine_ensemble": 1, "cine_train_frames": 1, "back_projection_iters": 2}
ENGINE |= {"crop_size": 32, "batch_size": 1, "guard_pairs": 2}  # a few seconds per fit


def _config(*rules: PriorRule, **engine) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"name": "prior-test", "engine": ENGINE | engine, "priors": [r.model_dump() for r in rules]}
    )


def _series(path: Path):
    (series,) = discover([path]).series
    return series


@pytest.fixture(scope="module")
def prior_a(tmp_path_factory) -> tuple[Path, dict]:
    """A prior written by the command, and the JSON it printed."""
    out = tmp_path_factory.mktemp("prior") / "phantoms.pt"
    toml = out.with_name("small.toml")
    toml.write_text("[engine]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in ENGINE.items()))
    args = ["prior", "build", str(SAMPLE), "--out", str(out), "--pipeline", str(toml)]
    res = CliRunner().invoke(main, [*args, "--iterations", "2", "--per-series", "1"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.output[res.output.index("{") :])


@pytest.fixture(scope="module")
def prior_b(tmp_path_factory) -> Path:
    """Another prior of the same series: another seed, other weights."""
    out = tmp_path_factory.mktemp("prior") / "other.pt"
    build_prior([SAMPLE], _config(seed=7), out, iterations=2, per_series=1)
    return out


def test_prior_build_writes_a_prior_whose_metadata_reads_back(prior_a) -> None:
    path, printed = prior_a
    model = read_prior(path)
    meta = model.info["prior"]
    assert meta == {k: v for k, v in printed.items() if k != "file"}
    assert meta["series"] == 3 and meta["frames"] == 3  # one frame from each sample series
    assert meta["manufacturers"] == ["dicom-sr sample generator"]
    assert meta["models"] == ["make_sample_data.py"]
    assert (meta["scale"], meta["model_scale"], meta["method"]) == (2, 2, "zssr")
    expected = load_pipeline(path.with_name("small.toml"))
    assert meta["pipeline"] == "small" and meta["config_hash"] == expected.hash()
    assert meta["digest"] == weights_digest(model.generator_state) and len(meta["digest"]) == 64
    assert load_weights(path).generator_state is not None  # an ordinary weights file too
    shown = CliRunner().invoke(main, ["prior", "show", str(path)])
    assert shown.exit_code == 0 and json.loads(shown.output) == printed
    ds = pydicom.dcmread(SAMPLE / "us_phantom_single.dcm")
    blob = path.read_bytes()
    assert str(ds.PatientName).encode() not in blob and ds.PatientID.encode() not in blob


def test_a_prior_with_altered_weights_is_refused_naming_the_file(prior_a, tmp_path) -> None:
    import torch

    payload = torch.load(prior_a[0], weights_only=True)
    first = next(iter(payload["state"]))
    payload["state"][first] = payload["state"][first] + 1.0
    bad = tmp_path / "tampered.pt"
    torch.save(payload, bad)
    with pytest.raises(ValueError, match="tampered.pt.*digest"):
        read_prior(bad)
    shown = CliRunner().invoke(main, ["prior", "show", str(bad)])
    assert shown.exit_code == 1 and "tampered.pt: the weights do not match" in shown.output


def test_a_matching_series_is_warm_started_and_its_provenance_says_so(prior_a, tmp_path) -> None:
    path, meta = prior_a
    config = _config(PriorRule(file=str(path), manufacturer="dicom-sr sample*"))
    result = process_series(_series(SAMPLE / "us_phantom_single.dcm"), config, tmp_path)
    assert result.status == "done"
    info = result.model.info
    assert info["warm_start"] and info["iterations"] == config.engine.prior_iterations == 2
    assert info["guard"]["decision"] in ("model", "ibp")  # the guard judged the warm start
    assert info["warm_start_prior"] == {"file": "phantoms.pt", "digest": meta["digest"]}
    ds = pydicom.dcmread(result.instances[0].output)
    text = ds.DerivationDescription
    assert f"prior phantoms.pt sha256 {meta['digest']}" in text and "iterations 2;" in text
    (entry,) = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert entry["prior"] == "phantoms.pt" and entry["prior_digest"] == meta["digest"]
    assert result.to_dict()["prior"]["digest"] == meta["digest"]


def test_another_prior_gives_another_derived_series_uid(prior_a, prior_b, tmp_path) -> None:
    uid = "1.2.3.4"
    rule = PriorRule(file=str(prior_a[0]))
    a, b = _config(rule), _config(PriorRule(file=str(prior_b)))
    uids = {derived_series_uid_for(uid, c) for c in (a, b, _config())}
    assert len(uids) == 3 and derived_series_uid_for(uid, a) == derived_series_uid_for(uid, a)
    # the identity follows the weights, not the file name: same name, other weights, other UID
    moving = tmp_path / "site.pt"
    shutil.copy(prior_a[0], moving)
    before = _config(PriorRule(file=str(moving)))
    uid_before, ident_before = derived_series_uid_for(uid, before), identity_hash(before)
    shutil.copy(prior_b, moving)
    after = _config(PriorRule(file=str(moving)))
    assert after.hash() == before.hash()  # the configuration names the same file
    assert identity_hash(after) != ident_before
    assert derived_series_uid_for(uid, after) != uid_before


def test_a_missing_prior_file_fails_at_load_naming_the_file(tmp_path) -> None:
    toml = tmp_path / "site.toml"
    toml.write_text('name = "site"\n[[priors]]\nfile = "nowhere.pt"\nmanufacturer = "GE*"\n')
    with pytest.raises(ConfigError, match=r"priors\.0\.file.*nowhere\.pt does not exist"):
        load_pipeline(toml)
    res = CliRunner().invoke(
        main, ["process", str(SAMPLE / "us_phantom_single.dcm"), "--pipeline", str(toml),
               "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 2 and "nowhere.pt" in res.output
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_a_relative_prior_file_is_found_beside_the_pipeline_file(prior_a, tmp_path) -> None:
    shutil.copy(prior_a[0], tmp_path / "site.pt")
    toml = tmp_path / "site.toml"
    toml.write_text('name = "site"\n[engine]\nmethod = "zssr"\n[[priors]]\nfile = "site.pt"\n')
    config = load_pipeline(toml)
    assert Path(config.priors[0].file) == tmp_path / "site.pt"
    assert identity_hash(config) != identity_hash(_config())


def test_a_prior_gone_or_wrong_fails_when_a_series_needs_it(prior_a, tmp_path) -> None:
    gone = tmp_path / "gone.pt"
    shutil.copy(prior_a[0], gone)
    config = _config(PriorRule(file=str(gone)))
    gone.unlink()  # after the pipeline was loaded: a series needs it
    with pytest.raises(ConfigError, match="gone.pt: prior file not found"):
        process_series(_series(SAMPLE / "us_phantom_single.dcm"), config, tmp_path / "out")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a prior")
    with pytest.raises(ConfigError, match="junk.pt: not a dicom-sr weights file"):
        identity_hash(_config(PriorRule(file=str(junk))))
    with pytest.raises(ConfigError, match=r"phantoms.pt: prior for x2 .* asks x3"):
        identity_hash(_config(PriorRule(file=str(prior_a[0])), scale=3))


def test_manufacturer_and_model_rules_pick_the_prior_first_match_wins(
    prior_a, prior_b, tmp_path
) -> None:
    a, b = str(prior_a[0]), str(prior_b)
    config = _config(
        PriorRule(file=a, manufacturer="sonosite*"),
        PriorRule(file=b, manufacturer="Philips*", model="EPIQ*"),
        PriorRule(file=a, manufacturer="Philips*"),
    )

    def chosen(name: str) -> str | None:
        prior = prior_for_series(_series(us_file(name)), config)
        return None if prior is None else str(prior.file)

    assert chosen("examples_ybr_color.dcm") == a  # SonoSite, Inc. / Turbo
    assert chosen("JPGLosslessP14SV1_1s_1f_8b.dcm") == b  # Philips / EPIQ 7C
    assert chosen("examples_palette.dcm") == a  # Philips / CX50: the third rule
    assert chosen("examples_rgb_color.dcm") is None  # G.E. Medical Systems: no rule
    # a series no rule matches trains cold, with the full budget, and says nothing of priors
    result = process_series(_series(us_file("examples_rgb_color.dcm")), config, tmp_path)
    assert result.status == "done" and not result.model.info["warm_start"]
    assert result.model.info["iterations"] == config.engine.iterations == 3
    assert "; prior " not in pydicom.dcmread(result.instances[0].output).DerivationDescription


def test_the_calling_ae_picks_the_prior_in_the_node_worker(prior_a, tmp_path) -> None:
    from dicom_sr.node.workers import run_series_job

    config = _config(PriorRule(file=str(prior_a[0]), calling_ae="CARDIO*"))
    series = _series(SAMPLE / "us_phantom_single.dcm")
    assert prior_for_series(series, config, "RADIOLOGY") is None
    assert prior_for_series(series, config, "cardio_3") is not None  # case-insensitive
    key = derived_series_uid_for(series.series_uid, config)
    paths = [str(SAMPLE / "us_phantom_single.dcm")]
    out = run_series_job(key, paths, config, str(tmp_path), 0, None, False, "CARDIO_3")
    assert out["status"] == "done" and out["prior"]["digest"] == prior_a[1]["digest"]


@pytest.mark.parametrize("command", ["process", "listen"])
def test_a_prior_for_another_scale_is_a_usage_error_before_any_work(
    prior_a, tmp_path, command
) -> None:
    shutil.copy(prior_a[0], tmp_path / "x2.pt")
    toml = tmp_path / "x3.toml"
    toml.write_text('[engine]\nmethod = "zssr"\nscale = 3\n[[priors]]\nfile = "x2.pt"\n')
    out = tmp_path / "out"
    args = {"process": [str(SAMPLE / "us_phantom_single.dcm")], "listen": ["--port", "0"]}
    res = CliRunner().invoke(
        main, [command, *args[command], "--pipeline", str(toml), "--out", str(out)]
    )
    assert res.exit_code == 2, res.output
    assert "x2.pt: prior for x2 (model x2), but pipeline x3 asks x3" in " ".join(res.output.split())
    assert not list(out.rglob("*.dcm"))
