"""A minimal client of the exposure-engine daemon (protocol 1, docs/protocol.md) for the GIMP plug-in.

GIMP runs plug-ins under its own Python (Debian: /usr/bin/python3 with python3-zmq and python3-numpy), where
``exposure_engine`` is not importable, so this file speaks the wire protocol itself: one ZeroMQ REQ socket,
multipart ``[JSON header, binary payload...]``. No GIMP import here: tests drive it on the host too.

Every wait is bounded (RCVTIMEO through poll, LINGER 0): a missing daemon is an error message, never a hang.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import numpy as np
import zmq

PROTOCOL = 1
DEFAULT_URL = "tcp://127.0.0.1:5557"  # exposure_engine.daemon.protocol.DEFAULT_URL
PROXY_SIDE = 256  # protocol.PROXY_SIDE: longest side of the image sent with predict
CONFIG_FILE = "exposure-auto-retouch.json"  # written next to the plug-in by `exposure-engine plugins install gimp`


class EngineError(Exception):
    """Anything the user must be told: no daemon, an error reply, a bad sequence file. ``str()`` is the message."""


class Unavailable(EngineError):
    """No daemon answered (not running, wrong address, or too slow)."""


def load_config(folder: str) -> dict:
    """The installer's settings (``{"serve": [argv...], "server": url}``), or {} when absent/unreadable."""
    try:
        with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as fh:
            doc = json.load(fh)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


