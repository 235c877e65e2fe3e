"""dicom-sr: self-supervised CycleGAN super-resolution for ultrasound DICOM."""

__version__ = "0.1.0"
