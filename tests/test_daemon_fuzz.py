"""10,000 random and malformed messages over a real socket: each gets a well-formed reply, none is an
``internal`` error (that would be a bug), and the daemon answers a ping after every batch."""
from __future__ import annotations

import json
import random
import time
from collections import Counter

import numpy as np
import pytest
import zmq

from exposure_engine.daemon import protocol as P
from exposure_engine.daemon.protocol import Code, Limits
from exposure_engine.daemon.server import ServerConfig

from daemon_support import raw_header, header, running_server

N_MESSAGES = 10_000
BATCH = 500

VALID_SEQ = {"format": "exposure-edit-sequence", "version": 1, "steps": [
    {"filter": "exposure", "params": {"ev": 0.5}}, {"filter": "tone_curve", "params": {"slopes": [1.0] * 8}}]}


def _junk_value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([None, True, False, 0, -1, 2**70, 1.5, -1e308, "", "x" * rng.randint(0, 300),
                           "\u00e9\u4e2d", [], {}])
    if r < 0.6:
        return [_junk_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["kind", "image", "shape", "dtype", "steps", "id", "a"]): _junk_value(rng, depth + 1)
            for _ in range(rng.randint(0, 4))}


def _descriptor(rng: random.Random) -> dict:
    d = {"dtype": rng.choice(["uint8", "uint16", "float32", "float64", "int8", "", None, 3]),
         "shape": rng.choice([[rng.randint(1, 6), rng.randint(1, 6), 3], [4, 4], [4, 4, 4], [0, 5, 3], [-2, 5, 3],
                              [10**9, 10**9, 3], [2**63, 1, 3], [2.0, 2, 3], "4x4", None]),
         "encoding": rng.choice(["srgb", "linear", "rec709", None, 1])}
    if rng.random() < 0.2:
        del d[rng.choice(list(d))]
    return d


