"""TEMPORARY: bridges to store/provenance/encode/discover APIs that are landing in parallel."""

from __future__ import annotations

import contextlib
import inspect

from dicom_sr.dicom import discover as _discover
from dicom_sr.dicom import encode as _encode
from dicom_sr.dicom import provenance as _prov
from dicom_sr.dicom import store as _store


def remove_stale_parts(out_dir):
    f = getattr(_store, "remove_stale_parts", None)
    return f(out_dir) if f else 0


def series_lock(out_dir, uid):
    f = getattr(_store, "series_lock", None)
    return f(out_dir, uid) if f else contextlib.nullcontext()


def write_atomic(ds, path):
    n = _store.write_atomic(ds, path)
    return n if isinstance(n, int) else path.stat().st_size


def _uid(fn, root, uid, ident, revision):
    if "revision" in inspect.signature(fn).parameters:
        return fn(root, uid, ident, revision=revision)
    return fn(root, uid, ident if not revision else f"{ident}-rev{revision}")


def derived_series_uid(root, uid, ident, *, revision=0):
    return _uid(_prov.derived_series_uid, root, uid, ident, revision)


def derived_sop_uid(root, uid, ident, *, revision=0):
    return _uid(_prov.derived_sop_uid, root, uid, ident, revision)


def FrameEncoder(*args, **kwargs):  # noqa: N802
    enc = _encode.FrameEncoder(*args, **kwargs)
    return enc if hasattr(enc, "__enter__") else contextlib.nullcontext(enc)


def discover(inputs, *, max_pixels=None, exclude=()):
    if "exclude" in inspect.signature(_discover.discover).parameters:
        return _discover.discover(inputs, max_pixels=max_pixels, exclude=exclude)
    return _discover.discover(inputs, max_pixels=max_pixels)
