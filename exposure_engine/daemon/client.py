"""Client of the inference daemon, and :func:`ensure_daemon` to start one when none answers.

::

    from exposure_engine.client import Client
    with Client("tcp://127.0.0.1:5557", timeout=10, retries=2) as c:
        c.ping()
        [pred] = c.predict(photo_uint8)              # sRGB-encoded uint8/uint16, or linear float32
        pred.sequence.save("edit.json")
        display = c.render(linear_float32, pred.sequence)
        files = c.export(pred.sequence, "xmp")       # {file name: bytes}, main file first

A request that gets no reply within ``timeout`` seconds is sent again on a fresh socket ("lazy pirate": a REQ
socket that timed out cannot be reused), up to ``retries`` more times; then :class:`DaemonUnavailable`.
Every request kind is idempotent, so a retry is always safe. An error reply raises :class:`DaemonError` with
the daemon's code and message. A Client is not thread-safe: use one per thread.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zmq

from . import auth
from . import protocol as P
from .protocol import ProtocolError

ZERO_COPY_ABOVE = 4 << 20  # bytes per request; smaller ones are copied into zmq (see Client.request)


class DaemonUnavailable(ConnectionError):
    """No daemon answered at ``url`` (none running, wrong URL, refused authentication, or too slow)."""

    def __init__(self, url: str, message: str):
        super().__init__(message)
        self.url = url


class DaemonError(RuntimeError):
    """The daemon answered with an error; ``code`` is one of :class:`~.protocol.Code`."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class RemotePrediction:
    """One predicted edit, as :class:`~exposure_engine.agent.policy.Prediction` minus the proxies.

    sequence: edit sequence v1 (steps carry ``probabilities`` and ``label`` meta; the top level names the model).
    probabilities: ``(n_steps, 8)`` float32, filter order of ``exposure_engine.filters.FILTERS``.
    """

    sequence: Any  # EditSequence
    probabilities: np.ndarray
    seed: int | None  # None: the mean edit (no dropout)
    style: str
    model: dict = field(default_factory=dict)


def wire_image(image: np.ndarray, encoding: str | None = None) -> tuple[np.ndarray, str]:
    """Check an image for the wire and pick its encoding: uint8/uint16 default to ``srgb``, float to ``linear``.
    Float64 becomes float32. Returns ``(array, encoding)``; raises ValueError/TypeError naming the problem."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got {getattr(image, 'shape', type(image).__name__)}")
    if image.dtype in (np.uint8, np.uint16):
        enc = encoding or "srgb"
    elif image.dtype.kind == "f":
        enc = encoding or "linear"
        image = image.astype(np.float32, copy=False)
    else:
        raise TypeError(f"pixels must be uint8, uint16 or float32, not {image.dtype}")
    if enc not in P.ENCODINGS:
        raise ValueError(f"encoding must be 'srgb' or 'linear', not {enc!r}")
    return image, enc


def predict_proxy(image: np.ndarray, encoding: str | None = None) -> tuple[np.ndarray, str]:
    """What :meth:`Client.predict` sends: the policy's own ``(64, 64, 3)`` float32 linear state, computed here
    exactly as the daemon computes it from a :data:`~.protocol.PROXY_SIDE` proxy (images larger than that are
    first area-averaged to a ``(256, 256)`` proxy of the whole frame, aspect not kept, then to 64x64; smaller
    ones go straight to 64x64), so the reply is the same as for the 256 px proxy, for 1/16 of the bytes and none
    of the daemon's reduction work (docs/protocol.md). Images of at most 64 px go as they are; one with
    non-finite pixels goes unreduced (at most 256 px), for the daemon's ``bad_image`` error."""
    from ..imageio.proxy import STATE_SIZE, make_proxy, resize_proxy

    image, enc = wire_image(image, encoding)
    if max(image.shape[:2]) <= STATE_SIZE:
        return image, enc
    linear = P.to_linear(image, enc, copy=False, check_finite=False)
    if max(linear.shape[:2]) > P.PROXY_SIDE:
        linear = make_proxy(linear, P.PROXY_SIDE)
    try:
        return resize_proxy(linear, STATE_SIZE), "linear"
    except ValueError:
        return linear, "linear"


