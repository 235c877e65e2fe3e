"""A static before-and-after viewer: frames as image files, one HTML page per series, an index.

Knows nothing of DICOM or of the engine: callers hand it 8-bit frames (numpy) and the facts to
show. The pages are self-contained (the viewer's JavaScript and CSS are copied next to them from
this package's ``assets``): no server, no network, opened from disk with ``file://``.
:mod:`dicom_sr.compare` (``dicom-sr compare``) and :mod:`dicom_sr.evaluate` use it.
"""

from dicom_sr.viewer.images import ImageStore, encode_image, thumbnail
from dicom_sr.viewer.page import (
    PROCESSED_NOTE,
    IndexRow,
    Layer,
    ViewerPage,
    write_assets,
    write_index,
    write_page,
)

__all__ = [
    "PROCESSED_NOTE",
    "ImageStore",
    "IndexRow",
    "Layer",
    "ViewerPage",
    "encode_image",
    "thumbnail",
    "write_assets",
    "write_index",
    "write_page",
]
