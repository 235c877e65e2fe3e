"""``dicom-sr compare``: a static before-and-after page of source series and their derived series.

Modules, one job each: :mod:`.sources` (the derived series of each source, from output
manifests), :mod:`.provenance` (what a derived header says about how it was made),
:mod:`.frames` (display frames, the ruler's calibration, burned-in text blanking),
:mod:`.compute` (a method run on the fly into a scratch folder), :mod:`.build` (the pages).
The page itself is :mod:`dicom_sr.viewer`'s.
"""

__all__ = ["build_compare", "CompareResult"]


def __getattr__(name: str):
    if name in __all__:
        from dicom_sr.compare import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
