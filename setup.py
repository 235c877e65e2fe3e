"""Packages of dicom-sr; the rest of the metadata is in setup.cfg.

The named pipelines live in the top-level ``pipelines/`` folder (the source of truth that docs
and tests read) and ship inside the package as ``dicom_sr/pipelines/*.toml``, where
:func:`dicom_sr.config.pipelines_dir` finds them in a wheel install. setup.cfg cannot map a
folder outside the package tree into a package next to ``find:``, hence these three lines.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["dicom_sr", "dicom_sr.*"]), "dicom_sr.pipelines"],
    package_dir={"dicom_sr.pipelines": "pipelines"},
    package_data={
        "dicom_sr.pipelines": ["*.toml"],
        "dicom_sr.viewer": ["assets/*.js", "assets/*.css"],  # the compare page's viewer
    },
)
