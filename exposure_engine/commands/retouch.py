"""``exposure-engine retouch INPUT... -o DIR``: the main job (see docs/retouch.md).

A thin shell over :mod:`exposure_engine.retouch`; heavy modules (torch, numba) are imported inside ``run``.
"""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "retouch", help="retouch photos with a trained agent (writes images + edit sequences)",
        description="Retouch photos: each one's 64x64 proxy goes through the policy, which picks a short edit "
                    "sequence; the sequence is rendered at full resolution and written beside its JSON.",
        epilog="examples:\n"
               "  exposure-engine retouch --example -o out/\n"
               "  exposure-engine retouch shoot/*.CR2 -o out/ --steps\n"
               "  exposure-engine retouch photo.jpg -o out/ --variants 4 --seed 7 --format jpeg",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="photo files (RAW, TIFF, PNG, JPEG...), folders or glob patterns")
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (created if needed; required)")
    p.add_argument("--example", action="store_true",
                   help="also retouch the bundled example photo (a RAW-like linear 16-bit TIFF)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", metavar="PATH", help="model folder or weights file (default: the 'default' style)")
    g.add_argument("--style", metavar="NAME", help="a model folder name under models/ (see --list-styles)")
    p.add_argument("--list-styles", action="store_true", help="print the installed styles and exit")
    p.add_argument("--format", choices=["tiff", "png", "jpeg"], default="tiff",
                   help="output image format: 16-bit TIFF (default), 16-bit PNG or 8-bit JPEG")
    p.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG quality 1-100 (default 95)")
    p.add_argument("--variants", type=int, default=1, metavar="N",
                   help="N dropout samples per photo (the paper's one-to-many): <stem>.v1.tif ... <stem>.vN.tif")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="a reproducible dropout sample (variant i uses S + i). Without --seed and --variants each "
                        "photo gets the model's mean edit (no dropout: deterministic); with --variants and no "
                        "--seed a fresh seed per photo, recorded in its JSON")
    p.add_argument("--steps", action="store_true",
                   help="also write <stem>.steps.png: each step's proxy, filter, parameters and probabilities")
    p.add_argument("--input-encoding", choices=["auto", "srgb", "linear"], default="auto",
                   help="how non-RAW pixels are encoded: auto (embedded ICC profile, else sRGB for integer "
                        "files and linear for float ones), srgb, or linear (RAW files are always linear)")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders (and ** in globs)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip the photo)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import retouch as R
    from ..cli import CLIError

    if args.list_styles:
        styles = R.available_styles()
        print("\n".join(styles) if styles else "(no models installed; looked in "
              + ", ".join(map(str, R.model_roots())) + ")")
        return 0
    if not args.output:
        raise CLIError("no output folder (-o DIR)")
    if not args.inputs and not args.example:
        raise CLIError("no input photos (give files, folders or globs, or --example)")
    if args.variants < 1:
        raise CLIError(f"--variants must be at least 1, not {args.variants}")
    if not 1 <= args.quality <= 100:
        raise CLIError(f"--quality must be 1..100, not {args.quality}")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"{out_dir}: exists and is not a folder")

    encoding = None if args.input_encoding == "auto" else args.input_encoding
    paths, problems = R.expand_inputs(args.inputs, recursive=args.recursive)
    items = [R.InputItem(p, encoding) for p in paths]
    if args.example:
        if not R.EXAMPLE_IMAGE.is_file():
            raise CLIError(f"the bundled example {R.EXAMPLE_IMAGE} is missing from this installation")
        if all(p.resolve() != R.EXAMPLE_IMAGE.resolve() for p in paths):
            items.insert(0, R.InputItem(R.EXAMPLE_IMAGE))
    for prob in problems:
        print(f"exposure-engine retouch: {prob}", file=sys.stderr)
    if not items:
        raise CLIError("none of the inputs named a photo", code=1)

    from ..agent.policy import ModelError

    try:
        policy = R.load_policy(args.model, args.style)
    except (R.ModelNotFound, ModelError) as e:
        raise CLIError(str(e)) from None

    import torch

    # One 64x64 proxy is far too little work to share between threads: on a busy 2-core machine two torch
    # threads spin-wait and took ~15x the CPU time of one (docs/retouch.md). The renderer has its own threads.
    torch.set_num_threads(1)
    opts = R.Options(out_dir=out_dir, format=args.format, variants=args.variants, seed=args.seed,
                     steps=args.steps, overwrite=args.overwrite, jpeg_quality=args.quality)
    results = R.retouch_batch(items, policy, opts, progress=not args.quiet and sys.stderr.isatty(),
                              report=lambda m: print(m, file=sys.stderr))
    print(f"{R.summary(results)} -> {out_dir}/ (model {policy.name}, {policy.content_hash[:12]})"
          + (f"; {len(problems)} input argument(s) matched nothing" if problems else ""), file=sys.stderr)
    failed = any(r.status == "failed" for r in results) or bool(problems)
    return 1 if failed else 0
