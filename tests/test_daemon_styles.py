"""Styles (model folders loaded once, shared) and device selection (auto -> GPU when present, else CPU)."""
from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from exposure_engine.daemon import protocol as P
from exposure_engine.daemon import styles as S
from exposure_engine.daemon.client import Client, DaemonError
from exposure_engine.daemon.protocol import Code, ProtocolError
from exposure_engine.daemon.server import Server, ServerConfig, default_batch_window_ms

from daemon_support import make_image, small_policy


@pytest.fixture
def models(tmp_path):
    small_policy(0).save(tmp_path / "default")
    small_policy(1).save(tmp_path / "warm")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "policy.pt").write_bytes(b"not a torch file")
    (tmp_path / "notes").mkdir()  # not a model folder: ignored
    return tmp_path


def test_model_folders_are_styles_and_the_hash_is_the_weights_sha256(models):
    styles = S.Styles([models])
    assert styles.names() == ["broken", "default", "warm"] and styles.default == "default"
    name, policy = styles.get(None)
    assert name == "default"
    assert policy.content_hash == hashlib.sha256((models / "default" / "policy.pt").read_bytes()).hexdigest()


def test_each_style_is_loaded_once_even_under_concurrent_first_use(models):
    styles = S.Styles([models])
    got = []
    threads = [threading.Thread(target=lambda: got.append(styles.get("warm")[1])) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(p) for p in got}) == 1


def test_a_broken_model_is_a_model_error_naming_the_file(models):
    with pytest.raises(ProtocolError) as e:
        S.Styles([models]).get("broken")
    assert e.value.code == Code.MODEL_ERROR and "policy.pt" in e.value.message


def test_the_first_root_wins(models, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    small_policy(5).save(other / "default")
    _, policy = S.Styles([other, models]).get("default")
    assert policy.content_hash == hashlib.sha256((other / "default" / "policy.pt").read_bytes()).hexdigest()


def test_a_daemon_serves_several_styles_from_folders_and_reports_them(models):
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", device="cpu", models_dir=models))
    server.start()  # preloads: the broken one is reported, not fatal
    thread = server.run_in_thread()
    try:
        with Client(server.endpoint, timeout=30, retries=0) as c:
            info = {s["name"]: s for s in c.info()["styles"]}
            assert info["default"]["loaded"] and info["warm"]["loaded"] and not info["broken"]["loaded"]
            a = c.predict(make_image(), seed=1)[0]
            b = c.predict(make_image(), seed=1, style="warm")[0]
            assert a.model["content_hash"] == info["default"]["content_hash"]
            assert b.model["content_hash"] == info["warm"]["content_hash"]
            with pytest.raises(DaemonError) as e:
                c.predict(make_image(), style="broken")
            assert e.value.code == Code.MODEL_ERROR
    finally:
        server.request_stop()
        thread.join(30)


def test_device_auto_picks_the_gpu_only_when_torch_sees_one(monkeypatch):
    from exposure_engine import devices

    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    assert devices.resolve_device("auto") == "cuda" and devices.resolve_device("cuda") == "cuda"
    assert devices.resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    assert devices.resolve_device("auto") == "cpu" and devices.resolve_device(None) == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        devices.resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        devices.resolve_device("tpu")


def test_batching_window_is_fixed_on_a_gpu_and_adaptive_on_a_cpu(monkeypatch):
    assert default_batch_window_ms("cuda") > 0 and default_batch_window_ms("cuda:1") > 0
    from exposure_engine.daemon.styles import Styles

    cpu = Server(ServerConfig(), Styles((), "cpu", {}))
    assert cpu.batch_window > 0 and cpu.adaptive_window  # a lone client never waits
    assert not Server(ServerConfig(batch_window_ms=2), Styles((), "cpu", {})).adaptive_window
    gpu = Server(ServerConfig(), Styles((), "cuda", {}))
    assert gpu.batch_window == default_batch_window_ms("cuda") / 1000 and not gpu.adaptive_window


def test_style_names_cannot_escape_the_models_folder(models):
    with pytest.raises(ProtocolError) as e:
        S.Styles([models / "default"]).get("../warm")
    assert e.value.code == Code.UNKNOWN_STYLE


# --- protocol helpers ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a,enc", [(np.zeros((2, 3, 3), np.uint8), "srgb"), (np.zeros((2, 3, 3), np.uint16), "linear"),
                                   (np.zeros((2, 3, 3), np.float32), "linear")])
def test_arrays_round_trip_through_descriptor_and_frame(a, enc):
    a = a + np.arange(18).reshape(a.shape).astype(a.dtype)
    desc = P.describe_array(a, enc)
    frame = P.array_frame(a, desc["dtype"]).tobytes()
    dtype, shape, got_enc = P.parse_descriptor(desc, max_pixels=100)
    np.testing.assert_array_equal(P.frame_array(frame, dtype, shape), a)
    assert got_enc == enc


def test_srgb_uint8_decodes_with_the_exact_curve():
    a = np.array([[[0, 10, 255]]], np.uint8)
    lin = P.to_linear(a, "srgb")
    np.testing.assert_allclose(lin[0, 0], [0.0, 10 / 255 / 12.92, 1.0], rtol=1e-6)
    np.testing.assert_allclose(P.to_linear(a, "linear")[0, 0], [0, 10 / 255, 1.0], rtol=1e-6)
