"""Give an already trained model a level rule (agent/level.py), without retraining.

New runs get one from the recipe (``"level_rule": true``); this fits the same rule for a model trained before::

    python -m exposure_engine.training.add_level MODEL PHOTOS [--out FOLDER]

The brightness map is the one the model's training fitted (config.json ``training.brightness_anchor``; a model
trained without the brightness anchor cannot get one here: train it with ``level_rule`` instead). The white level
is read from the model's target photos: ``training.split.targets`` inside PHOTOS when the model was trained on a
split, else every image in PHOTOS. The contrast map needs the model's training inputs: ``training.split.train_inputs``
inside PHOTOS made RAW-like again as its training made them (the run's seed and ``training.unprocess_ranges``); a
model trained on other inputs gets a rule without one. The rule is written into config.json (into a copy of the
folder with ``--out``); the weights are not touched.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np


def fit_for_model(config: dict, photos: Path) -> dict:
    """The ``"level"`` entry for a model of config ``config`` whose targets are in ``photos``."""
    from ..agent.level import LevelRule
    from . import data as D
    from .anchor import BrightnessAnchor
    from .unprocess import UnprocessRanges

    training = config.get("training", {})
    if not training.get("brightness_anchor"):
        raise ValueError("the model's config has no training.brightness_anchor (it was trained without the "
                         "brightness anchor): train it with the recipe option \"level_rule\": true instead")
    bmap = BrightnessAnchor.from_dict(training["brightness_anchor"])
    names = training.get("split", {}).get("targets")
    files = [photos / n for n in names] if names else D.list_images(photos, kinds=("photo", "tiff"))
    if not files:
        raise ValueError(f"{photos}: no target photos")
    frames = np.stack([D.frame_proxy(D.load_target(f), "target") for f in files])
    inputs = None
    input_names = training.get("split", {}).get("train_inputs")
    if training.get("unprocess") and input_names:
        ranges = UnprocessRanges.from_dict(training.get("unprocess_ranges", {}))
        inputs = np.stack([D.frame_proxy(D.load_input(photos / n, unprocess_seed=int(training.get("seed", 0)),
                                                      ranges=ranges), "input") for n in input_names])
    return LevelRule.fit(bmap, frames, inputs).to_dict()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exposure_engine.training.add_level",
                                description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path, help="a model folder (config.json + policy.pt)")
    p.add_argument("photos", type=Path, help="the folder of the model's target photos (or the split's folder)")
    p.add_argument("--out", type=Path, help="write a copy of the model folder here instead of changing it")
    args = p.parse_args(argv)
    cfg_path = args.model / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
        level = fit_for_model(config, args.photos)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folder = args.model
    if args.out is not None:
        shutil.copytree(args.model, args.out, dirs_exist_ok=True)
        folder = args.out
    config["level"] = level
    from ..agent.policy import atomic_write

    atomic_write(folder / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    print(f"{folder}: level rule written (targets' white level {level['white_level']:+.3f} stops, "
          f"{'with' if 'contrast_map' in level else 'without'} a contrast map)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
