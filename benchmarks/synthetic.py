"""Tiny synthetic US Image Storage data sets for the archive benchmarks (plan and batch)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

__all__ = ["tiny_us"]

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def tiny_us(study: str, series: str, sop: str, number: int, pixels: np.ndarray) -> Dataset:
    """One single-frame MONOCHROME2 8-bit US instance with these UIDs and ``pixels`` (uint8)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = "US"
    ds.InstanceNumber = number
    ds.PatientName = "Synthetic^Archive"
    ds.PatientID = "BENCH"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, np.uint8).tobytes()
    return ds