def sequence_from_reply(doc: dict):
    """An :class:`EditSequence` from a predict reply, checked structurally (known filters, parameters that
    parse) rather than with the JSON Schema: the daemon built it with the same code, and full schema validation
    cost 1-13 ms per reply on a busy 2-core machine, as much as the prediction itself. Raises ValueError."""
    from .. import filters as F
    from ..sequence import FORMAT, EditSequence, Step

    if doc.get("format") != FORMAT or not isinstance(doc.get("steps"), list):
        raise ValueError("not an edit sequence")
    steps = []
    for i, st in enumerate(doc["steps"]):
        f = F.BY_NAME.get(st.get("filter")) if isinstance(st, dict) else None
        if f is None or not isinstance(st.get("params"), dict):
            raise ValueError(f"steps[{i}] is not a known filter with params")
        if len(f.from_json(st["params"])) != f.n_packed:
            raise ValueError(f"steps[{i}].params do not fit {f.name}")
        steps.append(Step(f.name, dict(st["params"]), {k: v for k, v in st.items() if k not in ("filter", "params")}))
    return EditSequence(steps, {k: v for k, v in doc.items() if k not in ("format", "version", "steps")})


class Client:
    """A connection to the daemon at ``url``.

    timeout: seconds to wait for each reply (``render`` and ``export`` take ``timeout=`` per call too).
    retries: how many times a request that timed out is sent again on a fresh socket.
    keys: a key folder (``serve --gen-keys DIR``) or :class:`~.auth.ClientKeys` for a CURVE daemon.
    """

    def __init__(self, url: str = P.DEFAULT_URL, timeout: float = 10.0, retries: int = 2, *,
                 keys: str | os.PathLike | auth.ClientKeys | None = None, context: zmq.Context | None = None):
        self.url = url
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.keys = auth.client_keys(keys) if isinstance(keys, (str, os.PathLike)) else keys
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._ids = itertools.count(1)

    # --- plumbing -----------------------------------------------------------------------------------------------
    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            s = self._ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)  # a request nobody took must not keep the process alive at exit
            if self.keys is not None:
                auth.make_curve_client(s, self.keys)
            s.connect(self.url)
            self._sock = s
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def request(self, kind: str, fields: dict | None = None, payloads: Sequence[Any] = (), *,
                timeout: float | None = None) -> tuple[dict, list[zmq.Frame]]:
        """Send one request, wait for its reply (with retries); returns ``(header, payload frames)``.
        Raises :class:`DaemonUnavailable`, :class:`DaemonError` or :class:`ProtocolError` (malformed reply)."""
        rid = next(self._ids)
        frames = [P.request(kind, id=rid, **(fields or {})), *payloads]
        # Small messages (a predict's 768 KB proxy) are copied into zmq: pyzmq's zero-copy send hands each buffer
        # to a garbage-collector thread that needs the GIL, which costs more than the copy. Big render frames
        # travel zero-copy.
        copy = sum(memoryview(f).nbytes for f in frames) <= ZERO_COPY_ABOVE
        wait_ms = int(1000 * (self.timeout if timeout is None else timeout))
        for _attempt in range(self.retries + 1):
            sock = self._socket()
            # A REQ socket with no completed connection (no daemon yet, or a CURVE handshake the daemon refused)
            # blocks in send: bound it like the reply.
            sock.setsockopt(zmq.SNDTIMEO, wait_ms)
            try:
                sock.send_multipart(frames, copy=copy)
            except zmq.Again:
                self.close()
                continue
            except zmq.ZMQError as e:
                self.close()
                raise DaemonUnavailable(self.url, f"cannot send to {self.url}: {e}") from None
            if sock.poll(wait_ms, zmq.POLLIN):
                reply = sock.recv_multipart(copy=False)
                return self._check_reply(kind, rid, reply)
            self.close()  # lazy pirate: a REQ socket that got no reply is stuck; start over with a new one
        tries = self.retries + 1
        raise DaemonUnavailable(self.url, f"no reply from the exposure-engine daemon at {self.url} "
                                          f"({tries} tr{'y' if tries == 1 else 'ies'} of {wait_ms / 1000:g} s). "
                                          "Start it with `exposure-engine serve`.")

    @staticmethod
    def _check_reply(kind: str, rid: int, reply: list) -> tuple[dict, list]:
        head = P.loads_header(reply[0].buffer, 1 << 24, exact_integers=False)
        if head.get("ok") is not True:
            err = head.get("error") if isinstance(head.get("error"), dict) else {}
            raise DaemonError(str(err.get("code", "unknown")), str(err.get("message", head)))
        if head.get("id") != rid:
            raise ProtocolError("bad_reply", f"reply id {head.get('id')!r} does not match request {rid}")
        return head, reply[1:]

    # --- requests -----------------------------------------------------------------------------------------------
    def ping(self, *, timeout: float | None = None) -> dict:
        """``{"ok": true, "version": ..., "pid": ...}``."""
        return self.request("ping", timeout=timeout)[0]

    def info(self) -> dict:
        """Engine version, protocol, device, styles (name, content_hash, loaded), limits, stats."""
        return self.request("info")[0]

    def predict(self, image: np.ndarray, variants: int = 1, seed: int | None = None, style: str | None = None, *,
                dropout: bool | None = None, encoding: str | None = None,
                timeout: float | None = None) -> list[RemotePrediction]:
        """Edit sequences for ``image`` ``(H, W, 3)``: uint8/uint16 are taken as sRGB-encoded unless
        ``encoding="linear"``; float32 as linear. Only a small proxy (:func:`predict_proxy`) is sent.
        ``seed`` reproduces a dropout sample (variant i uses seed + i); ``dropout`` as in ``Policy.predict``
        (default: sampled for variants or a seed, else the model's mean edit); ``style`` picks a model folder."""
        proxy, enc = predict_proxy(image, encoding)
        fields: dict = {"image": P.describe_array(proxy, enc), "variants": int(variants)}
        if seed is not None:
            fields["seed"] = int(seed)
        if dropout is not None:
            fields["dropout"] = bool(dropout)
        if style is not None:
            fields["style"] = style
        head, _ = self.request("predict", fields, [P.array_frame(proxy, fields["image"]["dtype"])], timeout=timeout)
        try:
            return [RemotePrediction(sequence_from_reply(p["sequence"]), np.asarray(p["probabilities"], np.float32),
                                     None if p["seed"] is None else int(p["seed"]), str(head["style"]),
                                     dict(head.get("model", {})))
                    for p in head["predictions"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError("bad_reply", f"malformed predict reply: {e}") from None

    def render(self, image: np.ndarray, sequence: Any, *, encoding: str | None = None, clip: bool = True,
               timeout: float | None = None) -> np.ndarray:
        """Render ``sequence`` on the full-resolution ``image`` in the daemon; returns ``(H, W, 3)`` float32
        display-encoded sRGB. ``timeout`` defaults to 60 s or the client's timeout if longer."""
        from ..sequence import as_sequence

        image, enc = wire_image(image, encoding)
        desc = P.describe_array(image, enc)
        fields = {"image": desc, "sequence": as_sequence(sequence).to_dict(), "clip": bool(clip)}
        head, frames = self.request("render", fields, [P.array_frame(image, desc["dtype"])],
                                    timeout=timeout if timeout is not None else max(self.timeout, 60.0))
        try:
            dtype, shape, _ = P.parse_descriptor(head["image"], max_pixels=1 << 62)
            # copy: the frame's memory belongs to zmq; the caller gets an ordinary writable array
            return P.frame_array(frames[0].buffer, dtype, shape).copy()
        except (KeyError, IndexError) as e:
            raise ProtocolError("bad_reply", f"malformed render reply: {e}") from None

    def export(self, sequence: Any, fmt: str, mode: str = "native", *, name: str | None = None,
               input_kind: str = "raster", timeout: float | None = None) -> dict[str, bytes]:
        """``{file name: content}`` of ``sequence`` as ``fmt`` (xmp, dtstyle, cube); the main file comes first.
        ``input_kind``: ``raw`` or ``raster``, the kind of image a darktable export will be applied to."""
        from ..sequence import as_sequence

        fields = {"sequence": as_sequence(sequence).to_dict(), "format": fmt, "mode": mode, "input_kind": input_kind}
        if name:
            fields["name"] = name
        head, frames = self.request("export", fields, timeout=timeout)
        names = [f.get("name") for f in head.get("files", [])]
        if len(names) != len(frames) or not all(isinstance(n, str) for n in names):
            raise ProtocolError("bad_reply", f"export reply lists {len(names)} files but carries {len(frames)}")
        return {n: f.bytes for n, f in zip(names, frames)}


# --------------------------------------------------------------------------------------------------------------
# Starting a daemon on demand


def serve_command(url: str, *, idle_exit: float | None = 600.0, extra: Sequence[str] = ()) -> list[str]:
    """The command line that starts a daemon on ``url`` with this Python."""
    cmd = [sys.executable, "-m", "exposure_engine", "serve", "--bind", url]
    if idle_exit:
        cmd += ["--idle-exit", f"{idle_exit:g}"]
    return cmd + list(extra)


# A daemon started on demand serves an editor: one image per request, where the helper process (which predicts
# half of a batch of 2+ rows) gains nothing. Without it the daemon holds 379 instead of 658 MB and its first predict
# does not compete with the helper's start-up (docs/protocol.md). ``extra_args`` given later win (argparse).
ON_DEMAND_ARGS = ("--predict-helper", "off")


def ensure_daemon(url: str = P.DEFAULT_URL, *, wait: float = 60.0, idle_exit: float | None = 600.0,
                  extra_args: Sequence[str] = (), log_path: str | os.PathLike | None = None,
                  keys: str | os.PathLike | None = None) -> Client:
    """A :class:`Client` for a daemon answering at ``url``: if none answers a ping, start one (detached, in its
    own session, so it outlives the caller; it exits after ``idle_exit`` idle seconds) and wait up to ``wait``
    seconds for it; it runs without the helper process (``ON_DEMAND_ARGS``). Only loopback/ipc URLs are started.
    Raises :class:`DaemonUnavailable` with the daemon's log tail when it fails to come up (e.g. no model
    installed, port taken by something else)."""
    client = Client(url, timeout=0.5, retries=0, keys=keys)
    try:
        client.ping()
        client.timeout, client.retries = 10.0, 2
        return client
    except DaemonUnavailable:
        pass
    if not auth.is_loopback(url):
        raise DaemonUnavailable(url, f"no daemon answers at {url}, and only a local daemon can be started here")
    if log_path is None:
        log_path = Path(tempfile.gettempdir()) / f"exposure-engine-daemon-{os.getuid()}.log"
    args = [*ON_DEMAND_ARGS, *extra_args] + (["--keys", str(keys)] if keys is not None else [])
    log_start = Path(log_path).stat().st_size if Path(log_path).exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(serve_command(url, idle_exit=idle_exit, extra=args), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DaemonUnavailable(url, f"the daemon exited at start (code {proc.returncode}): "
                                         f"{_tail(log_path, log_start)}")
        try:
            client.ping(timeout=0.5)
            client.timeout, client.retries = 10.0, 2
            return client
        except DaemonUnavailable:
            continue
    raise DaemonUnavailable(url, f"started a daemon (pid {proc.pid}) but it did not answer within {wait:g} s; "
                                 f"log: {log_path}")


def _tail(path: str | os.PathLike, start: int, n: int = 800) -> str:
    """The last ``n`` characters this start wrote to the (shared, appended) log, on one line."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return text[-n:].strip().replace("\n", " | ") or "(nothing logged)"
