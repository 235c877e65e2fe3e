"""Each frame is decoded once per series: the frame cache between the grey-as-RGB scan, the
training picks and the write (:mod:`dicom_sr.dicom.cache`), on real ultrasound files.

Decodes are counted at the decoders (every frame :meth:`FrameSource.iter_frames` yields). The
reference run has the cache switched off, which is the decoding path from before the cache.
The learned runs replace the write's super-resolution by pixel replication: the engine is not
under test, and 30 frames through the network would take minutes on a busy CPU; the frames
still come from the decoders or the cache, and the written pixels show any difference.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

import dicom_sr.dicom.frames as frames_mod
import dicom_sr.pipeline.series as series_mod
from dicom_sr.config import PipelineConfig, load_pipeline
from dicom_sr.dicom.cache import FrameCache
from dicom_sr.dicom.decoders import DecodedFrame
from dicom_sr.dicom.discover import discover
from dicom_sr.errors import Cancelled
from dicom_sr.pipeline import process_series
from tests.conftest import us_file

CINE = "examples_ybr_color.dcm"  # SonoSite, YBR_FULL_422 JPEG baseline, 30 frames
MONO = "JPGLosslessP14SV1_1s_1f_8b.dcm"  # Philips, MONOCHROME2 JPEG lossless, 1 frame
#: a learned method with the smallest budget that still trains on decoded picks
LEARNED = {
    "engine.method": "zssr",
    "engine.iterations": 1,
    "engine.batch_size": 1,
    "engine.crop_size": 32,
    "engine.ensemble": 1,
    "engine.back_projection_iters": 0,
    "engine.guard_pairs": 1,
    "engine.cine_train_frames": 3,
    "engine.threads": 1,
    "engine.seed": 1,
    "output.compress": "none",  # the encoder is not under test: the fastest
}


@pytest.fixture
def decodes(monkeypatch) -> Counter:
    """(file name, frame index) -> times a decoder produced that frame."""
    counts: Counter = Counter()
    real = frames_mod.open_source

    def counting(path, name, *args, **kwargs):
        source = real(path, name, *args, **kwargs)
        inner = source.iter_frames

        def iter_frames(indices=None):
            wanted = itertools.count() if indices is None else list(indices)
            for index, decoded in zip(wanted, inner(indices), strict=False):  # count() is endless
                counts[(Path(path).name, index)] += 1
                yield decoded

        source.iter_frames = iter_frames
        return source

    monkeypatch.setattr(frames_mod, "open_source", counting)
    return counts


class _NoCache(FrameCache):
    """A cache that never answers: every reader decodes, as before the cache existed."""

    def has(self, path, index) -> bool:
        return False

    def layout(self, path):
        return None


def _replicate(frame, boxes, model, config: PipelineConfig):
    """Pixel replication in place of the engine (see the module docstring)."""
    s = config.engine.scale
    chroma = None if frame.chroma is None else frame.chroma.repeat(s, 0).repeat(s, 1)
    return frame.luma.repeat(s, 0).repeat(s, 1), chroma


def _run(name: str, config: PipelineConfig, out: Path, cache: bool = True):
    [series] = discover([us_file(name)]).series
    patch = pytest.MonkeyPatch()
    if not cache:
        patch.setattr(series_mod, "FrameCache", _NoCache)
    try:
        result = process_series(series, config, out)
    finally:
        patch.undo()
    assert result.status == "done", result.instances
    return pydicom.dcmread(result.instances[0].output)


def _once(counts: Counter, name: str, n: int) -> None:
    assert counts == Counter({(name, i): 1 for i in range(n)})


@pytest.mark.parametrize(
    ("method", "learned"), [("bicubic", False), ("zssr", True)], ids=["not-learned", "learned"]
)
def test_colour_cine_decodes_each_frame_once(method, learned, decodes, monkeypatch, tmp_path):
    """The grey-as-RGB scan, the training picks and the write share decoded frames.

    ``bicubic`` takes the decoding path of ``ibp`` (neither trains), at a fraction of its cost.
    """
    overrides = LEARNED if learned else {"engine.method": method, "output.compress": "none"}
    config = load_pipeline(None, overrides)
    if learned:
        monkeypatch.setattr(series_mod, "super_resolve_frame", _replicate)
    cached = _run(CINE, config, tmp_path / "cached")
    _once(decodes, CINE, 30)
    decodes.clear()
    reference = _run(CINE, config, tmp_path / "reference", cache=False)
    assert decodes[(CINE, 0)] == (3 if learned else 2)  # scan (+ pick) + write, before
    assert cached.NumberOfFrames == reference.NumberOfFrames == 30
    assert cached.PhotometricInterpretation == reference.PhotometricInterpretation
    np.testing.assert_array_equal(cached.pixel_array, reference.pixel_array)


def test_monochrome_frame_is_decoded_once(decodes, monkeypatch, tmp_path):
    """A single grey frame: picked for training, then written from the cache."""
    monkeypatch.setattr(series_mod, "super_resolve_frame", _replicate)
    config = load_pipeline(None, LEARNED)
    cached = _run(MONO, config, tmp_path / "cached")
    _once(decodes, MONO, 1)
    reference = _run(MONO, config, tmp_path / "reference", cache=False)
    assert decodes[(MONO, 0)] == 3  # 1 + (training + write) before the cache
    np.testing.assert_array_equal(cached.pixel_array, reference.pixel_array)


class _Spy(FrameCache):
    """A FrameCache that remembers its spool files, to see them closed."""

    spools: list = []

    def put(self, path, index, frame, decoder) -> None:
        super().put(path, index, frame, decoder)
        if self._spool not in _Spy.spools:
            _Spy.spools.append(self._spool)


@pytest.mark.parametrize("cancel_after", [None, 5], ids=["done", "cancelled"])
def test_the_spool_goes_with_the_series(cancel_after, monkeypatch, tmp_path):
    monkeypatch.setattr(series_mod, "FrameCache", _Spy)
    monkeypatch.setattr(_Spy, "spools", [])
    [series] = discover([us_file(CINE)]).series
    config = load_pipeline(None, {"engine.method": "bicubic"})
    polls = itertools.count(1)

    def cancel() -> bool:
        return cancel_after is not None and next(polls) > cancel_after

    if cancel_after is None:
        result = process_series(series, config, tmp_path, cancel=cancel)
        written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
        expected = {result.instances[0].output.relative_to(tmp_path), Path("manifest.jsonl")}
        assert {p for p in written if p.parts[0] != ".locks"} == expected
    else:
        with pytest.raises(Cancelled):
            process_series(series, config, tmp_path, cancel=cancel)
        files = [p for p in tmp_path.rglob("*") if p.is_file() and p.parts[-2] != ".locks"]
        assert not files, files
    assert _Spy.spools and all(spool.closed for spool in _Spy.spools)


def test_a_corrupt_frame_fails_as_before(tmp_path):
    """FrameDecodeError keeps its frame number and reason when earlier frames are cached."""
    ds = pydicom.dcmread(us_file(CINE))
    encoded = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=30))
    encoded[3] = b"\xff\xd8" + b"\x00" * 64  # not a JPEG stream
    ds.PixelData = pydicom.encaps.encapsulate(encoded)
    src = tmp_path / "in" / "corrupt.dcm"
    src.parent.mkdir()
    ds.save_as(src)
    [series] = discover([src]).series
    config = load_pipeline(None, {"engine.method": "bicubic"})
    reasons = []
    for folder, cache in (("cached", FrameCache), ("reference", _NoCache)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(series_mod, "FrameCache", cache)
            result = process_series(series, config, tmp_path / folder)
        [failed] = result.failed
        reasons.append(re.sub(r" at 0x[0-9a-f]+", "", failed.reason))  # objects in messages
    assert "frame 3" in reasons[0] and reasons[0] == reasons[1]


def test_cache_round_trip_keeps_dtype_shape_and_photometric(tmp_path):
    frames = [
        DecodedFrame(np.arange(12, dtype=">u2").reshape(3, 4), "MONOCHROME1"),
        DecodedFrame(np.arange(36, dtype=np.uint8).reshape(3, 4, 3)[:, ::-1], "YBR_FULL_422"),
    ]
    with FrameCache(tmp_path) as cache:
        assert cache.storing and not cache.has("a.dcm", 0)
        for i, frame in enumerate(frames):
            cache.put("a.dcm", i, frame, f"decoder{i}")
        for i, frame in enumerate(frames):
            got, decoder = cache.get(Path("a.dcm"), i)
            assert decoder == f"decoder{i}" and got.photometric == frame.photometric
            assert got.array.dtype == frame.array.dtype and got.array.flags.writeable
            np.testing.assert_array_equal(got.array, frame.array)
        spool = cache._spool
    assert spool.closed and not cache.has("a.dcm", 0)
    assert not list(tmp_path.iterdir())
