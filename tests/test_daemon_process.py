"""The daemon as users run it: ``python -m exposure_engine serve`` in its own process, signals, kill -9, restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from exposure_engine.daemon import protocol as P
from exposure_engine.daemon.client import Client, ensure_daemon

from daemon_support import header, make_image, sequences_close, spawn_daemon, stop_process, wait_for_daemon

pytestmark = pytest.mark.slow  # each test starts Python + torch in a new process (seconds on a loaded machine)

SEQ = {"format": "exposure-edit-sequence", "version": 1, "steps": [{"filter": "exposure", "params": {"ev": 1.0}}]}


def test_sigterm_drains_the_render_in_progress_then_exits_cleanly(tmp_path):
    url = f"ipc://{tmp_path}/d.sock"
    proc = spawn_daemon(url, log=tmp_path / "log")
    try:
        wait_for_daemon(url, proc)
        import zmq

        img = np.ones((2000, 3000, 3), np.float32)
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(url)
        s.send_multipart([b"", header("render", image=P.describe_array(img, "linear"), sequence=SEQ), img])
        # SIGTERM only once the daemon holds the render: the ping behind it on the same connection is answered
        # first (by the I/O thread), which proves the render was read and queued
        s.send_multipart([b"", header("ping")])
        assert s.poll(60000)
        assert b'"kind":"ping"' in s.recv_multipart()[1]
        proc.send_signal(signal.SIGTERM)
        assert s.poll(60000), "the render in progress was not answered"
        frames = s.recv_multipart()
        s.close(0)
        assert b'"ok":true' in frames[1]
        out = np.frombuffer(frames[2], np.float32).reshape(img.shape)
        assert np.allclose(out, 1.0)  # ev +1 on 1.0 clips to 1.0
        assert proc.wait(60) == 0
        assert not os.path.exists(f"{tmp_path}/d.sock")  # the socket file is removed on exit
    finally:
        stop_process(proc)


def test_kill_9_and_restart_the_client_recovers_by_retrying(tmp_path):
    url = f"ipc://{tmp_path}/d.sock"
    proc = spawn_daemon(url)
    restarted: list[subprocess.Popen] = []
    try:
        wait_for_daemon(url, proc)
        client = Client(url, timeout=2.0, retries=60)
        first = client.predict(make_image(), seed=3)[0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # a new daemon comes up while the client is already retrying
        starter = threading.Timer(1.0, lambda: restarted.append(spawn_daemon(url)))
        starter.start()
        again = client.predict(make_image(), seed=3)[0]
        starter.join()
        assert sequences_close(again.sequence, first.sequence)  # same untrained model, same seed
        assert client.ping()["pid"] == restarted[0].pid
        client.close()
    finally:
        for p in [proc, *restarted]:
            stop_process(p)


def test_serve_reports_an_endpoint_in_use_in_one_line(tmp_path):
    import zmq

    blocker = zmq.Context.instance().socket(zmq.REP)
    port = blocker.bind_to_random_port("tcp://127.0.0.1")
    try:
        r = subprocess.run([sys.executable, "-m", "exposure_engine", "serve", "--bind", f"tcp://127.0.0.1:{port}",
                            "--untrained"], capture_output=True, text=True, timeout=300)
    finally:
        blocker.close(0)
    assert r.returncode == 2
    assert f"tcp://127.0.0.1:{port} is already in use" in r.stderr


def test_serve_refuses_a_public_bind_without_allow_remote_and_keys():
    r = subprocess.run([sys.executable, "-m", "exposure_engine", "serve", "--bind", "tcp://0.0.0.0:5999"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--allow-remote" in r.stderr


def test_ensure_daemon_starts_one_when_none_answers_and_reuses_it(tmp_path):
    url = f"ipc://{tmp_path}/auto.sock"
    client = ensure_daemon(url, wait=180, idle_exit=120, extra_args=["--untrained"], log_path=tmp_path / "log")
    pid = client.ping()["pid"]
    try:
        assert pid != os.getpid()
        info = client.info()
        assert "untrained" in {s["name"] for s in info["styles"]}
        assert info["batching"]["helper"] is None  # an on-demand daemon serves one image at a time: no helper
        again = ensure_daemon(url, wait=10)  # answers at once: nothing new is started
        assert again.ping()["pid"] == pid
        again.close()
    finally:
        client.close()
        os.kill(pid, signal.SIGTERM)


def test_ensure_daemon_reports_a_daemon_that_cannot_start(tmp_path):
    from exposure_engine.daemon.client import DaemonUnavailable

    url = f"ipc://{tmp_path}/bad.sock"
    with pytest.raises(DaemonUnavailable, match="exited at start"):
        ensure_daemon(url, wait=180, extra_args=["--device", "nonsense"], log_path=tmp_path / "log")
