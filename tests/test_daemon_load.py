"""8 concurrent clients x 500 predicts against one daemon: every request answered, with its own result."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from exposure_engine.daemon.client import Client

from daemon_support import make_image, running_server

CLIENTS = 8
REQUESTS = 500


@pytest.mark.slow
def test_eight_clients_times_five_hundred_predicts_lose_nothing():
    with running_server() as server:
        images = [make_image(64, 64, seed=c) for c in range(CLIENTS)]
        latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
        wrong: list[str] = []

        def worker(c: int) -> None:
            with Client(server.endpoint, timeout=60, retries=0) as client:
                for i in range(REQUESTS):
                    seed = c * 100_000 + i  # unique per request: a mixed-up reply would show the wrong seed
                    t0 = time.perf_counter()
                    [pred] = client.predict(images[c], seed=seed)
                    latencies[c].append(time.perf_counter() - t0)
                    if pred.seed != seed or pred.sequence.meta.get("seed") != seed or len(pred.sequence.steps) != 5:
                        wrong.append(f"client {c} request {i}: got seed {pred.seed}")

        threads = [threading.Thread(target=worker, args=(c,)) for c in range(CLIENTS)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        all_ms = np.array([x for lat in latencies for x in lat]) * 1000
        print(f"\n{CLIENTS} clients x {REQUESTS} predicts: p50 {np.percentile(all_ms, 50):.1f} ms, "
              f"p99 {np.percentile(all_ms, 99):.1f} ms, {len(all_ms) / wall:.0f} predicts/s, "
              f"{server.stats['predict_batches']} batches, largest {server.stats['max_batch_rows']} rows")
        assert not wrong, wrong[:5]
        assert len(all_ms) == CLIENTS * REQUESTS
        assert server.stats["errors"] == 0
        assert server.stats["predict_rows"] == CLIENTS * REQUESTS + 0  # each request ran exactly once
