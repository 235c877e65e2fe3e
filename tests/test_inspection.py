"""valid_uid: the one check for a UID that becomes part of a path (inspection, spool, store)."""

from __future__ import annotations

import warnings

import pytest
from pydicom.uid import UID

from dicom_sr.dicom.inspection import valid_uid
from dicom_sr.errors import InputError


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.1"),
        (UID("1.2.3"), "1.2.3"),
        (" 1.2.3 ", "1.2.3"),  # padding is removed: the returned text is what names the file
        ("1.2.3\0", "1.2.3"),
        ("1.2.3 \0", "1.2.3"),
        ("0", "0"),
        ("1." + "2" * 62, "1." + "2" * 62),  # exactly 64 characters
    ],
)
def test_valid_uids_come_back_stripped(value, expected):
    assert valid_uid(value, "SeriesInstanceUID", "a.dcm") == expected


@pytest.mark.parametrize(
    "value, why",
    [
        ("../../etc", "not a valid UID"),
        ("1.2/3", "not a valid UID"),
        ("1.02.3", "not a valid UID"),  # leading zero
        ("1..2", "not a valid UID"),
        ("1.2.", "not a valid UID"),
        ("1.2.3a", "not a valid UID"),
        ("1.2\\1.3", "not a valid UID"),  # two values
        ("1." + "2" * 63, r"\(65 characters\), not a valid UID"),
        (None, r"missing SeriesInstanceUID \(0020,000E\)"),
        ("", r"missing SeriesInstanceUID \(0020,000E\)"),
        ("  \0", r"missing SeriesInstanceUID \(0020,000E\)"),
    ],
)
def test_invalid_uids_name_the_file_and_the_tag(value, why):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the check itself does not warn about what it reports
        with pytest.raises(InputError, match=why) as err:
            valid_uid(value, "SeriesInstanceUID", "dir/a.dcm")
    assert err.value.path == "dir/a.dcm"
    assert err.value.tag == "SeriesInstanceUID (0020,000E)"
    assert str(err.value).startswith("dir/a.dcm: ")
    if not why.startswith("missing"):
        assert str(err.value).startswith("dir/a.dcm: SeriesInstanceUID (0020,000E) is ")


def test_a_hostile_value_is_quoted_short():
    with pytest.raises(InputError) as err:
        valid_uid("9" * 10_000, "StudyInstanceUID", "a.dcm")
    assert "(10000 characters)" in err.value.reason and len(err.value.reason) < 250
