"""How a skip or failure reason names an attribute and quotes a value (one place for both)."""

from __future__ import annotations

import re

from pydicom.datadict import keyword_for_tag
from pydicom.tag import Tag

from dicom_sr.errors import describe

__all__ = ["tag_name", "shown", "brief", "not_dicom"]


def tag_name(tag: int | str) -> str:
    """``Keyword (gggg,eeee)`` for a tag or keyword; just ``(gggg,eeee)`` when it has no keyword."""
    t = Tag(tag)
    text = f"({t.group:04X},{t.element:04X})"
    keyword = keyword_for_tag(t)
    return f"{keyword} {text}" if keyword else text


def shown(value: object, limit: int = 40) -> str:
    """A value as quoted in a reason: its repr, cut to `limit` characters (hostile values are
    long and binary; a reason is one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def brief(exc: BaseException, limit: int = 160) -> str:
    """:func:`~dicom_sr.errors.describe` cut to `limit` characters: a library's message about a
    hostile value can run to pages, and a reason is one line."""
    text = describe(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def not_dicom(exc: BaseException) -> str:
    """The reason for a file pydicom will not read as DICOM, without its advice to pass
    ``force=True``: that is a programmer's option, and an operator cannot act on it."""
    text = re.sub(r"\s*[^.]*force=True[^.]*\.?", "", str(exc)).strip().rstrip(".")
    return f"not a DICOM file ({text})" if text else "not a DICOM file"
