"""Device placement, planning for CUDA, and the repeatable-CUDA settings, checked without a GPU.

The ``meta`` device stands in for CUDA: its tensors have shapes and a device but no data, so
every operation runs (fast) and any operation that mixes a ``meta`` tensor with a CPU one
raises, exactly as a CPU tensor meeting a CUDA one would. Reading a value (``.item()``)
raises too, which shows that a training step makes no GPU sync.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicom_sr.config import EngineConfig, PipelineConfig
from dicom_sr.engine import api, device, infer, resize
from dicom_sr.engine import train as training
from dicom_sr.engine.api import TrainedModel, get_method, pixel_identity
from dicom_sr.engine.nets import Generator
from dicom_sr.pipeline import derived_series_uid_for, identity_hash

META = torch.device("meta")
FAKE_CUDA = torch.device("cuda")  # a device object only: nothing runs on it here

pytestmark = pytest.mark.filterwarnings("ignore:no VGG19 weights")


def _model(method: str, scale: int, model_scale: int, decision: str = "model") -> TrainedModel:
    torch.manual_seed(0)
    state = Generator(model_scale).state_dict() if method in ("zssr", "cyclegan") else None
    info = {"model_scale": model_scale, "guard": {"decision": decision}}
    return TrainedModel(method, scale, state, info)


# every route through the engine's apply functions: (method, scale, model_scale, weight, guard)
ROUTES = [
    ("bicubic", 2, 2, 1.0, "model"),
    ("ibp", 2, 2, 1.0, "model"),
    ("ibp", 4, 4, 1.0, "model"),
    ("zssr", 2, 2, 1.0, "model"),  # x2, the model alone
    ("zssr", 2, 2, 0.5, "model"),  # x2, the blend with ibp
    ("cyclegan", 4, 2, 0.5, "model"),  # x4 through an x2 model (the default route)
    ("cyclegan", 4, 2, 1.0, "model"),  # x4 through x2, the model alone
    ("cyclegan", 4, 4, 0.5, "model"),  # direct x4
    ("zssr", 3, 3, 0.5, "model"),
    ("cyclegan", 4, 2, 0.5, "ibp"),  # the guard chose ibp
]


@pytest.mark.parametrize("ensemble", [1, 8])
@pytest.mark.parametrize(("method", "scale", "ms", "weight", "guard"), ROUTES)
def test_every_route_computes_on_the_device_of_the_run(method, scale, ms, weight, guard, ensemble):
    """The input frame arrives on the CPU (as ``upscale`` builds it); every tensor the route
    makes must be on the run's device: a CPU tensor meeting a ``meta`` one raises."""
    cfg = EngineConfig(
        method=method,
        scale=scale,
        model_scale=ms,
        model_weight=weight,
        ensemble=ensemble,
        precision="fp32",
        tile=32,
        tile_overlap=8,
        back_projection_iters=2,
    )
    lr = torch.rand(1, 1, 40, 72)  # two by three tiles
    out = get_method(method).apply(lr, _model(method, scale, ms, guard), cfg, META)
    assert out.device == META
    assert tuple(out.shape) == (1, 1, 40 * scale, 72 * scale)


@pytest.mark.parametrize("batch", [True, False])
def test_the_batched_self_ensemble_stays_on_the_device(batch):
    cfg = EngineConfig(method="zssr", scale=2, ensemble=8, precision="fp32", tile=32)
    cfg = cfg.model_copy(update={"tile": 12})  # tiles on a small input (below the floor)
    G = Generator(2).eval()
    out = infer.self_ensemble(G, torch.rand(2, 1, 20, 28), cfg, META, batch=batch)
    assert out.device == META and tuple(out.shape) == (2, 1, 40, 56)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("method", ["zssr", "cyclegan"])
def test_a_training_step_stays_on_the_device_and_never_syncs(method, scale):
    """Fathers, sons, noise, networks, losses and optimiser steps all on the device; the
    step's loss terms stay there (reading one would raise on ``meta``)."""
    frame = np.random.default_rng(0).random((72, 80)).astype(np.float32)
    cfg = EngineConfig(method=method, scale=scale, crop_size=32, batch_size=2, noise_std=0.02)
    cfg = cfg.model_copy(update={"crop_sampling": "uniform"})  # content weights read values
    loop = training._setup([frame], cfg, method, None, 1e-3, META, None)
    assert all(f.device == META for f in loop.fathers.images)
    terms = training._step(loop)
    assert terms and all(v.device == META for v in terms.values())
    assert all(p.device == META for p in loop.nets.g.parameters())


def test_resampling_takes_the_short_filters_off_the_cpu(monkeypatch):
    """Off the CPU, integer factors never build the dense (out, in) matrix."""

    def no_matrix(*args):
        raise AssertionError(f"dense matrix built for {args}")

    monkeypatch.setattr(resize, "_matrix_on", no_matrix)
    x = torch.empty(3, 1, 40, 50, device=META)
    cfg = EngineConfig()
    assert resize.upscale_bicubic(x, 4).shape[-2:] == (160, 200)
    assert resize.downscale(x, 2, cfg).shape[-2:] == (20, 25)
    gauss = cfg.model_copy(update={"kernel": "gaussian"})
    assert resize.downscale(x, 3, gauss).shape[-2:] == (14, 17)


