"""``python -m dicom_sr.cli``: the same as the ``dicom-sr`` command (for services and tests)."""

from dicom_sr.cli import main

main()
