"""Warnings reach the log once: pydicom's own (logged and warned) without their twin."""

from __future__ import annotations

import logging
import warnings

import pytest
from pydicom.misc import warn_and_log

from dicom_sr.logs import _DropTwins, _Remember, route_warnings


@pytest.fixture
def routed():
    route_warnings()
    yield
    logging.captureWarnings(False)
    for name, kind in (("pydicom", _Remember), ("py.warnings", _DropTwins)):
        lg = logging.getLogger(name)
        for f in [f for f in lg.filters if isinstance(f, kind)]:
            lg.removeFilter(f)


def test_a_pydicom_warning_is_one_log_line_and_others_still_come(routed, caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with caplog.at_level(logging.WARNING):
            warn_and_log("Invalid value for VR CS: 'A/B' (test)")
            warnings.warn("some other library's warning (test)", UserWarning, stacklevel=1)
    texts = [(r.name, r.getMessage()) for r in caplog.records]
    twins = [t for t in texts if "Invalid value for VR CS: 'A/B' (test)" in t[1]]
    assert twins == [("pydicom", "Invalid value for VR CS: 'A/B' (test)")]
    others = [t for t in texts if "some other library's warning (test)" in t[1]]
    assert len(others) == 1 and others[0][0] == "py.warnings"


def test_routing_twice_adds_no_second_filter(routed):
    route_warnings()
    assert sum(isinstance(f, _Remember) for f in logging.getLogger("pydicom").filters) == 1
    assert sum(isinstance(f, _DropTwins) for f in logging.getLogger("py.warnings").filters) == 1
