"""Choose among runs (seeds) of one recipe by validation, never by held-out photos.

A run's own ``val_psnr`` scores its weights on one RAW-like draw of the training photos made with the run's seed,
so two runs are scored on different draws (one draw of 78 photos moves the mean by several tenths of a dB). This
scores every model on the same draws::

    python -m exposure_engine.training.select MODEL [MODEL ...] PHOTOS [--draws 5] [--set targets] [--json FILE]

For each model: the trainer's validation PSNR (:func:`~exposure_engine.training.loop.validation_psnr`: mean edits on
64x64 proxies against the originals) on the training photos of its split (``training.split.train_inputs`` in
PHOTOS; every model must share the split), RAW-like draws with seeds 0 .. draws-1, as the model predicts (its level
rule applied when it has one) and without the rule. The first in ``ranking`` has the best mean.

``--set targets`` scores the split's target half instead, made RAW-like the same way: photos the policy never saw
as inputs, more of them than the held-out ones. Their finished versions trained the critic and fitted the level
rule's target side, so they are not held out; but the rule's maps were fitted on the training inputs, whose own
validation flatters a change to a map (the training photos' brightness spread less than the other photos': a rule
pulled toward them scores better there only), and every run's own map was fitted on them: ``train --seeds`` ranks
its runs on the targets for that reason (docs/training.md, "Several seeds at once").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


SETS = ("train_inputs", "targets")
DRAWS = 5  # RAW-like draws a model is scored on by default (this module, train --seeds, bench best-targets:)


def draws_of(files: list[Path], draws: int) -> list:
    """``draws`` RAW-like draws (seeds 0 .. draws-1) of the finished photos ``files``, each paired with the photos
    themselves (:func:`~exposure_engine.training.data.validation_pairs`); each file is read once."""
    from . import data as D

    return draws_of_images(*D.read_finished_photos(files), draws)


def draws_of_images(photos: list[np.ndarray], names: list[str], draws: int) -> list:
    """:func:`draws_of` for finished photos in memory (display sRGB), each keyed by its name as its file would be."""
    from . import data as D

    if draws < 1:
        raise ValueError(f"draws must be >= 1, not {draws}")
    return [D.validation_pairs_of(photos, names, seed=s) for s in range(draws)]


def score_policies(policies: dict, pairs: list, without_rule: bool = True) -> list[dict]:
    """``{label: Policy}`` scored on the same validation pairs (:func:`draws_of`): one row per policy with its mean
    validation PSNR as it predicts (level rule included), each draw's, and (``without_rule``) the mean without its
    rule, a second pass over the pairs. Policies are left as they came."""
    from .loop import validation_psnr

    rows = []
    for label, pol in policies.items():
        with_rule = [validation_psnr(pol, p) for p in pairs]
        row = {"model": label, "sha256": pol.content_hash, "level_rule": pol.level_rule is not None,
               "val_psnr": round(float(np.mean(with_rule)), 3), "per_draw": [round(v, 3) for v in with_rule]}
        if without_rule:
            rule, pol.level_rule = pol.level_rule, None
            try:
                without = [validation_psnr(pol, p) for p in pairs] if rule is not None else with_rule
            finally:
                pol.level_rule = rule
            row["val_psnr_without_rule"] = round(float(np.mean(without)), 3)
        rows.append(row)
    return rows


def score(models: list[str | Path], photos: str | Path, draws: int = DRAWS, which: str = "train_inputs") -> dict:
    from ..agent.policy import Policy

    if which not in SETS:
        raise ValueError(f"the set is one of {', '.join(SETS)}, not {which!r}")
    pols = [Policy.load(m) for m in models]
    splits = [p.config.get("training", {}).get("split", {}).get(which) for p in pols]
    if not splits[0] or any(s != splits[0] for s in splits):
        raise ValueError("every model must have been trained on the same split (train --split-from)")
    files = [Path(photos) / n for n in splits[0]]
    rows = score_policies(dict(zip(map(str, models), pols)), draws_of(files, draws))
    return {"set": which, "n_photos": len(files), "draws": draws, "models": rows,
            "ranking": [r["model"] for r in sorted(rows, key=lambda r: -r["val_psnr"])]}


def main(argv: list[str] | None = None) -> int:
    from .holdout import print_json

    p = argparse.ArgumentParser(prog="python -m exposure_engine.training.select", description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="model folders, then the photos folder of their split")
    p.add_argument("--draws", type=int, default=DRAWS)
    p.add_argument("--set", choices=SETS, default="train_inputs", help="the split's photos to score (default: "
                   "the training inputs; targets: the target half)")
    p.add_argument("--json", help="write the result here too")
    a = p.parse_args(argv)
    if len(a.models) < 2:
        p.error("give at least one model and the photos folder")
    try:
        res = score(a.models[:-1], a.models[-1], a.draws, a.set)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_json(res, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
