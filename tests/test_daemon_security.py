"""Loopback by default; anything else only with --allow-remote AND CURVE keys, which really refuse strangers."""
from __future__ import annotations

import stat

import pytest

from exposure_engine.daemon import auth
from exposure_engine.daemon.client import Client, DaemonUnavailable
from exposure_engine.daemon.server import ServerConfig

from daemon_support import make_image, running_server


@pytest.mark.parametrize("url,local", [
    ("tcp://127.0.0.1:5557", True), ("tcp://localhost:5557", True), ("tcp://127.3.4.5:1", True),
    ("tcp://[::1]:5557", True), ("ipc:///tmp/x.sock", True), ("inproc://x", True),
    ("tcp://0.0.0.0:5557", False), ("tcp://*:5557", False), ("tcp://eth0:5557", False),
    ("tcp://192.168.1.10:5557", False), ("tcp://example.org:5557", False), ("udp://127.0.0.1:1", False),
])
def test_is_loopback(url, local):
    assert auth.is_loopback(url) is local


def test_gen_keys_writes_secret_files_private_and_refuses_to_overwrite(tmp_path):
    files = auth.generate_keys(tmp_path / "keys")
    for k in ("server_secret", "client_secret"):
        assert stat.S_IMODE(files[k].stat().st_mode) == 0o600
    assert (files["authorized"] / "client.key").is_file()
    with pytest.raises(auth.KeyFileError, match="already exist"):
        auth.generate_keys(tmp_path / "keys")


def test_missing_keys_are_named(tmp_path):
    with pytest.raises(auth.KeyFileError, match="server.key_secret"):
        auth.server_keys(tmp_path)


@pytest.fixture(scope="module")
def curve_daemon(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys")
    auth.generate_keys(keys)
    # 0.0.0.0 is what a remote setup binds; the test connects through its loopback side.
    with running_server(ServerConfig(bind="tcp://0.0.0.0:*", allow_remote=True, keys_dir=keys)) as server:
        port = server.endpoint.rsplit(":", 1)[1]
        yield f"tcp://127.0.0.1:{port}", keys


def test_an_authenticated_client_is_served(curve_daemon):
    url, keys = curve_daemon
    with Client(url, timeout=20, retries=0, keys=keys) as c:
        assert c.ping()["ok"]
        assert len(c.predict(make_image(), seed=1)[0].sequence.steps) == 5


def test_a_client_without_keys_gets_no_reply(curve_daemon):
    url, _ = curve_daemon
    with Client(url, timeout=1.0, retries=1) as c:
        with pytest.raises(DaemonUnavailable, match="no reply"):
            c.ping()


def test_a_client_with_keys_the_daemon_did_not_authorize_gets_no_reply(curve_daemon, tmp_path):
    url, keys = curve_daemon
    stranger = tmp_path / "stranger"
    auth.generate_keys(stranger)
    (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())  # knows the server, not authorized
    with Client(url, timeout=1.0, retries=0, keys=stranger) as c:
        with pytest.raises(DaemonUnavailable):
            c.ping()
