"""``exposure-engine bench quality``: agent vs baselines vs the ceiling on hidden styles (docs/evaluation.md)."""
from __future__ import annotations

import argparse

from ..devices import DEVICE_CHOICES


def register(sub) -> None:
    p = sub.add_parser(
        "quality", help="agent vs baselines vs ceiling on hidden artist styles (histogram intersection, PSNR, dE)",
        description="Split a photo folder into RAW-like inputs and a disjoint target half, apply each hidden style "
                    "to the targets, train (or load) a policy per style and score it with every baseline and the "
                    "style's own renders (the ceiling), and with the exposure oracle (the style's own render, "
                    "exposed by the best rule from the input's brightness, a paired reference) and the unpaired "
                    "reference (the style's own render with the input's colour, as bright as the unpaired map of "
                    "input to target brightness says: about where a faithful unpaired agent lands). "
                    "Writes results.json, results.md and a contact sheet per style under --out.")
    p.add_argument("--photos-dir", required=True, metavar="DIR", help="folder of finished photos (JPEG/PNG/TIFF)")
    p.add_argument("--out", required=True, metavar="DIR", help="where results and contact sheets go")
    p.add_argument("--photos", type=int, metavar="N", help="use only the first N photos (sorted by name)")
    p.add_argument("--styles", default="all", help="comma-separated style names, or 'all' (default)")
    p.add_argument("--test", type=int, metavar="N", help="held-out test inputs (default 8; not with --folds)")
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="K-fold cross-validation of the input half: each fold's inputs are scored with a policy "
                        "trained on the other folds' inputs (OUT/STYLE/fold-F/), and every method on all folds "
                        "together: about half the folder instead of --test images, for a less noisy set-level "
                        "metric. The last fold is the ordinary bench with --test = its size. {fold} in model: and "
                        "best: paths stands for the fold")
    p.add_argument("--fold", type=int, metavar="F",
                   help="with --folds: run fold F only (0..K-1), as an ordinary bench (e.g. one process per fold, "
                        "then --trainer 'model:RUNS/fold-{fold}/{style}/model' pools them)")
    p.add_argument("--size", type=int, default=384, help="long edge photos are reduced to (default 384 px)")
    p.add_argument("--minutes", type=float, default=1.0, help="training budget per style (default 1)")
    p.add_argument("--trainer", default="random",
                   help="loop (train with the training loop, recipe cpu-fast; loop:RECIPE for another), random "
                        "(untrained policy: a plumbing check, the default), none (baselines only) or model:PATH "
                        "(an existing model folder, e.g. models/default; {style} in PATH stands for each style's "
                        "name) or best:GLOB (of the model folders matching GLOB, e.g. 'runs/s*/{style}/model', the "
                        "one with the best validation PSNR; needs --validate) or best-targets:GLOB (the one that "
                        "best develops RAW-like draws of the style's targets back to them, as train --seeds ranks)")
    p.add_argument("--seed", type=int, default=0,
                   help="the split, the RAW-like draws and the metric's patches (and the training, unless "
                        "--train-seed)")
    p.add_argument("--train-seed", type=int, metavar="S",
                   help="--trainer loop/random: the training run's own seed (initialisation, sampling); the data "
                        "stay those of --seed, so runs with different training seeds can be compared and chosen "
                        "among (default: --seed)")
    p.add_argument("--resume", action="store_true",
                   help="--trainer loop: continue each style's training from OUT/STYLE/model/checkpoint.pt (after a "
                        "kill, or to extend a run stopped by --minutes); the data are made again, identically")
    p.add_argument("--validate", type=int, default=0, metavar="N",
                   help="--trainer loop: give the run the first N training inputs with the style's own renders of "
                        "them, to choose among its weights (best validation PSNR; the last weights are scored "
                        "too, as agent_last_weights). Default 0: unpaired only")
    p.add_argument("--snapshots", action="store_true",
                   help="--trainer loop: keep the weights of every monitor step (OUT/STYLE/model/snapshots/)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="where --trainer loop trains: auto (default) = a CUDA GPU when torch sees one, else the CPU")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..cli import CLIError, device_arg
    from ..evaluation import styles as S
    from ..evaluation.benchmark import BenchConfig
    from ..evaluation.benchmark import run as run_bench
    from ..evaluation.images import EvalInputError

    names = list(S.STYLES) if args.styles == "all" else [s.strip() for s in args.styles.split(",") if s.strip()]
    unknown = [n for n in names if n not in S.STYLES]
    if unknown:
        raise CLIError(f"--styles: unknown style(s) {', '.join(unknown)}; known: {', '.join(S.STYLES)}")
    if args.size < 64:
        raise CLIError(f"--size must be at least 64 px (the metric's 64x64 patches), got {args.size}")
    device = device_arg(args.device)
    if args.validate < 0:
        raise CLIError(f"--validate must be >= 0, got {args.validate}")
    if args.folds and args.test is not None:
        raise CLIError("--test and --folds exclude each other: with --folds every fold is tested in turn")
    if args.fold is not None and not args.folds:
        raise CLIError("--fold needs --folds K")
    if args.folds < 0 or args.folds == 1:
        raise CLIError(f"--folds must be 0 (no cross-validation) or at least 2, got {args.folds}")
    cfg = BenchConfig(photos_dir=Path(args.photos_dir), out_dir=Path(args.out), styles=names, n_photos=args.photos,
                      n_test=8 if args.test is None else args.test, size=args.size, minutes=args.minutes,
                      seed=args.seed, train_seed=args.train_seed, trainer=args.trainer, device=device,
                      resume=args.resume, validate=args.validate, snapshots=args.snapshots, folds=args.folds,
                      fold=args.fold)
    try:
        results = run_bench(cfg)
    except EvalInputError as e:
        raise CLIError(str(e)) from None
    print((Path(args.out) / "results.md").read_text())
    return 0 if results["styles"] else 1
