"""``exposure-engine bench daemon``: predict round trips through the daemon, with 1 and with 8 clients.

A daemon is started in its own process (``python -m exposure_engine serve`` on an ipc socket in a temporary
folder; or ``--server URL`` uses a running one). Each client is a thread with its own :class:`Client` that
sends a 256x256 float32 linear proxy (what ``Client.predict`` sends for any photo) and waits for the edit
sequence; the time measured is the whole ``Client.predict`` call, parsing of the reply included. The model is
the ``default`` style when installed, else an untrained policy of the same shape as the paper's (``--untrained``).
The load average is printed with the numbers: on a shared machine it explains most of the spread.
"""
from __future__ import annotations

import argparse


def register(bsub) -> None:
    p = bsub.add_parser("daemon", help="daemon predict round-trip latency (p50/p99) with 1 and 8 clients",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1,8", metavar="N,N", help="client counts to measure (default 1,8)")
    p.add_argument("--requests", type=int, default=200, metavar="N", help="predicts per client (default 200)")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="unmeasured predicts per client first")
    p.add_argument("--server", metavar="URL", help="measure a running daemon instead of starting one")
    p.add_argument("--style", metavar="NAME", help="style to ask for (default: the daemon's default)")
    p.add_argument("--untrained", action="store_true", help="serve an untrained paper-size policy even if a "
                                                             "default model is installed")
    p.add_argument("--models", metavar="DIR", help="an extra folder of model folders for the started daemon")
    p.add_argument("--serve-args", default="", metavar="ARGS",
                   help="extra arguments for the started daemon, e.g. \"--batch-window-ms 2\"")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="measure each client count N times, alternating, and also report the median of the runs' "
                        "p50 and p99 (this machine's speed drifts over minutes; default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    p.set_defaults(func=run)


def measure(url: str, clients: int, requests: int, warmup: int, style: str | None) -> dict:
    """Run ``clients`` threads x ``requests`` predicts; returns latency percentiles (ms) and throughput."""
    import threading
    import time

    import numpy as np

    from ..daemon.client import Client
    from ..daemon.protocol import PROXY_SIDE

    rng = np.random.default_rng(0)
    proxies = [rng.random((PROXY_SIDE, PROXY_SIDE, 3), dtype=np.float32) * 0.5 for _ in range(clients)]
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients)

    def worker(i: int) -> None:
        try:
            with Client(url, timeout=60, retries=0) as c:
                for _ in range(warmup):
                    c.predict(proxies[i], style=style)
                barrier.wait()
                for _ in range(requests):
                    t0 = time.perf_counter()
                    c.predict(proxies[i], style=style)
                    lat[i].append(time.perf_counter() - t0)
        except Exception as e:  # reported, not raised: the other clients' numbers still mean something
            errors.append(f"client {i}: {type(e).__name__}: {e}")
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array([x for l in lat for x in l]) * 1000
    if errors or not len(ms):
        return {"clients": clients, "errors": errors}
    return {"clients": clients, "requests": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2), "predicts_per_s": round(len(ms) / wall, 1)}


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import shlex
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from ..cli import CLIError
    from ..daemon.client import Client, DaemonUnavailable
    from . import cpu_name

    counts = [int(x) for x in args.clients.split(",") if x.strip()]
    if not counts or min(counts) < 1 or args.requests < 1 or args.repeat < 1:
        raise CLIError("--clients, --requests and --repeat must be positive")
    proc = None
    tmp = tempfile.TemporaryDirectory(prefix="exposure-bench-")
    url = args.server
    if url is None:
        from ..daemon.styles import Styles, model_roots

        models = Path(args.models) if args.models else None
        untrained = args.untrained or "default" not in Styles(model_roots(models)).names()
        url = f"ipc://{tmp.name}/bench.sock"
        cmd = [sys.executable, "-m", "exposure_engine", "serve", "--bind", url, "--log-level", "warning",
               *(["--untrained"] if untrained else []), *(["--models", args.models] if args.models else []),
               *shlex.split(args.serve_args)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(f"{tmp.name}/log", "wb"))
        if untrained and not args.style:
            args.style = "untrained"
    try:
        deadline = time.monotonic() + 180
        probe = Client(url, timeout=1.0, retries=0)
        while True:
            try:
                probe.ping()
                break
            except DaemonUnavailable:
                if proc is not None and proc.poll() is not None:
                    raise CLIError(f"the daemon exited: {open(f'{tmp.name}/log').read()[-500:]}") from None
                if time.monotonic() > deadline:
                    raise CLIError(f"no daemon answered at {url}") from None
        probe.timeout = 30
        info = probe.info()
        style = args.style or info["default_style"]
        model = next((s for s in info["styles"] if s["name"] == style), {})
        print(f"daemon {info['version']} on {url}: device {info['device']}, style {style} "
              f"(model {model.get('model')}, {str(model.get('content_hash'))[:12]}), "
              f"batch window {info['batching']['window_ms']:g} ms"
              f"{' (adaptive)' if info['batching'].get('adaptive') else ''}")
        print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f} before")
        import numpy as np

        pings = []
        for _ in range(200):
            t0 = time.perf_counter()
            probe.ping()
            pings.append((time.perf_counter() - t0) * 1000)
        print(f"ping round trip (transport + protocol only): p50 {np.percentile(pings, 50):.2f} ms, "
              f"p99 {np.percentile(pings, 99):.2f} ms")
        results = [{"ping_p50_ms": round(float(np.percentile(pings, 50)), 3),
                    "ping_p99_ms": round(float(np.percentile(pings, 99)), 3)}]
        for rep in range(args.repeat):
            for n in counts:
                r = measure(url, n, args.requests, args.warmup, style)
                r["load_avg_1min"] = round(os.getloadavg()[0], 2)
                r["run"] = rep + 1
                results.append(r)
                if r.get("errors"):
                    print(f"{n} client(s): FAILED: {'; '.join(r['errors'][:3])}")
                else:
                    print(f"{n} client(s) x {args.requests}: p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, "
                          f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms, {r['predicts_per_s']:.0f} "
                          f"predicts/s (load average {r['load_avg_1min']:.2f})")
        if args.repeat > 1:
            for n in counts:
                runs = [r for r in results if r.get("clients") == n and "p50_ms" in r]
                if runs:
                    p50s, p99s = [r["p50_ms"] for r in runs], [r["p99_ms"] for r in runs]
                    print(f"{n} client(s), median of {len(runs)} runs: p50 {np.median(p50s):.1f} ms "
                          f"(runs {min(p50s):.1f}-{max(p50s):.1f}), p99 {np.median(p99s):.1f} ms "
                          f"(runs {min(p99s):.1f}-{max(p99s):.1f})")
        end = probe.info()
        stats, helper = end["stats"], end["batching"].get("helper")
        print(f"daemon: {stats['predict_rows']} rows in {stats['predict_batches']} batches "
              f"(largest {stats['max_batch_rows']}); "
              + (f"helper process: {helper['rows']} of them, {helper['failures']} fallback(s)" if helper
                 else "no helper process"))
        probe.close()
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"url": url, "device": info["device"], "style": style, "model": model,
                           "results": results, "stats": stats, "batching": end["batching"]}, fh, indent=2)
        return 1 if any(r.get("errors") for r in results) else 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        tmp.cleanup()
