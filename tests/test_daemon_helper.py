"""The predict helper process (daemon/predict_helper.py): it takes half of each batch on the second core, changes
no result, and anything wrong with it costs only time."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import numpy as np

from exposure_engine.daemon import predict_helper
from exposure_engine.daemon.client import Client
from exposure_engine.daemon.server import ServerConfig

from daemon_support import make_image, running_server, sequences_close, small_policy


def wait_ready(server, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not server._helper.available():
        assert time.monotonic() < deadline, "the predict helper never became ready"
        time.sleep(0.05)


@contextlib.contextmanager
def ready_helper_daemon(policy, monkeypatch):
    """A daemon serving ``policy`` with its helper process up, restarting a dead helper without delay."""
    monkeypatch.setattr(predict_helper, "RESTART_BACKOFF", 0.0)
    with running_server(ServerConfig(predict_helper=True), policies={"default": policy}) as server:
        wait_ready(server)
        yield server, server._helper


def proxies(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    return (rng.random((n, 64, 64, 3)) * 0.4).astype(np.float32)


def same_rows(got: list[tuple], policy, batch: np.ndarray, seeds: list[int], dropout: list[bool]) -> None:
    """Each row equals the policy's own prediction of that proxy with that seed (filters, parameters, probabilities,
    seed), whichever process made it."""
    from exposure_engine.sequence import EditSequence

    want = policy.predict_batch(batch, seeds=seeds, dropout=dropout)
    assert len(got) == len(want)
    for (seq, probs, seed), w in zip(got, want):
        assert sequences_close(EditSequence.from_dict(seq), w.sequence)
        np.testing.assert_allclose(probs, w.probabilities, atol=1e-5)
        assert seed == w.seed


def test_the_helper_predicts_half_of_a_batch_with_the_same_results(monkeypatch):
    pol = small_policy(2)
    with ready_helper_daemon(pol, monkeypatch) as (server, _):
        batch, seeds, dropout = proxies(7), [11, 12, 13, 14, 15, 16, 17], [True, False, True, False, True, True, False]
        got = server._predict_rows(pol, batch, seeds, dropout)
        assert server._helper.rows == 3  # the second half, 7 // 2 rows, came from the other process
        same_rows(got, pol, batch, seeds, dropout)
        # and through the socket: 6 clients at once, each reply the in-process prediction of its own image
        imgs = [make_image(40, 56, seed=i) for i in range(6)]
        out: dict[int, list] = {}

        def ask(i: int) -> None:
            with Client(server.endpoint, timeout=60, retries=0) as c:
                out[i] = c.predict(imgs[i], seed=100 + i)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        from exposure_engine.daemon.client import predict_proxy
        from exposure_engine.daemon.protocol import to_linear

        for i in range(6):
            proxy, enc = predict_proxy(imgs[i])
            want = pol.predict(to_linear(proxy, enc), seed=100 + i)[0]
            assert sequences_close(out[i][0].sequence, want.sequence)
        assert server.info()["batching"]["helper"]["alive"] is True


def test_a_killed_helper_costs_time_only_and_is_restarted(monkeypatch):
    pol = small_policy(3)
    with ready_helper_daemon(pol, monkeypatch) as (server, helper):
        os.kill(helper._proc.pid, signal.SIGKILL)
        helper._proc.wait(10)
        batch, seeds, dropout = proxies(4), [1, 2, 3, 4], [True] * 4
        same_rows(server._predict_rows(pol, batch, seeds, dropout), pol, batch, seeds, dropout)  # all done here
        wait_ready(server)  # restarted by the batch above
        assert helper.alive()
        before = helper.rows
        same_rows(server._predict_rows(pol, batch, seeds, dropout), pol, batch, seeds, dropout)
        assert helper.rows == before + 2


def test_a_helper_dying_mid_batch_falls_back_to_the_daemon(monkeypatch):
    pol = small_policy(4)
    with ready_helper_daemon(pol, monkeypatch) as (server, helper):
        real_submit = helper.submit

        def submit_then_die(*a, **k):
            ok = real_submit(*a, **k)
            os.kill(helper._proc.pid, signal.SIGKILL)  # after the rows went out, before the answer
            return ok

        monkeypatch.setattr(helper, "submit", submit_then_die)
        batch, seeds, dropout = proxies(6), list(range(6)), [False] * 6
        same_rows(server._predict_rows(pol, batch, seeds, dropout), pol, batch, seeds, dropout)
        assert helper.failures >= 1


def test_no_helper_on_request_and_none_left_behind_after_stop():
    with running_server(ServerConfig(predict_helper=False)) as server:
        assert server._helper is None and server.info()["batching"]["helper"] is None
    with running_server(ServerConfig(predict_helper=True)) as server:
        wait_ready(server)
        proc = server._helper._proc
    assert proc.wait(10) is not None  # stopping the daemon stopped its helper


def test_auto_uses_a_helper_on_a_multicore_cpu():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with running_server(ServerConfig()) as server:
        assert (server._helper is not None) == (cores >= 2 and predict_helper.supported())


def test_a_style_the_helper_cannot_load_falls_back_and_the_pipe_stays_in_step(monkeypatch):
    good, bad = small_policy(5), small_policy(6)
    bad.actor.state_dict = lambda: {}  # the helper is sent no weights: its load fails, the daemon's copy works
    with ready_helper_daemon(good, monkeypatch) as (server, helper):
        batch, seeds, dropout = proxies(4), [7, 8, 9, 10], [True] * 4
        for _ in range(2):  # each batch: one error reply, the rows predicted by the daemon instead
            got = server._predict_rows(bad, batch, seeds, dropout)
            assert len(got) == 4 and all(seq["steps"] for seq, _, _ in got)
        assert helper.failures == 2 and helper.rows == 0 and helper.alive()
        same_rows(server._predict_rows(good, batch, seeds, dropout), good, batch, seeds, dropout)
        assert helper.rows == 2  # the next reply read was this batch's own


def test_two_styles_with_the_same_weights_and_different_level_rules_are_told_apart(monkeypatch):
    # the helper caches styles by Policy.identity: keyed by the weights alone, the second style would be predicted
    # with the first one's level rule (a model given a rule by training.add_level keeps its weights)
    from exposure_engine.agent.level import LevelRule
    from exposure_engine.agent.policy import Policy
    from exposure_engine.training.anchor import BrightnessAnchor

    plain = small_policy(2)
    rule = LevelRule(BrightnessAnchor.from_values([-6.0, -3.0], [-3.0, -1.5]), -0.5)
    ruled = Policy(plain.actor, name="ruled", config={**plain.config, "level": rule.to_dict()})
    assert ruled.content_hash == plain.content_hash and ruled.identity != plain.identity
    with ready_helper_daemon(plain, monkeypatch) as (server, helper):
        batch, seeds, dropout = proxies(4), [1, 2, 3, 4], [False] * 4
        for pol in (plain, ruled, plain):
            same_rows(server._predict_rows(pol, batch, seeds, dropout), pol, batch, seeds, dropout)
        assert helper.rows == 6  # every call's second half came from the helper
