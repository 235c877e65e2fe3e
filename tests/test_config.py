"""Named pipelines load, bad files are rejected with the key named, overrides change the hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_sr.config import (
    ConfigError,
    PipelineConfig,
    available_pipelines,
    load_pipeline,
    pipelines_dir,
)

PIPELINES = sorted(pipelines_dir().glob("*.toml"))


def test_the_shipped_pipelines_are_found() -> None:
    names = available_pipelines()
    assert "bmode-default" in names and "paper-x4" in names
    assert len(PIPELINES) == len(names)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_pipeline_loads_by_name_and_path(path: Path) -> None:
    by_name = load_pipeline(path.stem)
    by_path = load_pipeline(path)
    assert by_name == by_path
    assert by_name.name == path.stem  # the file's name field matches its file name
    assert by_name.version


def test_bmode_default_is_the_code_default() -> None:
    config = load_pipeline("bmode-default")
    assert config.hash() == PipelineConfig().hash()
    assert load_pipeline(None) == config


def test_paper_x4_is_paper_faithful() -> None:
    e = load_pipeline("paper-x4").engine
    assert (e.method, e.scale, e.augment, e.ensemble, e.gan_mode) == (
        "cyclegan",
        4,
        "dihedral",
        8,
        "log",
    )
    assert e.iterations == 1500 and e.crop_size == 64 and e.lr == 1e-3 and e.lr_min == 1e-6
    w = e.losses
    assert (w.pixel, w.perceptual, w.adversarial, w.cycle_forward, w.cycle_backward) == (
        5.0,
        0.1,
        5.0,
        0.3,
        0.3,
    )


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[engine]\nscale = 5\n", "engine.scale"),
        ("[engine]\ncolour = 1\n", "engine.colour"),
        ("[engine]\nmethod = 'srgan'\n", "engine.method"),
        ("[engine]\niterations = -1\n", "engine.iterations"),
        ("[engine.losses]\nalpha = 5.0\n", "engine.losses.alpha"),
        ("[engine.losses]\npixel = -1.0\n", "engine.losses.pixel"),
        ("[output]\ncompress = 'zip'\n", "output.compress"),
        ("[output]\nuid_root = '1.02.3'\n", "output.uid_root"),
        ("sclae = 2\n", "sclae"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, body: str, key: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert key in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "[engine\nscale = 2\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_pipeline(path)


def test_unknown_pipeline_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="bmode-default"):
        load_pipeline("no-such-pipeline")


def test_overrides_apply_and_change_the_hash() -> None:
    base = load_pipeline("bmode-default")
    over = load_pipeline(
        "bmode-default", {"engine.scale": 4, "output.compress": "none", "engine.method": None}
    )
    assert (over.engine.scale, over.output.compress) == (4, "none")
    assert over.engine.method == base.engine.method  # None leaves a key alone
    assert over.hash() != base.hash()
    assert base.engine.scale == 2  # the original is untouched (frozen)


def test_execution_keys_do_not_change_the_hash() -> None:
    base = load_pipeline("bmode-default")
    moved = base.with_overrides({"engine.device": "cpu", "engine.threads": 1})
    assert moved.engine.device == "cpu" and moved.hash() == base.hash()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"engine.scale": 5}, "engine.scale"),
        ({"engine.colour": 1}, "engine.colour"),
        ({"nope.scale": 2}, "nope.scale"),
        ({"engine.losses.alpha": 1.0}, "engine.losses.alpha"),
    ],
)
def test_bad_overrides_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline("bmode-default", overrides)
    assert key in str(info.value)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_hash_is_stable_across_loads(path: Path) -> None:
    first, second = load_pipeline(path), load_pipeline(path)
    assert first.hash() == second.hash()
    assert len(first.hash()) == 16
    # a round trip through the dumped form gives the same configuration and hash
    again = PipelineConfig.model_validate(first.model_dump())
    assert again == first and again.hash() == first.hash()


def test_pipelines_dir_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mine.toml").write_text('version = "7"\n[engine]\nscale = 3\n', encoding="utf-8")
    monkeypatch.setenv("DICOM_SR_PIPELINES", str(tmp_path))
    assert available_pipelines() == ["mine"]
    config = load_pipeline("mine")
    assert (config.name, config.version, config.engine.scale) == ("mine", "7", 3)


def test_a_bad_format_field_is_rejected_at_load_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[output]\nseries_description_suffix = " {foo}"\n')
    with pytest.raises(ConfigError, match=r"output\.series_description_suffix.*foo"):
        load_pipeline(bad)
    bad.write_text('name = "bad"\n[output]\nseries_description_suffix = " {scale:q}"\n')
    with pytest.raises(ConfigError, match=r"output\.series_description_suffix"):
        load_pipeline(bad)


def test_a_pipeline_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('name = "x"\ndescription = "Gr\xfc\xdfe"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_pipeline(bad)


def test_the_cli_exits_2_on_a_bad_pipeline(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dicom_sr.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[output]\nseries_description_suffix = " {foo}"\n')
    res = CliRunner().invoke(
        main, ["process", str(bad), "--out", str(tmp_path / "o"), "--pipeline", str(bad)]
    )
    assert res.exit_code == 2
    assert "series_description_suffix" in res.output
    assert not (tmp_path / "o").exists()
