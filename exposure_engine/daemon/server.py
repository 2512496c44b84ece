"""The inference daemon: one ROUTER socket, one I/O thread, separate worker pools per kind of work.

::

    clients (REQ / DEALER) ──tcp/ipc──> ROUTER (I/O thread: the only thread touching it)
                                          │ ping, info: answered at once, in the I/O thread
                                          │ predict ──> predict queue ──> 1 batching worker (torch)
                                          │ render  ──> render queue  ──> N render workers (numba, nogil)
                                          │ export  ──> export queue  ──> 1 export worker
                                          ◄── replies: each worker PUSHes over inproc to one PULL the
                                              I/O thread polls beside the ROUTER, then forwards them

* A slow render never delays ping, info or predict: they do not share a queue or a worker with it.
* Predicts that wait in the queue are run together: the worker takes everything queued (and, with a
  batching window, what arrives within it) and calls ``Policy.predict_batch`` once per style. Each row keeps
  its own seed, so a result does not depend on its neighbours in the batch.
* Every malformed request gets an error reply (codes in :class:`~.protocol.Code`); an exception in a worker
  becomes an ``internal`` error reply for that request only. A reply to a client that has gone is dropped
  by the ROUTER (no error, no memory kept).
* Queues are bounded: a full queue answers ``busy`` at once rather than growing without limit.
* :meth:`Server.request_stop` (SIGTERM) drains: queued and running requests finish and get their replies,
  new ones are answered ``shutting_down``, then the sockets close.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zmq

from .. import __version__
from ..devices import resolve_device
from . import auth
from . import protocol as P
from . import predict_helper
from .protocol import Code, Limits, ProtocolError
from .styles import Styles, model_roots

log = logging.getLogger("exposure_engine.daemon")

#: Payload frames each request kind takes.
PAYLOADS = {"ping": 0, "info": 0, "predict": 1, "render": 1, "export": 0}


class ServerError(RuntimeError):
    """The daemon cannot start (endpoint in use, unsafe bind, bad keys); the message says what to do."""


class EndpointInUse(ServerError):
    pass


def default_batch_window_ms(device: str) -> float:
    """How long the predict worker may wait for more requests to batch with the first one.

    On a GPU a batch of 8 costs about what one image costs, so waiting a few ms always pays. On a CPU the cost
    grows with the batch (less than linearly), so the default window there is *adaptive* (see
    :attr:`Server.adaptive_window`): the worker waits only while requests are arriving concurrently, and a lone
    client never waits."""
    return 3.0 if device.startswith("cuda") else 10.0


@dataclass
class ServerConfig:
    bind: str = P.DEFAULT_URL
    device: str = "auto"
    models_dir: Path | None = None          # searched before the usual model roots (styles.model_roots)
    allow_remote: bool = False
    keys_dir: Path | None = None            # CURVE keys (auth.generate_keys layout)
    idle_exit: float | None = None          # seconds without requests before exiting
    limits: Limits = field(default_factory=Limits)
    batch_window_ms: float | None = None    # None: default_batch_window_ms(device)
    max_batch: int = 32                     # rows per predict_batch call
    render_workers: int = 1                 # the renderer already uses every core
    # Threads taking predict batches. Two on the 2-core CPU (one torch thread each) were no better with 8 clients
    # (p50 41-42 ms vs 38-41 ms with one; docs/protocol.md): the batches halve and their Python parts share the GIL.
    predict_workers: int = 1
    # A helper process predicting half of each batch of 2+ rows (daemon/predict_helper.py). None: on a CPU with
    # 2+ cores available to this process. 8 clients on 2 cores: p50 27.8 / 33.0 / 27.4 ms with it, 30.7 / 32.6 /
    # 30.4 ms without, alternating (docs/protocol.md).
    predict_helper: bool | None = None
    predict_queue: int = 1024
    render_queue: int = 4                   # each queued render holds its pixels in memory
    export_queue: int = 32
    drain_timeout: float = 60.0
    torch_threads: int | None = None        # None: 1 on a CPU (see start()), torch's default on a GPU


@dataclass
class Job:
    kind: str
    envelope: list[bytes]                    # ROUTER routing frames (identity [, empty delimiter])
    rid: Any
    header: dict
    payload: list                            # zmq.Frame payloads
    received: float = field(default_factory=time.monotonic)
    parsed: dict = field(default_factory=dict)


class Server:
    """A daemon instance. ``start()`` binds and starts workers; ``serve_forever()`` runs the I/O loop in the
    calling thread until :meth:`request_stop` or the idle timeout; ``run_in_thread()`` does both for tests.

    styles: a prepared :class:`Styles` (tests pass ``Styles(policies={"default": Policy.random()})``);
        default: the model folders of ``config.models_dir`` on ``config.device``.
    """

    def __init__(self, config: ServerConfig | None = None, styles: Styles | None = None):
        self.config = config or ServerConfig()
        self.device = resolve_device(self.config.device) if styles is None else styles.device
        self.styles = styles or Styles(model_roots(self.config.models_dir), self.device)
        self.limits = self.config.limits
        self.batch_window = (self.config.batch_window_ms if self.config.batch_window_ms is not None
                             else default_batch_window_ms(self.device)) / 1000.0
        # Adaptive: wait only while fewer requests are batched than clients predicted in the last second, so a
        # lone client never waits. Measured with 8 clients on 2 busy cores (cpu-fast policy): a fixed 10 ms
        # window -> 7.6 rows/batch, p50 174 ms, 38 predicts/s; no window -> 3.2 rows/batch, p50 206 ms, 33/s.
        self.adaptive_window = self.config.batch_window_ms is None and not self.device.startswith("cuda")
        self.predict_workers = max(1, self.config.predict_workers)
        use_helper = self.config.predict_helper
        if use_helper is None:
            use_helper = _cores() >= 2
        use_helper = use_helper and predict_helper.supported() and not self.device.startswith("cuda")
        self._helper = predict_helper.PredictHelper() if use_helper else None
        self._predict_clients: dict[bytes, float] = {}  # client identity -> last predict time
        self._clients_lock = threading.Lock()
        self.endpoint: str | None = None
        self.ctx: zmq.Context | None = None
        self.frontend: zmq.Socket | None = None
        self._pull: zmq.Socket | None = None
        self._inproc = f"inproc://exposure-replies-{id(self):x}-{secrets.token_hex(4)}"
        self._authenticator = None
        self._stop = threading.Event()          # set by request_stop (signal handler safe: no locks taken)
        self._workers_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._queues = {
            "predict": queue.Queue(self.config.predict_queue),
            "render": queue.Queue(self.config.render_queue),
            "export": queue.Queue(self.config.export_queue),
        }
        self._inflight = 0                      # jobs queued or running; touched by the I/O thread only
        self._started = time.time()
        self.stats = {"requests": 0, "errors": 0, "replies": 0, "predict_batches": 0, "predict_rows": 0,
                      "max_batch_rows": 0}
        self._stats_lock = threading.Lock()
        self.exit_reason: str | None = None
        self.draining = False                   # True from the moment a stop request is seen
        self._torch_threads_before: int | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Check the bind address, bind, start the workers. Returns the bound endpoint (``tcp://127.0.0.1:*``
        gives the chosen port). Raises :class:`ServerError` with a message a user can act on."""
        cfg = self.config
        keys = check_bind(cfg)
        if cfg.bind.startswith("ipc://"):
            _claim_ipc_path(cfg.bind)

        self.ctx = zmq.Context()
        if keys is not None:
            self._authenticator = auth.start_authenticator(self.ctx, keys)
        fe = self.ctx.socket(zmq.ROUTER)
        fe.setsockopt(zmq.MAXMSGSIZE, self.limits.max_frame_bytes)  # libzmq drops a peer sending a bigger frame
        fe.setsockopt(zmq.LINGER, 2000)  # deliver the last replies when closing after a drain
        if keys is not None:
            auth.make_curve_server(fe, keys)
        try:
            fe.bind(cfg.bind)
        except zmq.ZMQError as e:
            fe.close(0)
            self._close_context()
            if e.errno == errno.EADDRINUSE:
                raise EndpointInUse(f"{cfg.bind} is already in use (another exposure-engine daemon? check with "
                                    f"`exposure-engine predict --server {cfg.bind} ...`, or choose --bind)") from None
            raise ServerError(f"cannot bind {cfg.bind}: {e}") from None
        self.frontend = fe
        self.endpoint = fe.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pull = self.ctx.socket(zmq.PULL)
        self._pull.bind(self._inproc)

        # One intra-op thread on a CPU: concurrent requests are batched instead, and on a shared or busy CPU
        # torch's OpenMP threads wait on each other (measured with load average 10 on 2 cores: a batch of 8 took
        # 2.6-3.3 s with 2 threads and 0.22-0.28 s with 1). Process-wide, so restored when the server stops.
        threads = self.config.torch_threads or (1 if self.device == "cpu" else None)
        if threads:
            import torch

            self._torch_threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        # Load the models only now: a busy port or an unsafe bind is reported without waiting for them. Requests
        # that arrive meanwhile wait in ZeroMQ's queue; the first reply comes when predict is ready.
        for name, msg in self.styles.preload().items():
            log.warning("style %s not loaded: %s", name, msg)
        self.warm_up()
        if self._helper is not None:
            self._helper.start()  # ready in a few seconds; until then the predict thread does every row
        for i in range(self.predict_workers):
            self._spawn(f"predict-{i}", self._predict_loop)
        for i in range(max(1, cfg.render_workers)):
            self._spawn(f"render-{i}", lambda: self._simple_loop("render", self._do_render))
        self._spawn("export", lambda: self._simple_loop("export", self._do_export))
        log.info("serving %s on %s (device %s, styles: %s)", __version__, self.endpoint, self.device,
                 ", ".join(self.styles.names()) or "none")
        return self.endpoint

    def warm_up(self) -> None:
        """Run each loaded style and the renderer once, so that the first client does not pay for torch's and
        numba's first-call set-up (seconds) inside its timeout."""
        from ..renderer import render
        from ..sequence import EditSequence

        for style in self.styles.describe():
            if style["loaded"]:
                _, policy = self.styles.get(style["name"])
                policy.predict_batch(np.zeros((1, policy.arch.proxy, policy.arch.proxy, 3), np.float32), seeds=[0])
        render(np.zeros((1, 1, 3), np.float32), EditSequence())

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=f"exposure-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def request_stop(self) -> None:
        """Drain and exit (safe to call from a signal handler or another thread)."""
        self._stop.set()

    def run_in_thread(self) -> threading.Thread:
        if self.frontend is None:
            self.start()
        t = threading.Thread(target=self.serve_forever, name="exposure-io", daemon=True)
        t.start()
        return t

    def serve_forever(self) -> str:
        """Run the I/O loop until stopped; returns why it ended (``"stopped"``, ``"idle"``, ``"drain timeout"``)."""
        if self.frontend is None:
            self.start()
        fe, pull = self.frontend, self._pull
        poller = zmq.Poller()
        poller.register(fe, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        last_activity = time.monotonic()
        drain_deadline = None
        try:
            while True:
                now = time.monotonic()
                if self._stop.is_set() and drain_deadline is None:
                    drain_deadline = now + self.config.drain_timeout
                    self.draining = True
                    log.info("stopping: draining %d request(s)", self._inflight)
                if drain_deadline is not None:
                    if self._inflight == 0:
                        self.exit_reason = "stopped"
                        break
                    if now > drain_deadline:
                        log.warning("drain timeout: %d request(s) left unanswered", self._inflight)
                        self.exit_reason = "drain timeout"
                        break
                elif (self.config.idle_exit is not None and self._inflight == 0
                      and now - last_activity > self.config.idle_exit):
                    log.info("idle for %.0f s: exiting", self.config.idle_exit)
                    self.exit_reason = "idle"
                    break
                events = dict(poller.poll(50))
                if pull in events:
                    self._forward_replies()
                if fe in events:
                    for _ in range(256):  # bounded, so replies keep flowing under a flood of requests
                        try:
                            frames = fe.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        last_activity = time.monotonic()
                        self._on_message(frames, draining=drain_deadline is not None)
                        if not fe.get(zmq.EVENTS) & zmq.POLLIN:  # drained: no exception needed to find out
                            break
        finally:
            self._shutdown()
        return self.exit_reason or "stopped"

    def _shutdown(self) -> None:
        self._workers_stop.set()
        for t in self._threads:
            t.join(timeout=5)
        if self._helper is not None:
            self._helper.stop()
        for s in (self._pull, self.frontend):
            if s is not None:
                s.close()
        self._pull = self.frontend = None
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        self._close_context()
        if self._torch_threads_before is not None:
            import torch

            torch.set_num_threads(self._torch_threads_before)
        if self.config.bind.startswith("ipc://"):
            try:
                os.unlink(self.config.bind[len("ipc://"):])
            except OSError:
                pass
        log.info("daemon stopped (%s)", self.exit_reason)

    def _close_context(self) -> None:
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None

    # --- I/O thread -----------------------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _forward_replies(self) -> None:
        for _ in range(1024):
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._inflight -= 1
            self._send(frames)
            if not self._pull.get(zmq.EVENTS) & zmq.POLLIN:
                return

    def _send(self, frames: list) -> None:
        try:
            self.frontend.send_multipart(frames, copy=False)
            self._count("replies")
        except zmq.ZMQError as e:  # e.g. EHOSTUNREACH; without ROUTER_MANDATORY unroutable replies are dropped
            log.debug("reply dropped: %s", e)

    def _reply_error(self, envelope: list, code: str, message: str, rid: Any = None) -> None:
        self._count("errors")
        self._send([*envelope, P.error_reply(code, message, rid)])

    def _on_message(self, frames: list, *, draining: bool) -> None:
        self._count("requests")
        # A REQ client's message arrives as [identity, b"", header, ...]; a DEALER may omit the delimiter.
        n_env = 2 if len(frames) >= 2 and len(frames[1]) == 0 else 1
        envelope = [f.bytes for f in frames[:n_env]]
        body = frames[n_env:]
        doc: Any = None
        try:
            if not body:
                raise ProtocolError(Code.BAD_MESSAGE, "empty message: expected [JSON header, payload frames...]")
            if len(body) > self.limits.max_frames:
                raise ProtocolError(Code.BAD_MESSAGE, f"{len(body)} frames; at most {self.limits.max_frames}")
            doc = P.loads_header(body[0].buffer, self.limits.max_header_bytes)
            kind = P.check_request(doc)
            if draining:
                raise ProtocolError(Code.SHUTTING_DOWN, "the daemon is shutting down; retry in a moment")
            payload = body[1:]
            if len(payload) != PAYLOADS[kind]:
                raise ProtocolError(Code.BAD_MESSAGE, f"{kind} takes {PAYLOADS[kind]} payload frame(s) after the "
                                                      f"header, got {len(payload)}")
            rid = doc.get("id")
            if kind == "ping":
                self._send([*envelope, P.ok_reply("ping", rid, version=__version__, pid=os.getpid())])
                return
            if kind == "info":
                self._send([*envelope, P.ok_reply("info", rid, **self.info())])
                return
            job = Job(kind, envelope, rid, doc, payload)
            self._check(job)
            try:
                self._queues[kind].put_nowait(job)
            except queue.Full:
                raise ProtocolError(Code.BUSY, f"{kind} queue is full ({self._queues[kind].maxsize} waiting); "
                                               "retry later") from None
            self._inflight += 1
            if kind == "predict" and self.adaptive_window:
                with self._clients_lock:
                    self._predict_clients[envelope[0]] = time.monotonic()
        except ProtocolError as e:
            self._reply_error(envelope, e.code, e.message, P.request_id(doc))
        except Exception as e:  # a bug in a check must not take the daemon down
            log.exception("unexpected error handling a request")
            self._reply_error(envelope, Code.INTERNAL, f"{type(e).__name__}: {e}", P.request_id(doc))

    def _check(self, job: Job) -> None:
        """Header checks that cost nothing (no pixel is touched); failing requests never reach a queue."""
        h, lim = job.header, self.limits
        if job.kind == "predict":
            job.parsed["image"] = P.parse_descriptor(h.get("image"), max_pixels=lim.max_predict_pixels)
            job.parsed["variants"] = P.get_int(h, "variants", 1, 1, lim.max_variants, limit_code=Code.TOO_LARGE)
            job.parsed["seed"] = P.get_int(h, "seed", None, 0, 2**31 - 1)
            job.parsed["style"] = P.get_str(h, "style", None)
            dropout = h.get("dropout")
            if dropout is not None and not isinstance(dropout, bool):
                raise ProtocolError(Code.BAD_HEADER, "header.dropout must be true, false or absent")
            from ..agent.policy import resolve_dropout  # loaded with the styles already: no import cost here

            try:  # Policy.predict's rule: sampled for variants or a seed, else the mean edit
                job.parsed["dropout"] = resolve_dropout(dropout, job.parsed["variants"], job.parsed["seed"])
            except ValueError as e:
                raise ProtocolError(Code.BAD_HEADER, str(e)) from None
        elif job.kind == "render":
            job.parsed["image"] = P.parse_descriptor(h.get("image"), max_pixels=lim.max_render_pixels)
            P.get_object(h, "sequence")
            clip = h.get("clip", True)
            if not isinstance(clip, bool):
                raise ProtocolError(Code.BAD_HEADER, "header.clip must be true or false")
            job.parsed["clip"] = clip
        elif job.kind == "export":
            P.get_object(h, "sequence")
            job.parsed["format"] = P.get_str(h, "format", None, P.EXPORT_FORMATS)
            if job.parsed["format"] is None:
                raise ProtocolError(Code.BAD_HEADER, f"header.format is missing: one of {', '.join(P.EXPORT_FORMATS)}")
            job.parsed["mode"] = P.get_str(h, "mode", "native", P.EXPORT_MODES)
            job.parsed["name"] = P.get_str(h, "name", None, max_len=128)
            job.parsed["input_kind"] = P.get_str(h, "input_kind", "raster", P.EXPORT_INPUT_KINDS)

    def info(self) -> dict:
        from .. import filters as F

        return {
            "engine": "exposure-engine", "version": __version__, "protocol": P.PROTOCOL, "pid": os.getpid(),
            "device": self.device, "styles": self.styles.describe(), "default_style": self.styles.default,
            "filters": [f.name for f in F.FILTERS], "kinds": list(P.KINDS), "limits": self.limits.to_dict(),
            "export_formats": list(P.EXPORT_FORMATS) if _exporters_available() else [],
            "batching": {"window_ms": self.batch_window * 1000.0, "adaptive": self.adaptive_window,
                         "predict_workers": self.predict_workers,
                         "max_batch": self.config.max_batch,
                         "helper": None if self._helper is None else {
                             "alive": self._helper.alive(), "rows": self._helper.rows,
                             "failures": self._helper.failures}},
            "queues": {k: q.qsize() for k, q in self._queues.items()},
            "stats": dict(self.stats), "uptime_s": round(time.time() - self._started, 3),
        }

    # --- workers ------------------------------------------------------------------------------------------------
    def _reply_socket(self) -> zmq.Socket:
        s = self.ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self._inproc)
        return s

    def _simple_loop(self, kind: str, handler: Callable[[Job], list]) -> None:
        sock = self._reply_socket()
        q = self._queues[kind]
        try:
            while not self._workers_stop.is_set():
                try:
                    job = q.get(timeout=0.1)
                except queue.Empty:
                    continue
                sock.send_multipart([*job.envelope, *self._guarded(job, handler)], copy=False)
        finally:
            sock.close()

    def _guarded(self, job: Job, handler: Callable[[Job], list]) -> list:
        try:
            return handler(job)
        except Exception as e:
            return self._error_frames(job, e)

    def _error_frames(self, job: Job, exc: BaseException) -> list:
        """The reply to a request whose handling raised ``exc``: protocol errors as they are, others as
        ``internal`` (logged with their traceback: they are bugs)."""
        self._count("errors")
        if isinstance(exc, ProtocolError):
            return [P.error_reply(exc.code, exc.message, job.rid)]
        if isinstance(exc, MemoryError):
            return [P.error_reply(Code.TOO_LARGE, "the daemon ran out of memory for this request", job.rid)]
        log.error("%s request failed", job.kind, exc_info=exc)
        return [P.error_reply(Code.INTERNAL, f"{job.kind} failed: {type(exc).__name__}: {exc}", job.rid)]

    def _do_render(self, job: Job) -> list:
        from ..renderer import render
        from ..sequence import EditSequence, SequenceError

        try:
            seq = EditSequence.from_dict(job.header["sequence"])
        except SequenceError as e:
            raise ProtocolError(Code.BAD_SEQUENCE, f"header.sequence: {e}") from None
        dtype, shape, enc = job.parsed["image"]
        pixels = P.to_linear(P.frame_array(job.payload[0].buffer, dtype, shape), enc, copy=False)
        out = render(pixels, seq, clip=job.parsed["clip"])
        head = P.ok_reply("render", job.rid, image=P.describe_array(out, "srgb"), steps=len(seq.steps))
        return [head, out]

    def _do_export(self, job: Job) -> list:
        from ..sequence import EditSequence, SequenceError

        try:
            seq = EditSequence.from_dict(job.header["sequence"])
        except SequenceError as e:
            raise ProtocolError(Code.BAD_SEQUENCE, f"header.sequence: {e}") from None
        files = export_files(seq, job.parsed["format"], job.parsed["mode"], job.parsed["name"],
                             job.parsed["input_kind"])
        head = P.ok_reply("export", job.rid, files=[{"name": n, "bytes": len(b)} for n, b in files.items()])
        return [head, *files.values()]

    # --- predict: micro-batching ----------------------------------------------------------------------------
    def _predict_loop(self) -> None:
        sock = self._reply_socket()
        q = self._queues["predict"]
        try:
            while not self._workers_stop.is_set():
                try:
                    batch = [q.get(timeout=0.1)]
                except queue.Empty:
                    continue
                deadline = time.monotonic() + self.batch_window
                # Adaptive: wait for this worker's share of the active clients' requests, at most the window.
                share = -(-self._active_clients() // self.predict_workers)
                want = min(self.config.max_batch, share if self.adaptive_window else 1 << 30)
                while len(batch) < self.config.max_batch:
                    try:  # everything already queued joins at once; then wait out the window, if any
                        batch.append(q.get_nowait())
                        continue
                    except queue.Empty:
                        pass
                    left = deadline - time.monotonic()
                    if left <= 0 or len(batch) >= want:
                        break
                    try:
                        batch.append(q.get(timeout=left))
                    except queue.Empty:
                        break
                for job, frames in self._predict_batch(batch):
                    sock.send_multipart([*job.envelope, *frames], copy=False)
        finally:
            sock.close()

    def _active_clients(self) -> int:
        """How many clients sent a predict in the last second (forgetting older ones)."""
        horizon = time.monotonic() - 1.0
        with self._clients_lock:
            for ident in [k for k, t in self._predict_clients.items() if t < horizon]:
                del self._predict_clients[ident]
            return max(1, len(self._predict_clients))

    def _predict_batch(self, jobs: list[Job]) -> list[tuple[Job, list]]:
        """Run a batch of predict jobs; returns each job with its reply frames (errors included)."""
        from ..agent.policy import STATE_SIZE, resize_proxy

        replies: list[tuple[Job, list]] = []
        groups: dict[str, tuple[Any, list]] = {}  # style -> (policy, [(job, proxy, seeds)])
        for job in jobs:
            try:
                style, policy = self.styles.get(job.parsed["style"])
                dtype, shape, enc = job.parsed["image"]
                # Non-finite pixels are found by resize_proxy, on 16x fewer values (a 256 px proxy's 64x64 state).
                img = P.to_linear(P.frame_array(job.payload[0].buffer, dtype, shape), enc, copy=False,
                                  check_finite=False)
                try:
                    small = resize_proxy(img, STATE_SIZE)  # what Policy.predict makes of the same proxy
                except ValueError as e:
                    raise ProtocolError(Code.BAD_IMAGE, f"image: {e}") from None
                base = job.parsed["seed"] if job.parsed["seed"] is not None else secrets.randbits(31)
                seeds = [base + i for i in range(job.parsed["variants"])]  # as Policy.predict numbers variants
                groups.setdefault(style, (policy, []))[1].append((job, small, seeds))
            except Exception as e:
                replies.append((job, self._error_frames(job, e)))
        for style, (policy, items) in groups.items():
            rows = [(job, small, s) for job, small, seeds in items for s in seeds]
            preds: list = []
            try:
                for i in range(0, len(rows), self.config.max_batch):
                    chunk = rows[i:i + self.config.max_batch]
                    preds += self._predict_rows(policy, np.stack([r[1] for r in chunk]), [r[2] for r in chunk],
                                                [r[0].parsed["dropout"] for r in chunk])
                    with self._stats_lock:
                        self.stats["predict_batches"] += 1
                        self.stats["predict_rows"] += len(chunk)
                        self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(chunk))
            except Exception as e:
                for job, _, _ in items:
                    replies.append((job, self._error_frames(job, e)))
                continue
            k = 0
            for job, _, seeds in items:
                mine, k = preds[k:k + len(seeds)], k + len(seeds)
                head = P.ok_reply(
                    "predict", job.rid, style=style, device=str(policy.device),
                    model={"name": policy.name, "content_hash": policy.content_hash},
                    predictions=[{"sequence": seq, "probabilities": probs.tolist(), "seed": seed}
                                 for seq, probs, seed in mine])
                replies.append((job, [head]))
        return replies

    def _predict_rows(self, policy, proxies: np.ndarray, seeds: list[int], dropout: list[bool]) -> list[tuple]:
        """``(sequence dict, probabilities, seed)`` per row; the helper process takes the second half of 2+ rows
        (in parallel with this thread's half) when it can, else this thread predicts all of them."""
        n, helper = len(proxies), self._helper
        k = n // 2 if helper is not None and n >= 2 and policy.device.type == "cpu" else 0
        sent = k > 0 and helper.submit(policy.identity, policy, proxies[n - k:], seeds[n - k:], dropout[n - k:])
        m = n - k if sent else n
        theirs = None
        try:
            out = predict_helper.rows(policy.predict_batch(proxies[:m], seeds=seeds[:m], dropout=dropout[:m]))
        finally:
            if sent:  # always collected (even if this half raised): the helper then takes the next batch again
                theirs = helper.result()
        if sent:
            if theirs is None or len(theirs) != k:  # the helper failed: these rows are predicted here instead
                theirs = predict_helper.rows(policy.predict_batch(proxies[m:], seeds=seeds[m:],
                                                                  dropout=dropout[m:]))
            out += theirs
        return out


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_bind(cfg: ServerConfig) -> "auth.ServerKeys | None":
    """Refuse a bind reachable from other machines unless ``allow_remote`` and CURVE keys are both given;
    returns the server keys (or None). Raises :class:`ServerError` saying what to do."""
    remote = not auth.is_loopback(cfg.bind)
    if remote and not cfg.allow_remote:
        raise ServerError(f"{cfg.bind} is reachable from other machines; the daemon binds loopback only "
                          "unless you pass --allow-remote together with --keys DIR (CURVE authentication)")
    if remote and cfg.keys_dir is None:
        raise ServerError(f"--allow-remote needs --keys DIR: an unauthenticated daemon on {cfg.bind} would run "
                          "anyone's requests (make keys with `exposure-engine serve --gen-keys DIR`)")
    if cfg.keys_dir is None:
        return None
    try:
        return auth.server_keys(cfg.keys_dir)
    except auth.KeyFileError as e:
        raise ServerError(str(e)) from None


