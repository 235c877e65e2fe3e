"""The DICOM node (``dicom-sr listen``): SCP handlers, spool, series assembly, forwarding."""
