"""The SR engine: numpy frame in, super-resolved frame out. Never imports DICOM libraries.

Public API (implemented in :mod:`dicom_sr.engine.api`)::

    fit(frames, config, *, init=None, iterations=None, lr=None, progress=None) -> TrainedModel
    upscale(frame, model, config) -> np.ndarray
    super_resolve(frame, config, progress=None) -> np.ndarray
    fit_cine(frames, config, progress=None) -> TrainedModel
    save_weights(model, path); load_weights(path) -> TrainedModel
"""
