"""The daemon over a real loopback ZeroMQ socket: every request kind, every error path, concurrency, lifecycle."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zmq

from exposure_engine import filters as F
from exposure_engine.daemon import protocol as P
from exposure_engine.daemon.client import Client, DaemonError, DaemonUnavailable
from exposure_engine.daemon.protocol import Code, Limits
from exposure_engine.daemon.server import EndpointInUse, Server, ServerConfig, ServerError
from exposure_engine.daemon.styles import Styles
from exposure_engine.imageio.transfer import srgb_to_linear, srgb_to_linear_exact
from exposure_engine.renderer import render
from exposure_engine.sequence import EditSequence

from daemon_support import (header, raw_header, running_server, sequences_close, small_policy,
                            make_image)

SEQ = {"format": "exposure-edit-sequence", "version": 1, "steps": [
    {"filter": "exposure", "params": {"ev": 0.7}},
    {"filter": "gamma", "params": {"gamma": 0.45}},
    {"filter": "saturation", "params": {"amount": 0.3}}]}


@pytest.fixture(scope="module")
def daemon():
    with running_server(policies={"default": small_policy(0), "other": small_policy(1)}) as server:
        yield server


@pytest.fixture
def client(daemon):
    with Client(daemon.endpoint, timeout=20, retries=0) as c:
        yield c


# --- ping / info -------------------------------------------------------------------------------------------------

def test_ping_answers_with_version_and_echoes_the_request_id(daemon):
    reply = raw_header(daemon.endpoint, [header("ping", id="abc")])
    assert reply["ok"] is True and reply["protocol"] == 1 and reply["id"] == "abc"
    assert reply["version"] and reply["pid"] > 0


def test_info_lists_each_style_with_its_content_hash_and_the_device(daemon, client):
    info = client.info()
    styles = {s["name"]: s for s in info["styles"]}
    assert set(styles) == {"default", "other"}
    for name in styles:
        _, policy = daemon.styles.get(name)
        assert styles[name]["content_hash"] == policy.content_hash and styles[name]["loaded"]
    assert styles["default"]["content_hash"] != styles["other"]["content_hash"]
    assert info["device"] == "cpu" and info["default_style"] == "default"
    assert info["protocol"] == 1 and info["engine"] == "exposure-engine"
    assert info["filters"] == [f.name for f in F.FILTERS]
    assert info["limits"]["max_frame_bytes"] == Limits().max_frame_bytes


# --- predict -----------------------------------------------------------------------------------------------------

def test_predict_returns_valid_sequences_with_per_step_probabilities(client):
    [pred] = client.predict(make_image(), seed=5)
    assert len(pred.sequence.steps) == 5
    assert pred.probabilities.shape == (5, len(F.FILTERS))
    np.testing.assert_allclose(pred.probabilities.sum(axis=1), 1.0, atol=1e-4)
    for t, step in enumerate(pred.sequence.steps):
        assert step.meta["probabilities"][step.filter] == pytest.approx(pred.probabilities[t, F.get(step.filter).index],
                                                                        abs=1e-5)
    assert pred.seed == 5 and pred.style == "default"
    EditSequence.from_dict(pred.sequence.to_dict())  # round-trips through the schema


def test_predict_equals_the_policy_run_in_process_on_the_same_proxy(daemon, client):
    img = make_image(300, 400)  # larger than PROXY_SIDE: the client sends the 64 px state of a 256 px proxy
    [remote] = client.predict(img, seed=11)
    from exposure_engine.daemon.client import predict_proxy
    from exposure_engine.imageio.proxy import STATE_SIZE, make_proxy

    proxy, enc = predict_proxy(img)
    assert proxy.shape == (STATE_SIZE, STATE_SIZE, 3) and enc == "linear"
    _, policy = daemon.styles.get("default")
    [local] = policy.predict(proxy, seed=11)
    assert sequences_close(remote.sequence, local.sequence)
    # ... and it is what the policy makes of the 256 px proxy a plug-in sends: bit for bit the same state.
    [plugin] = policy.predict(make_proxy(P.to_linear(img, "srgb"), P.PROXY_SIDE), seed=11)
    assert plugin.sequence.to_dict() == local.sequence.to_dict()


def test_predict_proxy_sends_the_policy_state_the_daemon_would_compute(client):
    from exposure_engine.daemon.client import predict_proxy
    from exposure_engine.imageio.proxy import STATE_SIZE, make_proxy, resize_proxy

    for img in (make_image(300, 400), make_image(100, 150), make_image(256, 256)):
        linear = P.to_linear(img, "srgb")
        sent = linear if max(img.shape[:2]) <= P.PROXY_SIDE else make_proxy(linear, P.PROXY_SIDE)
        proxy, enc = predict_proxy(img)
        assert enc == "linear"
        np.testing.assert_array_equal(proxy, resize_proxy(sent, STATE_SIZE))  # the daemon's own reduction
    small = make_image(48, 64)
    assert predict_proxy(small)[0] is small  # at most 64 px: sent as it is (uint8, sRGB)
    bad = np.full((300, 300, 3), np.nan, np.float32)
    proxy, enc = predict_proxy(bad)
    assert proxy.shape == (P.PROXY_SIDE, P.PROXY_SIDE, 3)  # unreduced, for the daemon's bad_image error
    with pytest.raises(DaemonError) as e:
        client.predict(bad)
    assert e.value.code == Code.BAD_IMAGE


def test_without_seed_or_variants_the_reply_is_the_mean_edit_of_the_in_process_policy(daemon, client):
    # The default the plug-ins use: no dropout, so the same photo gets the same edit on every request.
    img = make_image(300, 400)
    first, again = client.predict(img)[0], client.predict(img)[0]
    assert first.seed is None and first.sequence.meta.get("dropout") is False
    assert sequences_close(first.sequence, again.sequence, tol=1e-7)
    from exposure_engine.daemon.client import predict_proxy

    _, policy = daemon.styles.get("default")
    [local] = policy.predict(predict_proxy(img)[0])
    assert sequences_close(first.sequence, local.sequence)
    [sampled] = client.predict(img, dropout=True, seed=4)
    assert sampled.seed == 4 and not sequences_close(sampled.sequence, first.sequence, tol=1e-6)


def test_variants_use_consecutive_seeds_and_match_single_predictions(client):
    img = make_image(seed=3)
    preds = client.predict(img, variants=3, seed=20)
    assert [p.seed for p in preds] == [20, 21, 22]
    [third] = client.predict(img, seed=22)
    assert sequences_close(preds[2].sequence, third.sequence)
    # dropout is on at inference: different seeds give different edits (the paper's one-to-many)
    assert not sequences_close(preds[0].sequence, preds[1].sequence, tol=1e-6)


def test_style_picks_the_model(client):
    img = make_image()
    a = client.predict(img, seed=1, style="default")[0]
    b = client.predict(img, seed=1, style="other")[0]
    assert a.model["content_hash"] != b.model["content_hash"] and b.style == "other"


@pytest.mark.parametrize("dtype,encoding", [("uint8", None), ("uint16", None), ("uint16", "linear"),
                                            ("float32", None)])
def test_predict_accepts_each_pixel_type(client, dtype, encoding):
    img8 = make_image()
    img = {"uint8": img8, "uint16": img8.astype(np.uint16) * 257, "float32": srgb_to_linear(img8 / 255.0)}[dtype]
    [pred] = client.predict(img, seed=2, encoding=encoding)
    assert len(pred.sequence.steps) == 5


def test_unknown_style_is_an_error_naming_the_available_ones(client):
    with pytest.raises(DaemonError) as e:
        client.predict(make_image(), style="nope")
    assert e.value.code == Code.UNKNOWN_STYLE and "default" in e.value.message and "other" in e.value.message


# --- render / export ---------------------------------------------------------------------------------------------

def test_render_of_srgb_uint8_equals_the_local_renderer(client):
    img = make_image(120, 90)
    out = client.render(img, SEQ)
    assert out.dtype == np.float32 and out.shape == (120, 90, 3)
    np.testing.assert_array_equal(out, render(srgb_to_linear_exact(img / 255.0), SEQ))


def test_render_of_linear_float32_and_uint16_is_exact(client):
    rng = np.random.default_rng(0)
    lin = rng.random((33, 47, 3), dtype=np.float32)
    np.testing.assert_array_equal(client.render(lin, SEQ), render(lin, SEQ))
    u16 = (lin * 65535).astype(np.uint16)
    np.testing.assert_array_equal(client.render(u16, SEQ, encoding="linear"), render(u16 / np.float32(65535), SEQ))
    brighten = {"format": "exposure-edit-sequence", "version": 1,
                "steps": [{"filter": "exposure", "params": {"ev": 2.0}}]}
    unclipped = client.render(lin, brighten, clip=False)
    np.testing.assert_allclose(unclipped, lin * 4, rtol=1e-6)  # clip=False keeps the formulas' raw values


def test_export_returns_the_main_file_first_and_the_cube_it_references(client):
    files = client.export(SEQ, "xmp", "exact", name="look")
    names = list(files)
    assert names[0] == "look.xmp" and "look.cube" in names
    assert files["look.xmp"].startswith(b"<?xml") and b"LUT_3D_SIZE" in files["look.cube"]
    cube = client.export(SEQ, "cube")
    assert len(cube) == 1 and next(iter(cube)).endswith(".cube")


def test_export_with_a_bad_sequence_names_the_field(daemon):
    bad = json.loads(json.dumps(SEQ))
    bad["steps"][1]["params"] = {"gamma": "x"}
    reply = raw_header(daemon.endpoint, [header("export", sequence=bad, format="dtstyle")])
    assert reply["error"]["code"] == Code.BAD_SEQUENCE and "steps[1].params" in reply["error"]["message"]


# --- malformed requests: a structured error each, never silence ----------------------------------------------------

GOOD_IMG = {"dtype": "uint8", "shape": [4, 5, 3], "encoding": "srgb"}
PIX = bytes(60)

MALFORMED = [
    ("empty header", [b""], Code.BAD_JSON),
    ("not utf-8", [b"\xff\xfe{"], Code.BAD_JSON),
    ("not json", [b"{protocol: 1"], Code.BAD_JSON),
    ("json array", [b"[1, 2]"], Code.BAD_JSON),
    ("NaN constant", [b'{"protocol": 1, "kind": "ping", "x": NaN}'], Code.BAD_JSON),
    ("no protocol", [b'{"kind": "ping"}'], Code.BAD_HEADER),
    ("protocol 2", [b'{"protocol": 2, "kind": "ping"}'], Code.UNSUPPORTED_PROTOCOL),
    ("protocol true", [b'{"protocol": true, "kind": "ping"}'], Code.UNSUPPORTED_PROTOCOL),
    ("kind missing", [b'{"protocol": 1}'], Code.BAD_HEADER),
    ("unknown kind", [header("shutdown")], Code.UNKNOWN_KIND),
    ("ping with payload", [header("ping"), b"x"], Code.BAD_MESSAGE),
    ("too many frames", [header("ping")] + [b"x"] * 8, Code.BAD_MESSAGE),
    ("predict without image", [header("predict", image=GOOD_IMG)], Code.BAD_MESSAGE),
    ("predict no descriptor", [header("predict"), PIX], Code.BAD_HEADER),
    ("truncated payload", [header("predict", image=GOOD_IMG), PIX[:-1]], Code.BAD_IMAGE),
    ("float64", [header("predict", image={**GOOD_IMG, "dtype": "float64"}), PIX], Code.BAD_IMAGE),
    ("4 channels", [header("predict", image={**GOOD_IMG, "shape": [3, 5, 4]}), PIX], Code.BAD_IMAGE),
    ("shape of strings", [header("predict", image={**GOOD_IMG, "shape": ["4", 5, 3]}), PIX], Code.BAD_IMAGE),
    ("huge declared shape", [header("predict", image={**GOOD_IMG, "shape": [10**6, 10**6, 3]}), PIX], Code.TOO_LARGE),
    ("bad encoding", [header("predict", image={**GOOD_IMG, "encoding": "rec2020"}), PIX], Code.BAD_IMAGE),
    ("variants 0", [header("predict", image=GOOD_IMG, variants=0), PIX], Code.TOO_LARGE),
    ("variants 1000", [header("predict", image=GOOD_IMG, variants=1000), PIX], Code.TOO_LARGE),
    ("variants float", [header("predict", image=GOOD_IMG, variants=2.0), PIX], Code.BAD_HEADER),
    ("seed string", [header("predict", image=GOOD_IMG, seed="7"), PIX], Code.BAD_HEADER),
    ("dropout string", [header("predict", image=GOOD_IMG, dropout="no"), PIX], Code.BAD_HEADER),
    ("variants without dropout", [header("predict", image=GOOD_IMG, variants=2, dropout=False), PIX],
     Code.BAD_HEADER),
    ("style number", [header("predict", image=GOOD_IMG, style=3), PIX], Code.BAD_HEADER),
    ("style path", [header("predict", image=GOOD_IMG, style="../../etc"), PIX], Code.UNKNOWN_STYLE),
    ("nan pixels", [header("predict", image={**GOOD_IMG, "dtype": "float32", "encoding": "linear"}),
                    np.full((4, 5, 3), np.nan, np.float32).tobytes()], Code.BAD_IMAGE),
    ("render no sequence", [header("render", image=GOOD_IMG), PIX], Code.BAD_HEADER),
    ("render bad sequence", [header("render", image=GOOD_IMG, sequence={"steps": []}), PIX], Code.BAD_SEQUENCE),
    ("render clip string", [header("render", image=GOOD_IMG, sequence=SEQ, clip="yes"), PIX], Code.BAD_HEADER),
    ("export no format", [header("export", sequence=SEQ)], Code.BAD_HEADER),
    ("export bad format", [header("export", sequence=SEQ, format="psd")], Code.BAD_HEADER),
    ("export bad mode", [header("export", sequence=SEQ, format="xmp", mode="fast")], Code.BAD_HEADER),
    ("id object", [b'{"protocol": 1, "kind": "ping", "id": {"a": 1}}'], Code.BAD_HEADER),
]


@pytest.mark.parametrize("frames,code", [(f, c) for _, f, c in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_request_gets_a_structured_error(daemon, frames, code):
    reply = raw_header(daemon.endpoint, frames)
    assert reply["ok"] is False and reply["protocol"] == 1
    assert reply["error"]["code"] == code, reply
    assert isinstance(reply["error"]["message"], str) and len(reply["error"]["message"]) > 10


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_headers_never_carry_nan_or_infinity(value):
    # The fast JSON writer turns NaN into null; the protocol must refuse it instead, however deep it sits.
    with pytest.raises(ValueError, match="NaN or Infinity"):
        P.dumps({"a": [{"b": [1.0, value]}]})
    with pytest.raises(ValueError):
        P.dumps({"a": (np.float64(value),)})  # a float subclass in a tuple
    with pytest.raises(ValueError):
        P.request("render", sequence={"steps": [{"filter": "exposure", "params": {"ev": value}}]})


def test_header_json_round_trips_exactly():
    doc = {"id": 2**70, "seed": None, "big": -(10**30), "x": 0.1 + 0.2, "s": "é\u2603\n", "l": [True, False, None],
           "nested": {"k": [1, 2.5, {"z": []}]}}
    assert P.loads_header(P.dumps(doc), 1 << 20) == doc  # integers beyond 64 bits stay integers
    assert json.loads(P.dumps(doc)) == doc  # and any JSON reader reads what the daemon writes
    with pytest.raises(P.ProtocolError, match="not UTF-8"):
        P.loads_header(b'{"a": "\xff"}', 1 << 20)
    with pytest.raises(P.ProtocolError, match="NaN is not valid JSON"):
        P.loads_header(b'{"a": NaN}', 1 << 20)


def test_error_reply_echoes_a_valid_id_so_pipelined_clients_can_match_it(daemon):
    reply = raw_header(daemon.endpoint, [header("predict", id=42, image=GOOD_IMG, variants=0), PIX])
    assert reply["id"] == 42 and reply["error"]["code"] == Code.TOO_LARGE


def test_header_over_the_limit_is_refused(daemon):
    big = header("ping", pad="x" * (Limits().max_header_bytes + 1))
    assert raw_header(daemon.endpoint, [big])["error"]["code"] == Code.TOO_LARGE


def test_a_dealer_without_delimiter_frame_is_served_too(daemon):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(daemon.endpoint)
    try:
        s.send_multipart([header("ping", id=1)])
        assert s.poll(10000)
        assert json.loads(s.recv_multipart()[0])["ok"] is True
    finally:
        s.close(0)


# --- concurrency -------------------------------------------------------------------------------------------------

def _dealer(url: str) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(url)
    return s


def _recv_all(s: zmq.Socket, n: int, timeout_ms: int = 60000) -> list[dict]:
    out = []
    while len(out) < n:
        assert s.poll(timeout_ms), f"only {len(out)} of {n} replies"
        frames = s.recv_multipart()
        out.append(json.loads(frames[1]))  # frames[0] is the empty delimiter we sent
    return out


SLOW_SEQ = {"format": "exposure-edit-sequence", "version": 1, "steps": [
    {"filter": "color_curves", "params": {"slopes": [[1.0] * 8] * 3}}] * 64}  # the longest sequence allowed


def test_a_slow_render_does_not_hold_up_ping_or_predict(daemon):
    big = np.zeros((1000, 1500, 3), np.uint8)  # x 64 colour-curve steps: seconds of rendering
    s = _dealer(daemon.endpoint)
    try:
        desc = P.describe_array(big, "srgb")
        s.send_multipart([b"", header("render", id="render", image=desc, sequence=SLOW_SEQ), big], copy=False)
        s.send_multipart([b"", header("ping", id="ping")])
        small = make_image(8, 8)
        s.send_multipart([b"", header("predict", id="predict", seed=1, image=P.describe_array(small, "srgb")),
                          small.tobytes()])
        order = [r["id"] for r in _recv_all(s, 3)]
    finally:
        s.close(0)
    # ping is answered by the I/O thread and predict by its own worker: neither waits for the render
    assert order.index("render") == 2, order


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_predicts_are_batched_and_each_keeps_its_own_seed(workers):
    with running_server(ServerConfig(batch_window_ms=300, predict_workers=workers)) as server:
        assert server.info()["batching"]["predict_workers"] == workers
        img = make_image()
        results: dict[int, object] = {}

        def one(seed: int) -> None:
            with Client(server.endpoint, timeout=60, retries=0) as c:
                results[seed] = c.predict(img, seed=seed)[0]

        threads = [threading.Thread(target=one, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == list(range(8))
        assert server.stats["max_batch_rows"] > 1  # several requests shared one predict_batch call
        _, policy = server.styles.get("default")
        linear = srgb_to_linear(img / 255.0)
        for seed, pred in results.items():
            assert sequences_close(pred.sequence, policy.predict(linear, seed=seed)[0].sequence)


def test_a_full_render_queue_answers_busy_and_loses_nothing():
    # small to send (3 MB of uint8), slow to render (64 colour-curve steps): all 8 arrive while the first renders
    slow = SLOW_SEQ
    with running_server(ServerConfig(render_queue=1)) as server:
        img = np.zeros((1000, 1000, 3), np.uint8)
        desc = P.describe_array(img, "srgb")
        s = _dealer(server.endpoint)
        try:
            for i in range(8):
                s.send_multipart([b"", header("render", id=i, image=desc, sequence=slow), img], copy=False)
            replies = _recv_all(s, 8)
        finally:
            s.close(0)
        assert sorted(r["id"] for r in replies) == list(range(8))
        busy = [r for r in replies if not r["ok"]]
        assert busy and all(r["error"]["code"] == Code.BUSY for r in busy)
        assert any(r["ok"] for r in replies)


def test_a_client_that_vanishes_mid_request_does_not_disturb_the_daemon(daemon):
    img = np.zeros((1000, 1000, 3), np.float32)
    for _ in range(3):
        s = _dealer(daemon.endpoint)
        s.send_multipart([b"", header("render", image=P.describe_array(img, "linear"), sequence=SEQ), img])
        s.close(0)  # gone before the reply
    before = daemon.stats["replies"]
    assert raw_header(daemon.endpoint, [header("ping")])["ok"]
    with Client(daemon.endpoint, timeout=30, retries=0) as c:
        assert c.render(np.ones((2, 2, 3), np.float32), SEQ).shape == (2, 2, 3)
    assert daemon.stats["replies"] > before


def test_a_frame_over_max_frame_bytes_is_dropped_by_libzmq_and_the_daemon_lives_on():
    with running_server(ServerConfig(limits=Limits(max_frame_bytes=100_000))) as server:
        img = np.zeros((200, 200, 3), np.float32)  # 480 kB frame
        with Client(server.endpoint, timeout=1.0, retries=0) as c:
            with pytest.raises(DaemonUnavailable):
                c.render(img, SEQ, timeout=1.0)
            assert c.ping()["ok"]


# --- lifecycle ---------------------------------------------------------------------------------------------------

def test_stop_drains_requests_in_progress_then_refuses_new_ones():
    with running_server() as server:
        img = np.zeros((2000, 3000, 3), np.uint8)  # with SLOW_SEQ: still rendering when the late ping comes
        s = _dealer(server.endpoint)
        try:
            s.send_multipart([b"", header("render", id="r", image=P.describe_array(img, "srgb"), sequence=SLOW_SEQ),
                              img])
            while server.stats["requests"] < 1:  # the I/O thread has taken the render: now stop
                s.poll(5)
            server.request_stop()
            while not server.draining:
                s.poll(5)
            s.send_multipart([b"", header("ping", id="late")])
            replies = {r["id"]: r for r in _recv_all(s, 2)}
        finally:
            s.close(0)
        assert replies["r"]["ok"] is True  # the render in progress finished and was delivered
        assert replies["late"]["error"]["code"] == Code.SHUTTING_DOWN


def test_idle_exit_stops_the_daemon_by_itself():
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", idle_exit=0.2), Styles((), "cpu", {"d": small_policy()}))
    server.start()
    thread = server.run_in_thread()
    thread.join(timeout=30)
    assert not thread.is_alive() and server.exit_reason == "idle"


def test_a_second_daemon_on_the_same_endpoint_gets_a_clear_error(daemon):
    with pytest.raises(EndpointInUse, match="already in use"):
        Server(ServerConfig(bind=daemon.endpoint), Styles((), "cpu", {})).start()


def test_a_second_daemon_on_the_same_ipc_path_gets_a_clear_error(tmp_path):
    url = f"ipc://{tmp_path}/d.sock"
    with running_server(ServerConfig(bind=url)):
        with pytest.raises(EndpointInUse, match="already served"):
            Server(ServerConfig(bind=url), Styles((), "cpu", {})).start()


def test_a_stale_ipc_file_from_a_killed_daemon_is_reclaimed(tmp_path):
    path = tmp_path / "d.sock"
    path.write_bytes(b"")  # what kill -9 leaves behind
    with running_server(ServerConfig(bind=f"ipc://{path}")) as server:
        assert raw_header(server.endpoint, [header("ping")])["ok"]


def test_no_model_installed_is_a_clear_predict_error_not_a_crash():
    with running_server(policies={}) as server:
        with Client(server.endpoint, timeout=20, retries=0) as c:
            with pytest.raises(DaemonError, match="no model is installed") as e:
                c.predict(make_image())
            assert e.value.code == Code.UNKNOWN_STYLE
            assert c.ping()["ok"]


def test_unsafe_binds_are_refused_before_anything_listens():
    with pytest.raises(ServerError, match="--allow-remote"):
        Server(ServerConfig(bind="tcp://0.0.0.0:0"), Styles((), "cpu", {})).start()
    with pytest.raises(ServerError, match="needs --keys"):
        Server(ServerConfig(bind="tcp://*:0", allow_remote=True), Styles((), "cpu", {})).start()