class Client:
    """Requests to the daemon at ``url``; ``timeout`` seconds per reply unless a call says otherwise."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 30.0):
        self.url = url or DEFAULT_URL
        self.timeout = timeout
        self._ctx = zmq.Context.instance()
        self._sock = None
        self._next_id = 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def request(self, kind: str, fields: dict | None = None, payloads: tuple = (), timeout: float | None = None):
        """Send one request; returns ``(header dict, [payload bytes...])``. Raises :class:`Unavailable` when
        no reply comes within the timeout and :class:`EngineError` for an error reply."""
        rid = self._next_id
        self._next_id += 1
        head = {"protocol": PROTOCOL, "kind": kind, "id": rid, **(fields or {})}
        if self._sock is None:
            self._sock = self._ctx.socket(zmq.REQ)
            self._sock.setsockopt(zmq.LINGER, 0)  # an unanswered request must not keep GIMP's plug-in alive
            try:
                self._sock.connect(self.url)
            except zmq.ZMQError as e:
                self.close()
                raise EngineError(f"bad daemon address {self.url!r}: {e}") from None
        wait = self.timeout if timeout is None else timeout
        try:
            self._sock.setsockopt(zmq.SNDTIMEO, int(wait * 1000))  # send blocks while no connection is complete
            self._sock.send_multipart([json.dumps(head, allow_nan=False).encode(), *payloads], copy=False)
            ready = self._sock.poll(int(wait * 1000), zmq.POLLIN)
        except zmq.ZMQError as e:
            self.close()
            raise Unavailable(f"cannot talk to the exposure-engine daemon at {self.url}: {e}") from None
        if not ready:
            self.close()  # a REQ socket that got no reply cannot send again: start over next time
            raise Unavailable(f"no reply from the exposure-engine daemon at {self.url} within {wait:g} s")
        frames = self._sock.recv_multipart()
        try:
            reply = json.loads(frames[0].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise EngineError(f"the daemon at {self.url} sent a malformed reply ({e})") from None
        if reply.get("ok") is not True:
            err = reply.get("error") if isinstance(reply.get("error"), dict) else {}
            raise EngineError(f"the exposure-engine daemon refused the {kind} request: "
                              f"{err.get('code', '?')}: {err.get('message', reply)}")
        return reply, frames[1:]

    # --- requests ---------------------------------------------------------------------------------------------
    def ping(self, timeout: float = 1.0) -> dict:
        return self.request("ping", timeout=timeout)[0]

    def predict(self, linear: np.ndarray, variants: int = 1, seed: int | None = None, style: str | None = None,
                timeout: float = 120.0) -> list[dict]:
        """Predictions for a linear float32 ``(H, W, 3)`` proxy: ``[{"sequence": {...}, "seed": int or None}, ...]``
        (None: the model's mean edit, what one prediction without a seed is).
        The first predict of a style loads its model, hence the long default timeout."""
        a = np.ascontiguousarray(linear, dtype="<f4")
        fields: dict = {"image": {"dtype": "float32", "shape": list(a.shape), "encoding": "linear"},
                        "variants": int(variants)}
        if seed is not None and seed >= 0:
            fields["seed"] = int(seed)
        if style:
            fields["style"] = style
        head, _ = self.request("predict", fields, (a,), timeout=timeout)
        preds = head.get("predictions")
        if not isinstance(preds, list) or not preds:
            raise EngineError("the daemon's predict reply has no predictions")
        return preds

    def render(self, linear: np.ndarray, sequence: dict, clip: bool = False, timeout: float = 300.0) -> np.ndarray:
        """``sequence`` applied by the engine to linear float32 ``(H, W, 3)`` pixels; same shape back."""
        a = np.ascontiguousarray(linear, dtype="<f4")
        fields = {"image": {"dtype": "float32", "shape": list(a.shape), "encoding": "linear"},
                  "sequence": sequence, "clip": bool(clip)}
        head, frames = self.request("render", fields, (a,), timeout=timeout)
        desc = head.get("image") or {}
        if desc.get("dtype") != "float32" or list(desc.get("shape", [])) != list(a.shape) or len(frames) != 1:
            raise EngineError(f"the daemon's render reply does not match the request ({desc})")
        return np.frombuffer(frames[0], dtype="<f4").reshape(a.shape)

    def gimp_plan(self, sequence: dict, mode: str = "native", timeout: float = 30.0) -> dict:
        """The engine's GIMP plan for ``sequence`` (``export`` with ``"format": "gimp"``)."""
        head, frames = self.request("export", {"sequence": sequence, "format": "gimp", "mode": mode},
                                    timeout=timeout)
        if not frames:
            raise EngineError("the daemon's export reply carries no plan")
        try:
            plan = json.loads(frames[0].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise EngineError(f"the daemon sent an unreadable GIMP plan ({e})") from None
        if plan.get("format") != "exposure-gimp-plan" or plan.get("version") != 1:
            raise EngineError(f"the daemon sent a GIMP plan of an unknown format "
                              f"({plan.get('format')!r} v{plan.get('version')!r}): update the plug-in")
        return plan


def serve_command(url: str, config: dict) -> list[str] | None:
    """The command that starts a daemon on ``url``: the installer's recorded one (``config["serve"]``), else
    ``exposure-engine`` on PATH (or ``$EXPOSURE_ENGINE``); None when neither exists. Like the engine's own
    ``ensure_daemon``: no helper process (one image per request gains nothing from it; 280 MB less)."""
    base = config.get("serve")
    if not (isinstance(base, list) and base and all(isinstance(a, str) for a in base)
            and os.path.exists(base[0])):
        exe = os.environ.get("EXPOSURE_ENGINE") or shutil.which("exposure-engine")
        if not exe:
            return None
        base = [exe, "serve"]
    return [*base, "--bind", url, "--idle-exit", "600", "--predict-helper", "off"]


def is_loopback(url: str) -> bool:
    return url.startswith("ipc://") or any(url.startswith(f"tcp://{h}:") for h in ("127.0.0.1", "localhost",
                                                                                       "[::1]"))


def connect(url: str, config: dict, wait: float = 120.0, log=None) -> Client:
    """A client for a daemon answering at ``url``, starting one when none does (loopback addresses only).

    Raises :class:`Unavailable` with a message saying what to do; waits at most ``wait`` seconds."""
    client = Client(url)
    try:
        client.ping(timeout=1.0)
        return client
    except Unavailable:
        pass
    cmd = serve_command(client.url, config) if is_loopback(client.url) else None
    if cmd is None:
        why = ("only a daemon on this machine can be started from GIMP" if not is_loopback(client.url) else
               "and `exposure-engine` was not found (install the engine, run `exposure-engine plugins install "
               "gimp`, or set EXPOSURE_ENGINE to its path)")
        raise Unavailable(f"no exposure-engine daemon answers at {client.url}, {why}. "
                          f"Start one with `exposure-engine serve --bind {client.url}`.")
    if log:
        log(f"starting the exposure-engine daemon: {' '.join(cmd)}")
    logfile = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"exposure-engine-gimp-daemon-{os.getuid()}.log")
    with open(logfile, "ab") as out:
        # Its own session: the daemon outlives this plug-in run (it exits after 10 idle minutes).
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                close_fds=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"the exposure-engine daemon exited at start (code {proc.returncode}); "
                              f"see {logfile}")
        try:
            client.ping(timeout=0.5)
            return client
        except Unavailable:
            continue
    raise Unavailable(f"started the exposure-engine daemon (pid {proc.pid}) but it did not answer at "
                      f"{client.url} within {wait:g} s; see {logfile}")


def load_sequence(path: str) -> dict:
    """A saved edit sequence (format v1) read from ``path``; the daemon validates it fully."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as e:
        raise EngineError(f"cannot read the edit sequence {path}: {e.strerror}") from None
    except ValueError as e:
        raise EngineError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != "exposure-edit-sequence" or not isinstance(
            doc.get("steps"), list):
        raise EngineError(f"{path} is not an exposure edit sequence (expected "
                          '{"format": "exposure-edit-sequence", "version": 1, "steps": [...]})')
    return doc
