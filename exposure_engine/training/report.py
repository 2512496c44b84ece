"""Training report: PNG plots of a run's history, and the histogram-intersection monitor used during training.

The monitor compares the agent's outputs on a fixed set of 64x64 input proxies with 64x64 target proxies using
the paper's three patch statistics (mean luminance, contrast = 2 std of luminance, mean HLS saturation; 32-bin
histograms on [0, 1]; score = sum of bin minima). It works on proxies already in memory, so it is cheap enough to
run every few hundred iterations; the full-image evaluation (4 crops x 4 patches per photo) is
``exposure_engine.evaluation.metrics.histogram_intersection``.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..filters import FILTERS, LUM

BINS = 32


def patch_statistics(patches: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` display-encoded sRGB -> ``(N, 3)``: luminance, contrast (2 std of lum), HLS saturation."""
    x = np.clip(np.asarray(patches, np.float32), 0.0, 1.0)
    L = (x @ LUM).reshape(len(x), -1)
    mx, mn = x.max(-1), x.min(-1)
    light = (mx + mn) / 2
    d = mx - mn
    denom = np.where(light <= 0.5, mx + mn, 2.0 - mx - mn)
    s = np.where(d > 0, d / np.maximum(denom, 1e-8), 0.0).reshape(len(x), -1)
    return np.stack([L.mean(1), 2 * L.std(1), s.mean(1)], 1)


def proxy_histogram_intersection(outputs: np.ndarray, targets: np.ndarray) -> dict:
    """Set-level histogram intersection of the three statistics: ``{"luminance", "contrast", "saturation",
    "mean"}`` in [0, 1] (1 = identical distributions)."""
    a, b = patch_statistics(outputs), patch_statistics(targets)
    res = {}
    for k, name in enumerate(("luminance", "contrast", "saturation")):
        ha = np.histogram(np.clip(a[:, k], 0, 1), BINS, (0.0, 1.0))[0] / len(a)
        hb = np.histogram(np.clip(b[:, k], 0, 1), BINS, (0.0, 1.0))[0] / len(b)
        res[name] = float(np.minimum(ha, hb).sum())
    res["mean"] = float(np.mean([res["luminance"], res["contrast"], res["saturation"]]))
    return res