def _exporters_available() -> bool:
    try:
        from ..exporters import export  # noqa: F401
    except Exception:  # missing, or broken: either way `info` must still answer
        return False
    return True


def export_files(sequence, fmt: str, mode: str = "native", name: str | None = None,
                 input_kind: str = "raster", raw_white_balance=None) -> dict[str, bytes]:
    """``exposure_engine.exporters.export`` with its failures mapped to protocol errors.

    Returns ``{file name: content}``; the first entry is the main file (the others are referenced by name)."""
    from ..sequence import SequenceError

    try:
        from ..exporters import export
    except ImportError as e:
        raise ProtocolError(Code.NOT_AVAILABLE, f"exporters are not installed in this engine ({e})") from None
    kwargs = {"mode": mode, "input_kind": input_kind}
    if raw_white_balance is not None:
        kwargs["raw_white_balance"] = raw_white_balance
    if name:
        kwargs["name"] = name
    try:
        files = export(sequence, fmt, **kwargs)
    except SequenceError as e:
        raise ProtocolError(Code.BAD_SEQUENCE, f"sequence: {e}") from None
    except (ValueError, NotImplementedError) as e:
        raise ProtocolError(Code.EXPORT_FAILED, f"cannot export as {fmt} ({mode}): {e}") from None
    if not isinstance(files, dict) or not files:
        raise ProtocolError(Code.INTERNAL, f"the {fmt} exporter returned no files")
    return {str(k): bytes(v) for k, v in files.items()}


def _claim_ipc_path(url: str) -> None:
    """ZeroMQ silently replaces an ipc socket file that another daemon is serving on: ask it first."""
    path = url[len("ipc://"):]
    if not os.path.exists(path):
        return
    from .client import Client, DaemonUnavailable

    try:
        Client(url, timeout=0.5, retries=0).ping()
    except DaemonUnavailable:
        try:
            os.unlink(path)  # a stale file left by a daemon killed with -9
        except OSError:
            pass
        return
    except Exception:
        pass
    raise EndpointInUse(f"{url} is already served by a running daemon (choose another --bind)")
