"""Shared by the tests/test_daemon_*.py modules: real daemons on real sockets, raw-socket helpers.

A daemon here is the real :class:`Server` (real ZeroMQ ROUTER on loopback TCP, real worker threads, a real
untrained policy) running in a thread of the test process; tests that need a separate process (SIGTERM,
kill -9) start ``python -m exposure_engine serve`` instead.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from exposure_engine.daemon.client import Client, DaemonUnavailable
from exposure_engine.daemon.server import Server, ServerConfig
from exposure_engine.daemon.styles import Styles

#: A small network (the shipped arch is 32-64-128-256): same code paths, a fraction of the CPU.
SMALL_ARCH = {"widths": (8, 16, 32, 64), "head_hidden": 32}


def small_policy(seed: int = 0):
    from exposure_engine.agent.policy import Policy

    return Policy.random(seed=seed, **SMALL_ARCH)


@contextlib.contextmanager
def running_server(config: ServerConfig | None = None, policies: dict | None = None):
    """A started daemon serving ``policies`` (default: style "default" = small untrained policy) on a free
    loopback port; yields the Server (``.endpoint`` is its URL). Stops and joins it afterwards."""
    config = config or ServerConfig()
    if config.bind == ServerConfig().bind:
        config.bind = "tcp://127.0.0.1:*"
    server = Server(config, Styles((), "cpu", policies if policies is not None else {"default": small_policy()}))
    server.start()
    thread = server.run_in_thread()
    try:
        yield server
    finally:
        server.request_stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the daemon did not stop"


def raw_exchange(url: str, frames: list[bytes], timeout: float = 10.0) -> list[bytes]:
    """Send ``frames`` as one message on a fresh REQ socket; return the reply frames (bytes)."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(url)
    try:
        s.send_multipart(frames)
        if not s.poll(int(timeout * 1000)):
            raise TimeoutError(f"no reply from {url}")
        return s.recv_multipart()
    finally:
        s.close(0)


def raw_header(url: str, frames: list[bytes], timeout: float = 10.0) -> dict:
    return json.loads(raw_exchange(url, frames, timeout)[0])


def header(kind: str, **fields) -> bytes:
    return json.dumps({"protocol": 1, "kind": kind, **fields}).encode()


def make_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """An sRGB-encoded uint8 photo-like image: smooth gradients plus noise, every channel different."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, (x + y) / (w + h)], axis=2) * 200 + 20
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def sequences_close(a, b, tol: float = 1e-4) -> bool:
    """Same filters in the same order with parameters equal to ``tol`` (batched and single forward passes
    differ in the last float bits)."""
    sa, sb = a.to_dict()["steps"], b.to_dict()["steps"]
    if [s["filter"] for s in sa] != [s["filter"] for s in sb]:
        return False
    return all(np.allclose(_flat(x["params"]), _flat(y["params"]), atol=tol) for x, y in zip(sa, sb))


def _flat(params: dict) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(v, np.float64)) for _, v in sorted(params.items())])


# --- daemons in their own process ------------------------------------------------------------------------------

def spawn_daemon(url: str, *extra: str, log: Path | None = None) -> subprocess.Popen:
    """``python -m exposure_engine serve --bind URL --untrained ...`` in a new process."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "exposure_engine", "serve", "--bind", url, "--untrained", *extra],
                            stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)


def wait_for_daemon(url: str, proc: subprocess.Popen | None = None, wait: float = 120.0) -> dict:
    """Ping until the daemon answers (starting torch takes seconds on a loaded machine); returns the pong."""
    deadline = time.monotonic() + wait
    client = Client(url, timeout=0.5, retries=0)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before answering")
        try:
            return client.ping()
        except DaemonUnavailable:
            continue
    raise TimeoutError(f"no daemon answered at {url} within {wait} s")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