def write_report(history: list[dict], monitor: list[dict], folder: str | Path) -> list[Path]:
    """Write ``losses.png``, ``reward.png``, ``filter_usage.png``, ``histogram_intersection.png`` and (when the
    run was validated) ``validation_psnr.png`` into ``folder``. Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if not history:
        return written
    its = np.array([h["iteration"] for h in history])

    def col(k):
        return np.array([h[k] for h in history], float)

    def smooth(v, n=max(1, len(history) // 50)):
        return np.convolve(v, np.ones(n) / n, mode="valid") if len(v) > n else v

    def save(fig, name):
        # written whole or not at all: the report is refreshed while training runs, which a kill may interrupt
        from ..agent.policy import atomic_write

        p = folder / name
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        atomic_write(p, buf.getvalue())
        written.append(p)

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.5))
    for a, k, title in zip(ax, ("wasserstein", "actor_loss", "value_loss"),
                           ("critic: Wasserstein estimate", "actor loss", "value loss")):
        v = col(k)
        a.plot(its, v, alpha=0.3, color="C0")
        s = smooth(v)
        a.plot(its[len(its) - len(s):], s, color="C0")
        a.set_title(title)
        a.set_xlabel("iteration")
    save(fig, "losses.png")

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for k, lab in (("reward", "reward per step"), ("d_gain", "D(s') - D(s)")):
        v = col(k)
        s = smooth(v)
        ax[0].plot(its[len(its) - len(s):], s, label=lab)
    ax[0].legend()
    ax[0].set_title("reward")
    terms = [("entropy", "entropy of pi1 (nats)"), ("reuse", "filter reuse rate"), ("overexposure", "over-exposure")]
    if all("anchor_error" in h for h in history):  # recipe brightness_anchor: finished images' distance from it
        terms.append(("anchor_error", "|brightness - anchor| (stops)"))
    for k, lab in terms:
        v = col(k)
        s = smooth(v)
        ax[1].plot(its[len(its) - len(s):], s, label=lab)
    ax[1].legend()
    ax[1].set_title("penalty terms")
    save(fig, "reward.png")

    usage = np.array([h["usage"] for h in history], float)
    usage = usage / np.maximum(usage.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.stackplot(its, usage.T, labels=[f.title for f in FILTERS])
    ax.set_ylim(0, 1)
    ax.set_title("filter choices during training (share per logged window)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    save(fig, "filter_usage.png")

    if monitor:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        mi = [m["iteration"] for m in monitor]
        for k in ("luminance", "contrast", "saturation", "mean"):
            ax.plot(mi, [m[k] for m in monitor], label=k, lw=2 if k == "mean" else 1)
        ax.set_ylim(0, 1)
        ax.set_title("histogram intersection with the targets (64x64 proxies)")
        ax.set_xlabel("iteration")
        ax.legend()
        save(fig, "histogram_intersection.png")
    val = [(m["iteration"], m["val_psnr"]) for m in monitor if "val_psnr" in m]
    if val:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(*zip(*val), marker=".")
        i_best, v_best = max(val, key=lambda t: t[1])
        ax.plot([i_best], [v_best], "o", color="C3", label=f"selected: iteration {i_best}, {v_best:.2f} dB")
        ax.set_title("validation: mean-edit PSNR against the finished originals (64x64 proxies)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("dB")
        ax.legend()
        save(fig, "validation_psnr.png")
    return written


def compare_runs(folders: list[str | Path], png: str | Path, labels: list[str] | None = None) -> Path:
    """One PNG of several runs side by side (e.g. one style, several training seeds): the validation PSNR (when the
    runs were validated) and the histogram-intersection monitor's mean against the iteration, each run's selected
    weights marked. Reads each run's ``history.json``; a folder without one is an error naming it."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for f in folders:
        hist = Path(f) / "history.json"
        try:
            data = json.loads(hist.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{f}: not a training run folder ({hist}: {e})") from None
        runs.append(data.get("monitor", []))
    labels = labels or [str(f) for f in folders]
    validated = any("val_psnr" in m for mon in runs for m in mon)
    fig, axes = plt.subplots(1, 2 if validated else 1, figsize=(13 if validated else 7, 3.8), squeeze=False)
    ax_hi = axes[0, -1]
    for k, (mon, lab) in enumerate(zip(runs, labels)):
        colour = f"C{k % 10}"
        ax_hi.plot([m["iteration"] for m in mon], [100 * m["mean"] for m in mon], color=colour, label=lab)
        val = [(m["iteration"], m["val_psnr"]) for m in mon if "val_psnr" in m]
        if validated and val:
            i_best, v_best = max(val, key=lambda t: t[1])
            axes[0, 0].plot(*zip(*val), color=colour, label=f"{lab}: best {v_best:.2f} dB at {i_best}")
            axes[0, 0].plot([i_best], [v_best], "o", color=colour)
    ax_hi.set_title("histogram intersection with the targets, mean % (64x64 proxies)")
    ax_hi.set_xlabel("iteration")
    ax_hi.legend(fontsize=8)
    if validated:
        axes[0, 0].set_title("validation PSNR of the mean edit (dB; dot: the weights a run keeps)")
        axes[0, 0].set_xlabel("iteration")
        axes[0, 0].legend(fontsize=8)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m exposure_engine.training.report",
                                description="Plot several training runs side by side (validation PSNR, histogram "
                                            "intersection monitor) into one PNG.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="training output folders (with history.json)")
    p.add_argument("--out", required=True, metavar="PNG")
    p.add_argument("--labels", help="comma-separated labels, one per run (default: the folders)")
    args = p.parse_args(argv)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        p.error(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
    try:
        print(compare_runs(args.runs, args.out, labels))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
