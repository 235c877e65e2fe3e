"""The DICOM side: discovering series, decoding frames, US geometry, writing derived objects.

Never imports torch.
"""
