"""A helper process that predicts part of each batch: the daemon's second core, with its own interpreter lock.

With 8 clients a batch of 8 proxies costs the predict thread ~11-18 ms on this 2-core machine, about half of it
Python (torch dispatch, the step loop) that holds the GIL, so a second predict *thread* cannot run beside it
(``--predict-workers 2`` measured no better). A second *process* can: the predict thread sends half of a batch
(64x64 float32 states, their seeds and dropout flags: 49 KB a row) to the helper over a pipe, predicts the other
half itself, then takes the helper's rows back. Each row's result depends only on its own proxy and seed
(:meth:`Policy.predict_batch`), so the split changes no result.

The helper gets each style's weights from the daemon the first time it serves that style (state_dict + config
over the pipe, so in-memory policies work too) and replies ``(sequence dict, probabilities, seed)`` per row.
Anything wrong with it (not started yet, dead, an error, a reply slower than ``timeout``) costs nothing but
time: the daemon predicts those rows itself, and a dead helper is restarted on the next batch (at most once per
``RESTART_BACKOFF`` seconds).

The helper is ``python -m exposure_engine.daemon.predict_helper FD THREADS``, talking over one end of a socket
pair (``multiprocessing.connection`` framing): unlike ``multiprocessing``'s spawn, it never re-imports the main
module of the program that embeds the daemon. POSIX only; elsewhere the daemon predicts alone.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("exposure_engine.daemon")

RESTART_BACKOFF = 5.0  # seconds between restarts of a helper that died


def rows(predictions) -> list[tuple[dict, np.ndarray, int | None]]:
    """What a predict reply needs of each :class:`Prediction`: ``(sequence dict, probabilities, seed)`` (also what
    the helper sends back: the proxies it stepped stay behind)."""
    return [(p.sequence.to_dict(), p.probabilities, p.seed) for p in predictions]


def _helper_main(conn, torch_threads: int) -> None:
    """The helper process: load styles when told, predict when asked, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal reaches the whole group: the daemon decides
    import torch

    from ..agent.networks import Actor, Arch
    from ..agent.policy import Policy

    torch.set_num_threads(torch_threads)
    policies: dict[str, Policy] = {}
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "load":  # no reply: a style that fails to load makes its predict fail (one error reply)
            try:
                _, key, name, content_hash, config, state = msg
                actor = Actor(Arch.from_dict(config.get("arch", {})))
                actor.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
                policies[key] = Policy(actor, name=name, config=config, content_hash=content_hash)
            except Exception as e:
                print(f"exposure-engine predict helper: cannot load a style: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        try:
            _, key, proxies, seeds, dropout = msg
            preds = policies[key].predict_batch(proxies, seeds=seeds, dropout=dropout)
            conn.send(("ok", rows(preds)))
        except Exception as e:  # reported to the daemon, which predicts these rows itself
            try:
                conn.send(("error", f"{type(e).__name__}: {e}"))
            except (OSError, ValueError):
                return


def supported() -> bool:
    return os.name == "posix" and hasattr(socket, "socketpair")


class PredictHelper:
    """One helper process (a fresh interpreter: it inherits no threads, locks or sockets but its end of the pair)."""

    def __init__(self, torch_threads: int = 1, timeout: float = 30.0):
        self.torch_threads = torch_threads
        self.timeout = timeout
        self._lock = threading.Lock()  # one batch at a time (predict workers share the helper)
        self._state = threading.Lock()  # start / ready / restart bookkeeping (any thread may ask available())
        self._proc: Any = None
        self._conn: Any = None
        self._ready = False
        self._known: set[str] = set()
        self._last_start = -RESTART_BACKOFF
        self.rows = 0       # rows the helper predicted
        self.failures = 0   # batches whose helper part fell back to the daemon

    def start(self) -> None:
        """Start the process (it imports torch: ~2-3 s, during which the daemon predicts everything itself)."""
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "exposure_engine.daemon.predict_helper", str(theirs.fileno()),
                 str(self.torch_threads)], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._proc, self._conn, self._ready, self._known = proc, Connection(ours.detach()), False, set()
        self._last_start = time.monotonic()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def available(self) -> bool:
        """Whether the helper can take rows now (started, and its imports done). Restarts a dead one."""
        with self._state:
            if not self.alive():
                if self._proc is not None and time.monotonic() - self._last_start >= RESTART_BACKOFF:
                    log.warning("predict helper exited (code %s); restarting it", self._proc.returncode)
                    self._stop()
                    self.start()
                return False
            if not self._ready and self._conn.poll():
                try:
                    self._ready = self._conn.recv() == ("ready",)
                except (EOFError, OSError):
                    return False
            return self._ready

    def submit(self, key: str, policy, proxies: np.ndarray, seeds: Sequence[int], dropout: Sequence[bool]) -> bool:
        """Send rows to predict (key: the policy's :attr:`~exposure_engine.agent.policy.Policy.identity`); False if the
        helper cannot take them (then nothing was sent)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if not self.available():
                self._lock.release()
                return False
            if key not in self._known:
                # numpy arrays: torch tensors would be pickled as shared-memory handles for multiprocessing children
                state = {k: v.detach().cpu().numpy() for k, v in policy.actor.state_dict().items()}
                self._conn.send(("load", key, policy.name, policy.content_hash,
                                 {**policy.config, "arch": policy.arch.to_dict()}, state))
                self._known.add(key)
            self._conn.send(("predict", key, np.ascontiguousarray(proxies, np.float32), list(seeds), list(dropout)))
            return True
        except (OSError, ValueError) as e:  # BrokenPipeError is an OSError
            log.warning("predict helper unreachable (%s)", e)
            self._kill()
            self._lock.release()
            return False

    def result(self) -> list[tuple[dict, np.ndarray, int | None]] | None:
        """The submitted rows' ``(sequence dict, probabilities, seed)``, or None (error, death or timeout: the
        caller predicts them itself). Must follow a successful :meth:`submit`."""
        try:
            if not self._conn.poll(self.timeout):
                log.warning("predict helper did not answer within %.0f s; restarting it", self.timeout)
                self._kill()
                return None
            status, payload = self._conn.recv()
            if status == "ok":
                self.rows += len(payload)
                return payload
            log.warning("predict helper failed: %s", payload)
            self.failures += 1
            return None
        except (EOFError, OSError) as e:
            log.warning("predict helper lost (%s)", e)
            self._kill()
            return None
        finally:
            self._lock.release()

    def _kill(self) -> None:
        self.failures += 1
        if self.alive():
            self._proc.kill()
        self._ready = False

    def stop(self) -> None:
        """Close the pipe (the helper exits on it) and reap the process."""
        with self._state:
            self._stop()

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=2)
        self._proc = self._conn = None
        self._ready = False


if __name__ == "__main__":  # python -m exposure_engine.daemon.predict_helper FD THREADS (started by PredictHelper)
    _helper_main(Connection(int(sys.argv[1])), int(sys.argv[2]))
