"""``exposure-engine train``: train a policy on unpaired folders of inputs and target photos (docs/training.md)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..devices import DEVICE_CHOICES


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train an agent on your photos (unpaired inputs and targets)",
        description="Train an Exposure agent. Inputs: RAW files, linear 16-bit TIFFs, or ordinary photos made "
                    "RAW-like with --unprocess. Targets: finished photos in the style to learn. Writes a model "
                    "folder (policy.pt, config.json, history.json, report/*.png, checkpoint.pt). "
                    "Several processes: torchrun --nproc-per-node N -m exposure_engine.cli train ...")
    p.add_argument("--inputs", type=Path, help="folder of training inputs")
    p.add_argument("--targets", type=Path, help="folder of target photos (the style)")
    p.add_argument("--split-from", type=Path, metavar="DIR",
                   help="instead of --inputs/--targets: split one folder of photos by --split-seed into an input "
                        "half (unprocessed, minus --holdout photos kept for evaluation) and a target half")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--holdout", type=int, default=20, help="input-half photos kept out of training (--split-from)")
    p.add_argument("--no-validation", action="store_true",
                   help="with --split-from: save the last weights instead of those that best reproduce the input "
                        "half's own finished photos (docs/training.md: model selection)")
    p.add_argument("--snapshots", action="store_true",
                   help="also keep the weights of every monitor step as model folders in OUT/snapshots/")
    p.add_argument("--out", type=Path, required=True, help="model folder to write, e.g. models/mystyle")
    p.add_argument("--recipe", default="cpu-fast", help="named configuration: cpu-fast (default) or paper")
    p.add_argument("--unprocess", action="store_true", help="make ordinary input photos RAW-like (Brooks et al.)")
    p.add_argument("--minutes", type=float, help="stop (and save) after this much wall time")
    p.add_argument("--iterations", type=int, help="total iterations (default: the recipe's); sets the lr schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="train seeds SEED .. SEED+N-1 side by side, one process each (cpu-fast uses one core per "
                        "run), and keep the one that best redevelops RAW-like draws of the target photos (each "
                        "run in OUT/seeds/)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    p.add_argument("--checkpoint-every", type=int, default=200, metavar="N")
    p.add_argument("--name", help="model name (default: the output folder's name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="where the networks train: auto (default) = a CUDA GPU when torch sees one, else the CPU")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # With more busy threads than cores, OpenMP's spin-waiting made a 2-thread step ~10x slower than a 1-thread
    # one on the shared CI machine; passive waiting removes that (must be set before torch is imported).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..cli import CLIError, device_arg
    from ..training import data as D
    from ..training import recipes

    try:
        recipe = recipes.get(args.recipe)
    except KeyError as e:
        raise CLIError(str(e.args[0])) from None
    extra: dict = {}
    unprocess = args.unprocess
    validation_files: list[Path] = []
    try:
        if args.split_from is not None:
            if args.inputs or args.targets:
                raise CLIError("--split-from replaces --inputs and --targets; give one or the other")
            files = D.list_images(args.split_from, kinds=("photo",))
            if len(files) < 2 * args.holdout + 4:
                raise CLIError(f"{args.split_from}: {len(files)} photos are too few to split with --holdout {args.holdout}")
            split = D.split_photos(files, args.split_seed, args.holdout)
            inputs, targets = split["train_inputs"], split["targets"]
            unprocess = True  # the input half is made of finished photos
            # Both halves are finished photos of one look, so the input half's own originals are examples of the
            # style: paired data for choosing among the run's weights (the gradients still see no pair).
            validation_files = [] if args.no_validation else list(inputs)
            extra["split"] = {"from": str(args.split_from), "seed": args.split_seed,
                              **{k: [f.name for f in v] for k, v in split.items()}}
        else:
            if args.inputs is None or args.targets is None:
                raise CLIError("give --inputs and --targets (or --split-from)")
            inputs = D.list_images(args.inputs)
            targets = D.list_images(args.targets, kinds=("photo", "tiff"))
    except D.DataError as e:
        raise CLIError(str(e)) from None
    if not inputs:
        raise CLIError(f"{args.inputs}: no images found")
    if not targets:
        raise CLIError(f"{args.targets}: no target photos found")
    if unprocess:
        from ..training.unprocess import UnprocessRanges

        extra["unprocess_ranges"] = UnprocessRanges().to_dict()
    if args.iterations is not None and args.iterations < 1:
        raise CLIError("--iterations must be >= 1")
    device = device_arg(args.device)
    if args.seeds < 1:
        raise CLIError("--seeds must be >= 1")
    validation = None
    if validation_files and args.seeds == 1:
        try:
            validation = D.validation_pairs(validation_files, seed=args.seed)
        except D.DataError as e:
            raise CLIError(str(e)) from None

    from ..training.loop import TrainConfig, train

    cfg = TrainConfig(inputs=inputs, targets=targets, out=args.out, recipe=recipe, unprocess=unprocess,
                      minutes=args.minutes, iterations=args.iterations, seed=args.seed, resume=args.resume,
                      checkpoint_every=args.checkpoint_every, name=args.name, progress=not args.no_progress,
                      device=device, extra=extra, validation=validation, snapshots=args.snapshots)
    try:
        if args.seeds > 1:
            from ..training.seeds import SeedsError, train_seeds

            try:
                summary = train_seeds(cfg, args.seeds, validation_files)
            except SeedsError as e:
                raise CLIError(str(e), code=1) from None
            except ValueError as e:  # e.g. started under torchrun
                raise CLIError(str(e)) from None
        else:
            summary = train(cfg)
    except D.DataError as e:
        raise CLIError(str(e)) from None
    # One write of the whole line: under torchrun every rank prints its summary to the same pipe at about the same
    # moment, and print()'s separate writes of text and newline could interleave two ranks' lines.
    line = json.dumps(summary) + "\n"
    sys.stdout.flush()
    try:
        os.write(sys.stdout.fileno(), line.encode())
    except (AttributeError, OSError, ValueError):  # a stdout without a file descriptor (captured, redirected in-process)
        sys.stdout.write(line)
    return 0
