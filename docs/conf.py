"""Sphinx configuration of the dicom-sr documentation (``sphinx-build -W -b html docs ...``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

from dicom_sr import __version__  # noqa: E402

project = "dicom-sr"
author = "the dicom-sr authors"
copyright = "2026, the dicom-sr authors"  # noqa: A001
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_click",
    "config_reference",
]

exclude_patterns = ["_build"]
templates_path: list[str] = []
html_theme = "alabaster"
html_theme_options = {
    "description": "Self-supervised CycleGAN super-resolution for ultrasound DICOM",
    "fixed_sidebar": True,
}

# autodoc: signatures with types, members in source order, no import side effects beyond the
# package itself (the engine imports torch, which is fine on a CPU).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {
    "members": True,
    "show-inheritance": False,
    "exclude-members": "model_config, model_fields, model_computed_fields",
}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

nitpicky = False


def _short_model_signature(app, what, name, obj, options, signature, return_annotation):
    """Pydantic models: ``(**fields)`` instead of every field; the keys are in configuration."""
    from pydantic import BaseModel

    if what == "class" and isinstance(obj, type) and issubclass(obj, BaseModel):
        return "(**fields)", return_annotation
    return None


def setup(app):
    app.connect("autodoc-process-signature", _short_model_signature)
