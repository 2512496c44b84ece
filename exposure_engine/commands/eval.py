"""``exposure-engine eval``: score a folder of outputs against a folder of targets (and optional ground truth)."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="histogram intersection of outputs vs targets; PSNR/dE vs ground truth (docs/evaluation.md)",
        description="Score finished images: the paper's histogram intersection (luminance, contrast, saturation "
                    "and their mean, in %) of the --outputs folder against the --targets folder, and with "
                    "--ground-truth the mean PSNR (dB) and CIE76 dE of each output against the ground-truth image "
                    "with the same file stem.")
    p.add_argument("--outputs", required=True, metavar="DIR", help="folder of images to score")
    p.add_argument("--targets", required=True, metavar="DIR", help="folder of images in the wanted style")
    p.add_argument("--ground-truth", metavar="DIR", help="folder of reference images paired by file stem")
    p.add_argument("--seed", type=int, default=0, help="seed of the random crops (default 0)")
    p.add_argument("--json", metavar="OUT", help="also write the scores as JSON to OUT")
    p.set_defaults(func=run)


def evaluate(outputs_dir: str, targets_dir: str, ground_truth_dir: str | None = None, seed: int = 0) -> dict:
    """The scores as a dict (what ``--json`` writes). Unreadable files are listed under ``skipped``; a folder
    with no readable image at all is an error."""
    from ..cli import CLIError
    from ..evaluation import metrics as M
    from ..evaluation.report import finite
    from ..evaluation.images import EvalInputError, load_folder

    try:
        out_paths, outs, skipped = load_folder(outputs_dir, "outputs")
        _, targets, skipped_t = load_folder(targets_dir, "targets")
    except EvalInputError as e:
        raise CLIError(str(e)) from None
    skipped += skipped_t
    if not outs:
        raise CLIError(f"no readable image in the outputs folder {outputs_dir}")
    if not targets:
        raise CLIError(f"no readable image in the targets folder {targets_dir}")
    result: dict = {"outputs": len(outs), "targets": len(targets), "seed": seed,
                    "histogram_intersection": M.histogram_intersection(outs, targets, seed).to_dict()}
    if ground_truth_dir is not None:
        try:
            gt_paths, gts, skipped_g = load_folder(ground_truth_dir, "ground-truth")
        except EvalInputError as e:
            raise CLIError(str(e)) from None
        skipped += skipped_g
        by_stem = {p.stem: img for p, img in zip(gt_paths, gts)}
        pairs, unmatched = [], []
        for p, img in zip(out_paths, outs):
            ref = by_stem.get(p.stem)
            if ref is None:
                unmatched.append(p.name)
            elif ref.shape != img.shape:
                skipped.append(_skip(p, f"{img.shape[1]}x{img.shape[0]} but its ground truth is "
                                        f"{ref.shape[1]}x{ref.shape[0]}; paired metrics need the same size"))
            else:
                pairs.append((img, ref))
        if not pairs:
            raise CLIError(f"no output has a same-sized ground-truth image with the same file stem in "
                           f"{ground_truth_dir}")
        result["paired"] = M.paired_metrics([a for a, _ in pairs], [b for _, b in pairs]).to_dict()
        result["unmatched_outputs"] = unmatched
    result["skipped"] = [s if isinstance(s, dict) else {"path": s.path, "reason": s.reason} for s in skipped]
    return finite(result)


def _skip(path, reason: str) -> dict:
    return {"path": str(path), "reason": f"{path}: {reason}"}


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..evaluation.report import markdown_table

    result = evaluate(args.outputs, args.targets, args.ground_truth, args.seed)
    for s in result["skipped"]:
        print(f"warning: skipped {s['reason']}", file=sys.stderr)
    if result.get("unmatched_outputs"):
        print(f"warning: {len(result['unmatched_outputs'])} output(s) have no ground truth with the same stem: "
              f"{', '.join(result['unmatched_outputs'][:5])}", file=sys.stderr)
    print(f"{result['outputs']} outputs vs {result['targets']} targets (seed {result['seed']})")
    print(markdown_table({"outputs": {"histogram": result["histogram_intersection"],
                                      "paired": result.get("paired")}}))
    if args.json:
        try:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2)
                fh.write("\n")
        except OSError as e:
            from ..cli import CLIError

            raise CLIError(f"cannot write {args.json}: {e.strerror or e}") from None
    return 0
