"""Evaluate a trained model on its held-out photos, made RAW-like, against the finished originals.

This is how the numbers in ``models/default/model_card.md`` are produced::

    python -m exposure_engine.training.holdout models/default /work/shared/photos \\
        [--raw /work/shared/raw/IMG_5952.CR2 --figure docs/images/default-cr2.png]

For each held-out photo (listed in the model's config.json under ``training.split.holdout_inputs``): decode the
finished JPEG, unprocess it with an evaluation seed that training never used, let the model predict on a 64x64
proxy, render the sequence at full resolution, and compare with the original (paired PSNR and CIE76 dE, from
:mod:`exposure_engine.evaluation.metrics`). The same RAW-like inputs go through the baselines of
:mod:`exposure_engine.evaluation.baselines` (LibRaw-like development, plain sRGB encoding, GIMP auto). The
set-level histogram intersection is against the model's target half. Beside them, ``unpaired_reference`` says
what an unpaired learner could reach on the same inputs (``bench quality``'s reference for the style "original":
each finished photo itself, with the input's colour cast and desaturation left in, as bright as the quantile map
from the training inputs' brightness to the targets' says; docs/evaluation.md, "What the unpaired information
allows").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch stays out of module import (the CLI's --help)
    from ..agent.policy import Policy

EVAL_SEED = 2026  # the unprocessing seed of the evaluation inputs (training used the run's --seed)


def _display(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def draw_params(n: int, seed: int) -> list:
    """The unprocessing amounts (:class:`.unprocess.UnprocessParams`) of :func:`raw_like_draw`'s ``n`` photos:
    one generator seeded ``seed``, one draw per photo, in order."""
    from .unprocess import random_params

    rng = np.random.default_rng(seed)
    return [random_params(rng) for _ in range(n)]


def raw_like_draw(originals: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """One RAW-like version of each finished photo, in order, from one generator seeded ``seed`` (the model card's
    inputs for ``seed = EVAL_SEED``)."""
    from .unprocess import unprocess

    return [unprocess(srgb, p) for srgb, p in zip(originals, draw_params(len(originals), seed))]


def load_with_split(model: str | Path) -> tuple[Policy, dict, dict]:
    """The policy in ``model``, its config's ``training`` section and the data split recorded there (``train
    --split-from``), which every held-out measurement needs; a clear error where none was recorded."""
    from ..agent.policy import Policy

    pol = Policy.load(model)
    training = pol.config.get("training", {})
    split = training.get("split")
    if not split:
        raise ValueError(f"{model}: config.json records no data split (train with --split-from)")
    return pol, training, split


def evaluate_holdout(model: str | Path, photos: str | Path, *, seed: int = EVAL_SEED, variants_seed: int = 0,
                     draws: int = 1) -> dict:
    """``draws``: how many RAW-like versions of each held-out photo (draw k from the generator seeded ``seed + k``,
    so draw 0 is the single draw of the model card). One draw of 20 photos moves the mean PSNR by 1-2 dB with the
    luck of the random exposure and cast (docs/training.md); means over several draws are steadier."""
    from ..evaluation import baselines as B
    from ..evaluation import benchmark as BM
    from ..evaluation import metrics as M
    from ..evaluation import styles as S
    from ..imageio.proxy import make_proxy
    from ..renderer import render
    from . import data as D
    from .unprocess import unprocess

    pol, training, split = load_with_split(model)
    photos = Path(photos)
    names = split["holdout_inputs"]
    # "model": the edit retouch / the daemon / the plug-ins make by default (the mean edit, no dropout);
    # "model_dropout_sample": the paper's test time (dropout on), one sample per photo (seed variants_seed);
    # "unpaired_reference": not a method but what an unpaired learner could reach (bench quality's reference,
    # evaluation.benchmark.unpaired_reference, for the style "original"): the finished photo itself with its
    # input's colour (cast, desaturation) left in, as bright as the quantile map from the training inputs' (one
    # draw, the run's seed) to the targets' brightness says.
    names_m = ("model", "model_dropout_sample", "libraw_like", "identity", "gimp_auto", "unpaired_reference")
    first = {k: [] for k in names_m}  # draw 0's renders, for the set-level histogram intersection
    paired = {k: {"psnr": [], "delta_e76": []} for k in names_m}  # every draw's per-image scores
    per_draw: list[dict] = []
    originals = [D.read_photo_srgb(photos / n) for n in names]
    targets = [D.read_photo_srgb(photos / n) for n in split["targets"]]
    train_orig = [D.read_photo_srgb(photos / n) for n in split["train_inputs"]]
    bmap = BM.unpaired_brightness_map(raw_like_draw(train_orig, int(training.get("seed", 0))), targets)
    finished = S.get("original")
    per_image = []
    for draw in range(max(1, draws)):
        draw_psnr = []
        for name, srgb, amounts in zip(names, originals, draw_params(len(originals), seed + draw)):
            lin = unprocess(srgb, amounts)
            proxy = make_proxy(lin, 64)
            pred = pol.predict(proxy)[0]
            outs = {"model": render(lin, pred.sequence),
                    "model_dropout_sample": render(lin, pol.predict(proxy, seed=variants_seed)[0].sequence),
                    "libraw_like": B.libraw_like(lin), "identity": B.identity(lin), "gimp_auto": B.gimp_auto(lin),
                    "unpaired_reference": BM.unpaired_reference(finished, srgb, amounts.to_dict(),
                                                                BM.mean_luminance(lin), bmap)}
            for k, out in outs.items():
                paired[k]["psnr"].append(M.psnr(out, srgb))
                paired[k]["delta_e76"].append(M.delta_e76(out, srgb))
                if draw == 0:
                    first[k].append(out)
            draw_psnr.append(paired["model"]["psnr"][-1])
            if draw == 0:
                per_image.append({"photo": name, "psnr": round(paired["model"]["psnr"][-1], 2),
                                  "delta_e76": round(paired["model"]["delta_e76"][-1], 2),
                                  "steps": pred.sequence.labels()})
        per_draw.append({"unprocess_seed": seed + draw, "model_psnr": round(float(np.mean(draw_psnr)), 3)})
    result: dict = {"model": pol.name, "sha256": pol.content_hash, "n_photos": len(names), "unprocess_seed": seed,
                    "draws": max(1, draws), "methods": {}, "per_image": per_image}
    if draws > 1:
        result["per_draw"] = per_draw
    for k in names_m:
        hi = M.histogram_intersection(first[k], targets)
        result["methods"][k] = {"psnr": round(float(np.mean(paired[k]["psnr"])), 3),
                                "delta_e76": round(float(np.mean(paired[k]["delta_e76"])), 3),
                                "histogram_intersection": {n: round(v, 4) for n, v in hi.to_dict().items()}}
    hi = M.histogram_intersection(originals, targets)
    result["methods"]["originals"] = {"histogram_intersection": {n: round(v, 4) for n, v in hi.to_dict().items()}}
    return result


def evaluate_snapshots(run: str | Path, photos: str | Path, *, seed: int = EVAL_SEED,
                       plot: str | Path | None = None) -> list[dict]:
    """Score every snapshot of a run (``train --snapshots``: ``RUN/snapshots/NNNNNN/``) on the run's held-out photos,
    mean edits, PSNR and CIE76 dE against the originals, beside the validation PSNR the run itself measured. This
    is how model selection by validation PSNR is checked against photos that neither training nor selection saw.
    Optionally plots both curves over the iterations."""
    from ..agent.policy import Policy
    from ..evaluation import metrics as M
    from ..imageio.proxy import make_proxy
    from ..renderer import render
    from . import data as D

    run, photos = Path(run), Path(photos)
    snap_dir = run / "snapshots"
    folders = sorted(p for p in snap_dir.iterdir() if (p / "policy.pt").is_file()) if snap_dir.is_dir() else []
    if not folders:
        raise ValueError(f"{run}/snapshots: no snapshots (train with --snapshots)")
    split = Policy.load(folders[-1]).config.get("training", {}).get("split")
    if not split and (run / "config.json").is_file():  # snapshots of older runs did not record the split
        split = json.loads((run / "config.json").read_text()).get("training", {}).get("split")
    if not split:
        raise ValueError(f"{run}: no data split recorded (train with --split-from)")
    originals = [D.read_photo_srgb(photos / name) for name in split["holdout_inputs"]]
    # the same inputs as evaluate_holdout's draw 0
    cases = [(lin, make_proxy(lin, 64), srgb) for lin, srgb in zip(raw_like_draw(originals, seed), originals)]
    rows = []
    for folder in folders:
        pol = Policy.load(folder)
        outs = [render(lin, pred.sequence) for (lin, _, _), pred in
                zip(cases, pol.predict_batch(np.stack([c[1] for c in cases]), dropout=False))]
        paired = M.paired_metrics(outs, [c[2] for c in cases])
        mon = pol.config.get("metrics", {}).get("monitor", {})
        rows.append({"iteration": int(folder.name), "val_psnr": mon.get("val_psnr"),
                     "test_psnr": round(paired.psnr, 2), "test_delta_e76": round(paired.delta_e, 2),
                     "monitor_hi": mon.get("mean")})
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        its = [r["iteration"] for r in rows]
        if all(r["val_psnr"] is not None for r in rows):
            ax.plot(its, [r["val_psnr"] for r in rows], marker=".", label="validation (training inputs' originals, 64 px)")
        ax.plot(its, [r["test_psnr"] for r in rows], marker=".", label="held-out photos (full resolution)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean PSNR (dB), mean edit")
        ax.legend()
        fig.tight_layout()
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=90)
        plt.close(fig)
    return rows


def raw_before_after(model: str | Path, raw: str | Path, figure: str | Path, *, seed: int | None = None,
                     width: int = 640) -> dict:
    """Develop a real RAW file three ways and save them side by side (PNG): linear data sRGB-encoded, LibRaw's
    default development, and the model's edit. Returns the model's sequence labels and output statistics."""
    import cv2

    from ..agent.policy import Policy
    from ..evaluation import baselines as B
    from ..filters import LUM
    from ..imageio.load import load_image
    from ..imageio.proxy import make_proxy
    from ..renderer import render

    pol = Policy.load(model)
    lin = load_image(raw)
    pred = pol.predict(make_proxy(lin, 64), seed=seed)[0]  # seed None: the mean edit (what retouch makes)
    out = render(lin, pred.sequence)
    panels = [B.identity(lin), B.libraw_default(raw), out]
    titles = ["linear (sRGB-encoded)", "LibRaw default", f"model '{pol.name}'"]
    h = round(width * lin.shape[0] / lin.shape[1])
    tiles = []
    for img, title in zip(panels, titles):
        t = cv2.resize(_display(img), (width, h), interpolation=cv2.INTER_AREA)
        t = (np.round(t * 255)).astype(np.uint8)[..., ::-1].copy()
        cv2.putText(t, title, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(t, title, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(t)
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(figure), np.concatenate(tiles, 1))
    lum = np.clip(out, 0, 1) @ LUM
    return {"raw": str(raw), "figure": str(figure), "steps": pred.sequence.labels(),
            "output_mean_luminance": round(float(lum.mean()), 3),
            "output_clipped_fraction": round(float((out >= 1.0).any(-1).mean()), 4)}


def print_json(result, path: str | None = None) -> None:
    """Print a study's result as JSON, and write it to ``path`` too when given."""
    text = json.dumps(result, indent=1)
    if path:
        Path(path).write_text(text + "\n")
    print(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exposure_engine.training.holdout", description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("photos", help="the folder the model's split was drawn from")
    p.add_argument("--json", help="write the result here too")
    p.add_argument("--raw", help="a real RAW file for a before/after figure")
    p.add_argument("--figure", default="docs/images/default-cr2.png")
    p.add_argument("--draws", type=int, default=1,
                   help="RAW-like versions of each held-out photo (paired scores averaged over all; the histogram "
                        "intersection is draw 0's)")
    p.add_argument("--snapshots", action="store_true",
                   help="MODEL is a run folder written with train --snapshots: score every snapshot instead")
    p.add_argument("--plot", help="with --snapshots: a PNG of validation and held-out PSNR over the iterations")
    a = p.parse_args(argv)
    if a.snapshots:
        print_json(evaluate_snapshots(a.model, a.photos, plot=a.plot), a.json)
        return 0
    res = evaluate_holdout(a.model, a.photos, draws=a.draws)
    if a.raw:
        res["raw_check"] = raw_before_after(a.model, a.raw, a.figure)
    print_json(res, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
