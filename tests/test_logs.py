"""Warnings reach the log once: pydicom's own (logged and warned) without their twin.

Run in a child interpreter: pytest records warnings itself, which would hide the routing.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, sys, warnings
from pydicom.misc import warn_and_log
from dicom_sr.logs import route_warnings
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s| %(message)s")
route_warnings()
route_warnings()  # idempotent: one pair of filters
warnings.simplefilter("always")
warn_and_log("Invalid value for VR CS: 'A/B' (test)")
warnings.warn("some other library's warning (test)", UserWarning)
"""


def test_a_pydicom_warning_is_one_log_line_and_others_still_come() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    lines = proc.stderr.splitlines()
    twins = [x for x in lines if "Invalid value for VR CS: 'A/B' (test)" in x]
    assert twins == ["pydicom| Invalid value for VR CS: 'A/B' (test)"], proc.stderr
    others = [x for x in lines if "some other library's warning (test)" in x]
    assert len(others) == 1 and others[0].startswith("py.warnings| "), proc.stderr
    assert not any(x.lstrip().startswith("warn_and_log(") for x in lines), proc.stderr
