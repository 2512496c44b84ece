"""``exposure-engine bench render``: the fused renderer against plain per-filter numpy, side by side.

Both implementations render the same image with the same 5-step sequence of the costly filters (gamma,
saturation, tone curve, colour curves, contrast). Each runs in a fresh subprocess so that its peak memory is
its own: after the image exists and the code is warm, the kernel's peak-RSS counter is reset
(``/proc/self/clear_refs``) and the peak reached during the timed calls, minus the RSS before them, is the
extra memory the implementation needed (output array included). Where /proc is not available, tracemalloc's
peak is reported instead (it sees numpy's allocations).

The numpy reference below is written the way a person would write the formulas: whole-array float32 ops,
one function per filter. tests/test_render.py checks that it agrees with the torch filters, so the benchmark
compares like with like. Results and their interpretation: docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Plain numpy reference: one function per filter, whole-array float32 ops (img (H, W, 3) float32).

_LUM = np.array([0.27, 0.67, 0.06], np.float32)


def np_exposure(img: np.ndarray, ev: float) -> np.ndarray:
    return img * np.exp2(np.float32(ev))


def np_gamma(img: np.ndarray, gamma: float) -> np.ndarray:
    return np.power(np.maximum(img, np.float32(0.001)), np.float32(gamma))


def np_white_balance(img: np.ndarray, gains) -> np.ndarray:
    return img * np.asarray(gains, np.float32)


def np_saturation(img: np.ndarray, amount: float) -> np.ndarray:
    x = np.minimum(img, np.float32(1.0))
    v = x.max(axis=2, keepdims=True)
    m = x.min(axis=2, keepdims=True)
    s = np.where(v > 0, (v - m) / np.where(v > 0, v, np.float32(1.0)), np.float32(0.0))
    s2 = s + (1 - s) * (np.float32(0.5) - np.abs(np.float32(0.5) - v)) * np.float32(0.8)
    ratio = np.where(s > 0, s2 / np.where(s > 0, s, np.float32(1.0)), np.float32(0.0))
    enhanced = v - (v - x) * ratio
    grey = np.concatenate([v, v * (1 - s2), v * (1 - s2)], axis=2)  # HSV hue 0 for exact greys
    enhanced = np.where(s > 0, enhanced, grey)
    return x + np.float32(amount) * (enhanced - x)


def _np_curve(img: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """slopes ``(C, 8)`` float32, C = 1 (all channels) or 3 (per channel)."""
    n = slopes.shape[1]
    out = np.zeros_like(img)
    for i in range(n):
        out += np.clip(img - np.float32(i / n), np.float32(0.0), np.float32(1.0 / n)) * slopes[:, i]
    return out * (np.float32(n) / slopes.sum(axis=1))


def np_tone_curve(img: np.ndarray, slopes) -> np.ndarray:
    return _np_curve(img, np.asarray(slopes, np.float32).reshape(1, -1))


def np_color_curves(img: np.ndarray, slopes) -> np.ndarray:
    return _np_curve(img, np.asarray(slopes, np.float32).reshape(3, -1))


def np_contrast(img: np.ndarray, amount: float) -> np.ndarray:
    L = np.clip(img @ _LUM, np.float32(0.0), np.float32(1.0))[..., None]
    cl = np.float32(0.5) - np.float32(0.5) * np.cos(np.float32(np.pi) * L)
    enhanced = img / (L + np.float32(1e-6)) * cl
    return img + np.float32(amount) * (enhanced - img)


def np_black_and_white(img: np.ndarray, amount: float) -> np.ndarray:
    L = (img @ _LUM)[..., None]
    return img + np.float32(amount) * (L - img)


NUMPY_FILTERS = {
    "exposure": lambda img, p: np_exposure(img, p["ev"]),
    "gamma": lambda img, p: np_gamma(img, p["gamma"]),
    "white_balance": lambda img, p: np_white_balance(img, p["gains"]),
    "saturation": lambda img, p: np_saturation(img, p["amount"]),
    "tone_curve": lambda img, p: np_tone_curve(img, p["slopes"]),
    "color_curves": lambda img, p: np_color_curves(img, p["slopes"]),
    "contrast": lambda img, p: np_contrast(img, p["amount"]),
    "black_and_white": lambda img, p: np_black_and_white(img, p["amount"]),
}


def numpy_render(image: np.ndarray, sequence, *, clip: bool = True) -> np.ndarray:
    """The reference: ``(H, W, 3)`` float32 -> ``(H, W, 3)`` float32, one whole-array pass per filter."""
    from ..sequence import as_sequence

    img = np.asarray(image, np.float32)
    for step in as_sequence(sequence).steps:
        img = NUMPY_FILTERS[step.filter](img, step.params)
    return np.clip(img, 0.0, 1.0) if clip else img


# ---------------------------------------------------------------------------------------------------------------
# The workload

COSTLY_SEQUENCE = {
    "format": "exposure-edit-sequence", "version": 1,
    "steps": [
        {"filter": "gamma", "params": {"gamma": 0.45}},
        {"filter": "saturation", "params": {"amount": 0.6}},
        {"filter": "tone_curve", "params": {"slopes": [1.6, 1.4, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6]}},
        {"filter": "color_curves", "params": {"slopes": [[1.05] * 8,
                                                         [1.0, 0.95, 1.0, 1.05, 1.1, 1.0, 0.95, 0.9],
                                                         [0.92] * 8]}},
        {"filter": "contrast", "params": {"amount": 0.4}},
    ],
}


def make_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """``(height, width, 3)`` float32 linear values in [0, 1.25): uniform noise, so no filter gets an easy case."""
    rng = np.random.default_rng(seed)
    img = rng.random((height, width, 3), dtype=np.float32)
    img *= np.float32(1.25)
    return img


# ---------------------------------------------------------------------------------------------------------------
# Memory: peak RSS of this process during a call, relative to its RSS before it


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM (peak RSS) to the current RSS
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: ``extra_bytes`` = peak memory inside minus memory at entry."""

    def __enter__(self) -> "PeakMemory":
        self.method = "rss" if _reset_peak_rss() and _status_kib("VmHWM") is not None else "tracemalloc"
        if self.method == "rss":
            self._start = _status_kib("VmRSS") * 1024
        else:
            import tracemalloc

            tracemalloc.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "rss":
            self.extra_bytes = max(0, _status_kib("VmHWM") * 1024 - self._start)
        else:
            import tracemalloc

            self.extra_bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()


