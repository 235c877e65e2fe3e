"""The one atomic-write helper and the failure classification shared by the node and batch."""

from __future__ import annotations

import errno
import json
from concurrent.futures.process import BrokenProcessPool

import pytest

from dicom_sr import errors, fsio
from dicom_sr.config import ConfigError
from dicom_sr.errors import (
    CANCELLED,
    PERMANENT,
    TRANSIENT,
    Cancelled,
    DicomSrError,
    InputError,
    MissingExtra,
    Transient,
    WriteError,
    classify,
)
from dicom_sr.node.forward import ForwardError


def test_write_bytes_replaces_whole_and_leaves_no_part(tmp_path):
    path = tmp_path / "sub" / "a.bin"
    assert fsio.write_bytes(path, b"first") == 5
    assert fsio.write_bytes(path, b"second!") == 7
    assert path.read_bytes() == b"second!"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.bin"]


def test_a_failed_check_leaves_the_old_file_and_no_part(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def refuse(tmp):
        assert tmp.read_bytes() == b"new"  # the check sees the complete temporary file
        assert fsio.PART_NAME.match(tmp.name) and tmp.parent == tmp_path
        raise InputError("sent", "refused")

    with pytest.raises(InputError, match="refused"):
        fsio.write_bytes(path, b"new", check=refuse)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_write_json_round_trips(tmp_path):
    path = tmp_path / "r.json"
    fsio.write_json(path, {"a": 1, "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": 1, "p": str(tmp_path)}


def test_an_os_error_propagates_unchanged(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OSError) as info:
        fsio.write_bytes(blocker / "under-a-file.bin", b"x")
    assert info.value.errno in (errno.ENOTDIR, errno.EEXIST)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (Cancelled("node stopping"), CANCELLED),
        (InputError("a.dcm", "no pixel data", tag="PixelData (7FE0,0010)"), PERMANENT),
        (TypeError("unsupported operand"), PERMANENT),
        (KeyError("x"), PERMANENT),
        (WriteError("b.dcm", "No space left on device (errno 28)", disk_full=True), TRANSIENT),
        (OSError(errno.EIO, "I/O error"), TRANSIENT),
        (MemoryError(), TRANSIENT),
        (BrokenProcessPool("a worker died"), TRANSIENT),
        (ForwardError("association rejected", sent=[]), TRANSIENT),
        (Transient("later"), TRANSIENT),
    ],
)
def test_classify(exc, kind):
    assert classify(exc) == kind


def test_every_error_raised_on_purpose_is_a_dicom_sr_error():
    for cls in (ConfigError, MissingExtra, ForwardError, InputError, WriteError, Cancelled):
        assert issubclass(cls, DicomSrError), cls
    assert issubclass(ConfigError, ValueError) and issubclass(MissingExtra, RuntimeError)
    assert errors.describe(ForwardError("peer down", sent=["1.2"])) == "peer down"
