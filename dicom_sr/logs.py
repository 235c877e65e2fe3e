"""Python warnings as log lines, once: unattended runs read one log, not a log and stray stderr.

pydicom sends each of its warnings twice, to its ``pydicom`` logger and to :mod:`warnings`
(``pydicom.misc.warn_and_log``), so a log showed the same complaint twice, the second time as
a raw ``UserWarning`` with a source line. :func:`route_warnings` sends warnings to the
``py.warnings`` logger (:func:`logging.captureWarnings`) and drops those that pydicom has
just logged itself.
"""

from __future__ import annotations

import logging
from collections import deque

__all__ = ["route_warnings"]

#: How many recent pydicom messages are remembered to recognise their warning twin.
_RECENT = 64


class _Remember(logging.Filter):
    """On the ``pydicom`` logger: note each message, let it through."""

    def __init__(self, recent: deque[str]) -> None:
        super().__init__()
        self.recent = recent

    def filter(self, record: logging.LogRecord) -> bool:
        self.recent.append(record.getMessage())
        return True


class _DropTwins(logging.Filter):
    """On ``py.warnings``: drop a warning whose text pydicom already logged."""

    def __init__(self, recent: deque[str]) -> None:
        super().__init__()
        self.recent = recent

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(msg and msg in text for msg in self.recent)


def route_warnings() -> None:
    """Capture :mod:`warnings` into logging, without pydicom's duplicates. Idempotent."""
    logging.captureWarnings(True)
    pydicom_logger = logging.getLogger("pydicom")
    warnings_logger = logging.getLogger("py.warnings")
    for f in pydicom_logger.filters:
        if isinstance(f, _Remember):
            return
    recent: deque[str] = deque(maxlen=_RECENT)
    pydicom_logger.addFilter(_Remember(recent))
    warnings_logger.addFilter(_DropTwins(recent))