# ---------------------------------------------------------------------------------------------------------------
# One implementation, measured in this process (the worker side of the subprocess)


def _median_cpu_time(fn, repeat: int) -> float:
    """Median CPU seconds of ``fn()`` over all threads: unlike wall time, barely changed by other processes
    competing for the cores (the machine this was written on is shared)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def breakdown(img: np.ndarray, repeat: int) -> dict:
    """Where the fused renderer's time goes, rendering into a preallocated output (median CPU seconds):
    ``copy`` np.copyto of the image (the memory-traffic floor: read 12 B, write 12 B per pixel), ``empty`` a
    sequence with no steps (de-interleave, finiteness check, clip, interleave), then each filter alone
    (identity-free policy parameters) minus ``empty``: its arithmetic cost."""
    import importlib

    from .. import filters as F
    from ..sequence import EditSequence, Step

    R = importlib.import_module("exposure_engine.renderer")
    out = np.empty_like(img)
    np.copyto(out, img)  # touch the pages outside the timing
    res = {"copy_cpu_s": _median_cpu_time(lambda: np.copyto(out, img), repeat)}
    res["copy_gb_per_cpu_s"] = 2 * img.nbytes / res["copy_cpu_s"] / 1e9
    empty = _median_cpu_time(lambda: R.render(img, EditSequence([]), out=out), repeat)
    res["empty_cpu_s"] = empty
    import torch

    per = {}
    for f in F.FILTERS:
        raw = torch.linspace(-0.8, 0.9, f.n_raw, dtype=torch.float64)[None]
        seq = EditSequence([Step.from_packed(f.index, f.params_from_raw(raw)[0].tolist())])
        per[f.name] = _median_cpu_time(lambda: R.render(img, seq, out=out), repeat) - empty
    res["filter_cpu_s"] = per
    return res


def measure(impl: str, width: int, height: int, repeat: int, threads: int | None, inplace: bool = False,
            seed: int = 0, with_breakdown: bool = False) -> dict:
    """Time ``repeat`` renders of the workload with ``impl`` ("fused" or "numpy") and record peak extra memory.

    Each call allocates its output, as a caller without ``out=`` would; ``inplace`` (fused only) renders with
    ``out=image`` instead, which is how images too large for a second copy are handled.
    """
    import importlib

    from ..sequence import EditSequence

    R = importlib.import_module("exposure_engine.renderer")
    if threads:
        R.set_threads(threads)
    seq = EditSequence.from_dict(COSTLY_SEQUENCE)
    img = make_image(width, height, seed)
    if impl == "fused":
        R.render(img[:2, :64].copy(), seq)  # compile (or load the cached kernel) outside the timing
        run = (lambda: R.render(img, seq, out=img)) if inplace else (lambda: R.render(img, seq))
    elif impl == "numpy":
        if inplace:
            raise ValueError("--inplace applies to the fused renderer only")
        run = lambda: numpy_render(img, seq)  # noqa: E731
    else:
        raise ValueError(f"unknown implementation {impl!r}")
    times, cpu = [], []
    with PeakMemory() as mem:
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            out = run()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)  # all threads: what the work costs, whatever else runs
            del out
    med = statistics.median(times)
    mp = width * height / 1e6
    extra = {"breakdown": breakdown(img, repeat)} if with_breakdown and impl == "fused" else {}
    return {**extra, 
        "impl": impl, "width": width, "height": height, "megapixels": mp, "repeat": repeat,
        # numpy: its own threading (elementwise ufuncs run on one thread; the luminance matmul may use BLAS's)
        "threads": (threads or int(__import__("numba").get_num_threads())) if impl == "fused" else None,
        "inplace": inplace, "times_s": times, "median_s": med, "mp_per_s": mp / med,
        "cpu_s": cpu, "median_cpu_s": statistics.median(cpu),
        "input_bytes": img.nbytes, "peak_extra_bytes": mem.extra_bytes,
        "peak_extra_vs_input": mem.extra_bytes / img.nbytes, "memory_method": mem.method,
    }


def _measure_in_subprocess(impl: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "exposure_engine.benchmarks.render", "--worker", impl,
           "--size", f"{args.width}x{args.height}", "--repeat", str(args.repeat), "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.inplace and impl == "fused":
        cmd.append("--inplace")
    if args.breakdown and impl == "fused":
        cmd.append("--breakdown")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        from ..cli import CLIError

        raise CLIError(f"the {impl} benchmark process failed (exit {proc.returncode}): "
                       f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no message'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> dict:
    from . import cpu_name

    cpu = cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1_5_15": load, "python": platform.python_version(),
            "numpy": np.__version__, "numba": __import__("numba").__version__}


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 6000x4000, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def _positive(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=_parse_size, default=(6000, 4000), metavar="WxH",
                   help="image size (default 6000x4000, 24 MP)")
    p.add_argument("--repeat", type=_positive, default=5, metavar="N", help="timed renders per implementation "
                   "(default 5; the median is reported)")
    p.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="threads for the fused renderer (default: all cores; numpy's elementwise ops use one)")
    p.add_argument("--impl", choices=["both", "fused", "numpy"], default="both", help="what to measure")
    p.add_argument("--inplace", action="store_true",
                   help="fused renderer with out=image (no output allocation), e.g. for 10000x10000")
    p.add_argument("--breakdown", action="store_true",
                   help="also time np.copyto of the image, an empty sequence and each filter alone (fused)")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")


def _format(results: list[dict], machine: dict) -> str:
    lines = [f"machine: {machine['cpu']}, {machine['cores']} cores, load avg {machine['load_avg_1_5_15']}",
             f"{'implementation':<16}{'median s':>10}{'MP/s':>9}{'CPU s':>8}{'peak extra':>13}{'x input':>9}"
             "   times (s)"]
    for r in results:
        name = r["impl"] + (" (in place)" if r["inplace"] else "") + (f" {r['threads']}T" if r["threads"] else "")
        lines.append(f"{name:<16}{r['median_s']:>10.3f}{r['mp_per_s']:>9.1f}{r['median_cpu_s']:>8.2f}"
                     f"{r['peak_extra_bytes'] / 2**20:>10.0f} MiB{r['peak_extra_vs_input']:>9.2f}   "
                     + " ".join(f"{t:.3f}" for t in r["times_s"]))
    for r in results:
        if "breakdown" in r:
            b, px = r["breakdown"], r["width"] * r["height"]
            lines.append(f"CPU-time breakdown ({r['threads']}T, into a preallocated output): np.copyto "
                         f"{b['copy_cpu_s']:.3f} s ({b['copy_gb_per_cpu_s']:.1f} GB/s read+write), empty sequence "
                         f"{b['empty_cpu_s']:.3f} s; each filter alone minus empty, CPU s (ns/pixel):")
            lines.append("  " + ", ".join(f"{k} {v:.3f} ({v / px * 1e9:.1f})" for k, v in b["filter_cpu_s"].items()))
    by = {r["impl"]: r for r in results}
    if "fused" in by and "numpy" in by:
        ratio = by["numpy"]["median_s"] / by["fused"]["median_s"]
        lines.append(f"speed-up (numpy median / fused median): {ratio:.1f}x")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import numba

    from ..cli import CLIError

    args.width, args.height = args.size
    if args.threads and args.threads > numba.config.NUMBA_NUM_THREADS:
        raise CLIError(f"--threads {args.threads}: numba may use at most {numba.config.NUMBA_NUM_THREADS} "
                       "threads here (NUMBA_NUM_THREADS)")
    impls = ["fused", "numpy"] if args.impl == "both" else [args.impl]
    if args.inplace and args.impl != "fused":
        raise CLIError("--inplace needs --impl fused (the numpy reference allocates per filter)")
    print(f"rendering {args.width}x{args.height} ({args.width * args.height / 1e6:.1f} MP), "
          f"{len(COSTLY_SEQUENCE['steps'])} steps (gamma, saturation, tone curve, colour curves, contrast), "
          f"{args.repeat} repeats, one fresh process per implementation", flush=True)
    results = [_measure_in_subprocess(impl, args) for impl in impls]
    machine = _machine()
    print(_format(results, machine))
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "render", "machine": machine, "sequence": COSTLY_SEQUENCE,
                                         "results": results}, indent=2) + "\n")
    return 0


def register(sub) -> None:
    p = sub.add_parser("render", help="fused full-resolution renderer vs plain numpy: time, MP/s, peak memory",
                       description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    p.set_defaults(func=run)


def _worker_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exposure_engine.benchmarks.render")
    p.add_argument("--worker", choices=["fused", "numpy"], required=True)
    _add_arguments(p)
    a = p.parse_args(argv)
    w, h = a.size
    print(json.dumps(measure(a.worker, w, h, a.repeat, a.threads, a.inplace, a.seed, a.breakdown)))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