def _payload_for(desc: dict, rng: random.Random) -> bytes:
    try:
        dtype, shape, _ = P.parse_descriptor(desc, max_pixels=10_000)
        n = int(np.prod(shape)) * dtype.itemsize
    except Exception:
        n = rng.randint(0, 200)
    n = max(0, n + rng.choice([0, 0, 0, -1, 1, -n // 2, 7]))  # exact, truncated or too long
    raw = bytes(rng.getrandbits(8) for _ in range(n)) if rng.random() < 0.3 else bytes(n)
    if desc.get("dtype") == "float32" and rng.random() < 0.3:
        raw = np.full(n // 4, rng.choice([np.nan, np.inf, 1e30, -5.0]), np.float32).tobytes()
    return raw


def _sequence(rng: random.Random):
    seq = json.loads(json.dumps(VALID_SEQ))
    r = rng.random()
    if r < 0.3:
        return seq
    if r < 0.5:
        seq["steps"][rng.randrange(2)]["params"] = _junk_value(rng)
    elif r < 0.7:
        seq["steps"].append({"filter": rng.choice(["exposure", "blur", "", 7]), "params": {"ev": "x"}})
    elif r < 0.8:
        seq["steps"][1]["params"]["slopes"] = [0.0] * 8
    else:
        return _junk_value(rng)
    return seq


def random_message(rng: random.Random) -> list[bytes]:
    r = rng.random()
    if r < 0.12:  # random bytes, random frame count
        return [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))) for _ in range(rng.randint(1, 6))]
    if r < 0.2:  # JSON that is not a request
        return [json.dumps(_junk_value(rng)).encode()] + [b"x"] * rng.randint(0, 2)
    if r < 0.24:  # broken JSON texts
        return [rng.choice([b"{", b'{"protocol": 1, "kind": "ping"', b"[" * 20000, b'{"a": NaN}', b"\xc3\x28",
                            b'{"protocol": 1, "kind": "ping"}' + b" " * (Limits().max_header_bytes + 1)])]
    # mostly well-formed envelopes, so that the mutations reach each kind's own checks
    kind = rng.choice(list(P.KINDS) * 6 + ["", "PING", "render ", None, 5])
    head: dict = {"protocol": 1 if rng.random() < 0.9 else rng.choice([0, 2, "1", 1.0, True, None]), "kind": kind}
    if rng.random() < 0.3:
        head["id"] = rng.choice([1, "a", None, 1.5, [1], "x" * 300, -7])
    payloads: list[bytes] = []
    if kind in ("predict", "render"):
        desc = _descriptor(rng)
        head["image"] = desc if rng.random() < 0.9 else _junk_value(rng)
        payloads = [_payload_for(desc, rng)] * rng.choice([1, 1, 1, 1, 0, 2])
        if kind == "predict":
            for key, choices in (("variants", [1, 2, 0, 17, -1, 1.0, "2", None, 10**20]),
                                 ("seed", [0, 5, -1, 2**40, 1.5, "7", None]),
                                 ("dropout", [True, False, None, 0, 1, "yes", []]),
                                 ("style", ["default", None, "nope", "../x", 3, "", "a" * 500])):
                if rng.random() < 0.4:
                    head[key] = rng.choice(choices)
        else:
            head["sequence"] = _sequence(rng)
            if rng.random() < 0.2:
                head["clip"] = rng.choice([True, False, 0, "no", None])
    elif kind == "export":
        head["sequence"] = _sequence(rng)
        head["format"] = rng.choice(["xmp", "dtstyle", "cube", "psd", None, 1])
        head["mode"] = rng.choice(["native", "exact", "fast", None])
        if rng.random() < 0.3:
            head["name"] = rng.choice(["look", "", "../../x", "a" * 200, 5])
        if rng.random() < 0.2:
            payloads = [b"extra"]
    elif rng.random() < 0.2:
        payloads = [b"unexpected"]
    return [json.dumps(head).encode()] + payloads


def _reply_header(frames: list[bytes]) -> dict:
    # A message sent without a delimiter but starting with an empty frame gets the delimiter back first.
    return json.loads(frames[1] if frames[0] == b"" else frames[0])


@pytest.mark.slow
def test_fuzz_ten_thousand_random_and_malformed_messages():
    rng = random.Random(20181122)
    # the cube exporter is the slowest valid request: a small queue keeps the run short (extra ones answer busy)
    with running_server(ServerConfig(export_queue=2, render_queue=4)) as server:
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(server.endpoint)
        codes: Counter = Counter()
        try:
            for start in range(0, N_MESSAGES, BATCH):
                t0 = time.perf_counter()
                for _ in range(BATCH):
                    frames = random_message(rng)
                    # mostly as a REQ socket sends (empty delimiter first), sometimes as a bare DEALER
                    s.send_multipart(([b""] if rng.random() < 0.8 else []) + frames)
                for i in range(BATCH):
                    assert s.poll(60000), f"message {start + i}: no reply (lost, or the daemon died)"
                    head = _reply_header(s.recv_multipart())
                    assert head["protocol"] == 1 and head["ok"] in (True, False)
                    if head["ok"]:
                        codes["ok"] += 1
                    else:
                        assert head["error"]["code"] in Code.ALL and head["error"]["message"]
                        codes[head["error"]["code"]] += 1
                assert raw_header(server.endpoint, [header("ping")])["ok"], f"no pong after {start + BATCH}"
                print(f"batch {start // BATCH}: {time.perf_counter() - t0:.2f} s")
        finally:
            s.close(0)
        print("fuzz reply codes:", dict(codes))
        assert sum(codes.values()) == N_MESSAGES
        assert codes[Code.INTERNAL] == 0, "an internal error is a bug: see the daemon log"
        # the generator reached deep into the request handlers, not only the JSON parser
        for code in (Code.BAD_JSON, Code.BAD_HEADER, Code.BAD_IMAGE, Code.BAD_SEQUENCE, Code.TOO_LARGE, "ok"):
            assert codes[code] > 0, code
