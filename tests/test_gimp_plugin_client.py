"""The GIMP plug-in's own daemon client (plugins/gimp/exposure-auto-retouch/daemon_client.py).

It runs inside GIMP's Python, where exposure_engine is not importable, so it speaks protocol 1 itself; here it
talks to the real daemon (real ZeroMQ sockets, tests/daemon_support.py) and must agree with the engine.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from exposure_engine.exporters import gimp as gimp_plan
from exposure_engine.renderer import render

from daemon_support import running_server

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugins" / "gimp" / "exposure-auto-retouch"
SEQ = {"format": "exposure-edit-sequence", "version": 1,
       "steps": [{"filter": "exposure", "params": {"ev": 0.5}}, {"filter": "contrast", "params": {"amount": 0.6}}]}


@pytest.fixture(scope="module")
def dc():
    spec = importlib.util.spec_from_file_location("daemon_client", PLUGIN_DIR / "daemon_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server():
    with running_server() as s:
        yield s


def _free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_defaults_match_the_engine_protocol(dc):
    from exposure_engine.daemon import protocol as P

    assert (dc.PROTOCOL, dc.DEFAULT_URL, dc.PROXY_SIDE) == (P.PROTOCOL, P.DEFAULT_URL, P.PROXY_SIDE)


def test_predict_and_render_against_the_real_daemon(dc, server):
    client = dc.Client(server.endpoint)
    try:
        assert client.ping()["ok"] is True
        proxy = np.random.default_rng(0).random((48, 64, 3)).astype(np.float32)
        [pred] = client.predict(proxy, seed=5)
        assert pred["sequence"]["format"] == "exposure-edit-sequence" and pred["seed"] == 5
        out = client.render(proxy, SEQ, clip=False)
        np.testing.assert_allclose(out, render(proxy, SEQ, clip=False), atol=1e-6)
    finally:
        client.close()


def test_gimp_plan_comes_from_the_engine(dc, server):
    client = dc.Client(server.endpoint)
    try:
        plan = client.gimp_plan(SEQ, "native")
    finally:
        client.close()
    assert plan == gimp_plan.plan(SEQ, "native")


def test_error_replies_carry_the_daemons_reason(dc, server):
    client = dc.Client(server.endpoint)
    bad = {**SEQ, "steps": [{"filter": "exposure", "params": {"ev": "bright"}}]}
    try:
        with pytest.raises(dc.EngineError, match=r"bad_sequence: .*steps\[0\]\.params\.ev"):
            client.render(np.zeros((2, 2, 3), np.float32), bad)
    finally:
        client.close()


def test_no_daemon_and_no_engine_is_a_message_not_a_hang(dc, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no exposure-engine to start
    monkeypatch.delenv("EXPOSURE_ENGINE", raising=False)
    url = _free_url()
    with pytest.raises(dc.Unavailable) as err:
        dc.connect(url, {"serve": ["/nonexistent/python", "-m", "exposure_engine.cli", "serve"]})
    assert f"no exposure-engine daemon answers at {url}" in str(err.value)
    assert f"exposure-engine serve --bind {url}" in str(err.value)


def test_a_remote_daemon_is_never_started(dc):
    with pytest.raises(dc.Unavailable, match="only a daemon on this machine can be started"):
        dc.connect("tcp://192.0.2.1:5557", {"serve": [sys.executable]})  # TEST-NET-1: nothing answers


@pytest.mark.slow
def test_starts_the_installed_engine_when_none_answers(dc, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the daemon's log goes there
    url = _free_url()
    client = dc.connect(url, {"serve": [sys.executable, "-m", "exposure_engine.cli", "serve"]}, wait=90)
    pid = client.ping()["pid"]
    try:
        assert pid != os.getpid()
        assert client.render(np.full((1, 1, 3), 0.25, np.float32), SEQ).shape == (1, 1, 3)
    finally:
        client.close()
        os.kill(pid, signal.SIGTERM)  # it would otherwise idle for 10 minutes
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


def test_saved_sequence_errors_name_the_file(dc, tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(dc.EngineError, match=f"cannot read the edit sequence {missing}"):
        dc.load_sequence(str(missing))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(dc.EngineError, match=f"{broken} is not valid JSON"):
        dc.load_sequence(str(broken))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"steps": []}))
    with pytest.raises(dc.EngineError, match="is not an exposure edit sequence"):
        dc.load_sequence(str(other))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SEQ))
    assert dc.load_sequence(str(good)) == SEQ


def test_installer_config_is_what_the_plugin_reads(dc, tmp_path):
    from exposure_engine.installers import gimp as installer

    main = installer.install(tmp_path, server="tcp://127.0.0.1:6001")
    config = dc.load_config(str(main.parent))
    assert config["server"] == "tcp://127.0.0.1:6001"
    assert dc.serve_command("tcp://127.0.0.1:6001", config) == [
        sys.executable, "-m", "exposure_engine.cli", "serve", "--bind", "tcp://127.0.0.1:6001", "--idle-exit", "600",
        "--predict-helper", "off"]


def test_plugin_constants_match_the_engine():
    """The plug-in cannot import the engine; the names it shares with the plan must not drift."""
    import ast

    tree = ast.parse((PLUGIN_DIR / "exposure-auto-retouch.py").read_text())
    consts = {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Name) and t.id in ("PROC", "STEP_PARASITE", "MODES")}
    assert consts == {"PROC": "python-fu-exposure-auto-retouch", "STEP_PARASITE": gimp_plan.PARASITE,
                      "MODES": gimp_plan.MODES}
    # every operation kind a plan can hold is one the plug-in's _apply_op executes
    from exposure_engine import filters as F

    handled = {n.comparators[0].value for n in ast.walk(tree) if isinstance(n, ast.Compare)
               and isinstance(n.left, ast.Name) and n.left.id == "kind" and isinstance(n.comparators[0], ast.Constant)}
    seq = {"format": "exposure-edit-sequence", "version": 1,
           "steps": [{"filter": f.name, "params": f.to_json(list(f.identity))} for f in F.FILTERS]}
    used = {op["op"] for mode in gimp_plan.MODES for layer in gimp_plan.plan(seq, mode)["layers"]
            for op in layer["ops"]}
    assert used <= handled == {"gegl", "curves", "engine-render"}