# --- planning and the pixel identity for CUDA on a machine without one ---------------------


@pytest.fixture
def no_cuda(monkeypatch):
    """No CUDA here, and any call that would start it fails the test."""

    def started(*_a, **_k):
        raise AssertionError("CUDA was started")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("get_device_capability", "is_bf16_supported", "init", "current_device"):
        monkeypatch.setattr(torch.cuda, name, started)


@pytest.mark.parametrize("method", ["ibp", "zssr", "cyclegan"])
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_the_identity_of_a_cuda_configuration_needs_no_gpu(no_cuda, method, precision):
    cfg = EngineConfig(method=method, device="cuda", precision=precision)
    ident = pixel_identity(cfg)
    assert ident["device"] == "cuda"
    if method != "ibp":
        assert ident["precision"] == {"auto": "auto:cc8"}.get(precision, precision)
    cpu = pixel_identity(cfg.model_copy(update={"device": "cpu"}))
    assert cpu["device"] == "cpu" and cpu != ident


def test_planning_for_cuda_on_a_cpu_machine_gives_stable_derived_uids(no_cuda):
    cfg = PipelineConfig().with_overrides({"engine.device": "cuda"})
    uid = derived_series_uid_for("1.2.3.4", cfg)
    assert uid == derived_series_uid_for("1.2.3.4", cfg)
    assert identity_hash(cfg) != identity_hash(cfg.with_overrides({"engine.device": "cpu"}))
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        device.select_device("cuda")  # running, unlike planning, still needs the GPU


def test_auto_device_kind_follows_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.device_kind("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.device_kind("auto") == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        device.device_kind("tpu")


@pytest.mark.parametrize(
    ("major", "expected"), [(6, "fp32"), (7, "fp32"), (8, "bf16"), (9, "bf16")]
)
def test_auto_precision_on_cuda_needs_compute_capability_8(monkeypatch, major, expected):
    """``is_bf16_supported`` says True on a V100 (emulated bf16); the capability decides."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (major, 0))
    assert infer.precision(EngineConfig(precision="auto"), FAKE_CUDA) == expected
    assert infer.precision(EngineConfig(precision="fp32"), FAKE_CUDA) == "fp32"


# --- repeatable CUDA settings ----------------------------------------------------------------


def _settings() -> tuple:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
    )


def test_cuda_runs_deterministic_without_tf32_and_the_settings_come_back():
    before = _settings()
    torch.backends.cudnn.allow_tf32 = True  # torch's default, as on any GPU machine
    try:
        outer = _settings()
        with device.repeatable(FAKE_CUDA):
            assert _settings()[:2] == (True, True)  # deterministic kernels, warn only
            assert _settings()[2] == "highest"  # no TF32 in matmuls
            assert _settings()[3:] == (True, False, False)  # cuDNN: deterministic, no TF32
        assert _settings() == outer
        with device.repeatable(torch.device("cpu")):
            assert _settings() == outer  # the CPU path is left as it is
    finally:
        torch.backends.cudnn.allow_tf32 = before[5]


def test_crop_weights_are_computed_on_the_cpu():
    """The float64 cumsum has no deterministic CUDA kernel: it runs on the CPU."""
    img = torch.from_numpy(np.random.default_rng(1).random((40, 50)).astype(np.float32))
    torch.use_deterministic_algorithms(True)
    try:
        from dicom_sr.engine.fathers import crop_weights

        w = crop_weights(img, 8)
    finally:
        torch.use_deterministic_algorithms(False)
    assert w.device.type == "cpu" and w.shape == (33, 43)
    ref = img.double().unfold(0, 8, 1).unfold(1, 8, 1).std(dim=(-2, -1), unbiased=False)
    assert torch.allclose(w.double(), ref + 0.1 * ref.mean() + 1e-12, atol=1e-6)


def test_the_generator_is_built_once_per_model_and_device():
    model = _model("zssr", 2, 2)
    cpu = torch.device("cpu")
    assert model.generator(2, cpu) is model.generator(2, cpu)
    assert model.generator(2, META) is not model.generator(2, cpu)  # and the meta copy is gone
    assert len(model._nets) == 1


def test_a_cpu_worker_does_not_start_cuda():
    assert device.warm_up("cpu") is False
    assert api.select_device("cpu") == torch.device("cpu")


def test_a_pickled_model_leaves_its_built_generators_behind():
    import pickle

    model = _model("zssr", 2, 2)
    model.generator(2, torch.device("cpu"))
    copy = pickle.loads(pickle.dumps(model))
    assert copy._nets == {} and copy.generator_state.keys() == model.generator_state.keys()
    assert len(model._nets) == 1


def test_the_identity_on_a_gpu_machine_starts_no_cuda(monkeypatch):
    """The ``listen`` parent hashes the identity: on a GPU machine that must not create a CUDA
    context (it would hold GPU memory for the life of the node)."""

    def started(*_a, **_k):
        raise AssertionError("CUDA was started")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # counts, starts nothing
    for name in ("get_device_capability", "is_bf16_supported", "init", "current_device"):
        monkeypatch.setattr(torch.cuda, name, started)
    ident = pixel_identity(EngineConfig(method="cyclegan", device="auto"))
    assert ident["device"] == "cuda" and ident["precision"] == "auto:cc8"
