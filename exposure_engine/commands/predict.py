"""``exposure-engine predict IMAGE``: the edit sequence the policy picks for a photo (no rendering).

Without ``--server`` the model runs in this process (nothing to start, nothing left running). With
``--server URL`` the daemon at URL predicts; ``--start-daemon`` starts one there first if none answers (it
exits by itself after 10 idle minutes). Either way the photo is reduced here to the same 256 px linear
proxy, so both paths give the same sequence (the model's mean edit, or the dropout sample of a ``--seed``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..devices import DEVICE_CHOICES
from .export import add_export_options


def register(sub) -> None:
    from ..daemon.protocol import DEFAULT_URL

    p = sub.add_parser(
        "predict", help="print or export the edit sequence the model picks for a photo",
        description="Predict an edit sequence for IMAGE (RAW, TIFF, PNG, JPEG...). Runs the model in-process, "
                    "or asks a daemon with --server / --start-daemon.",
        epilog="examples:\n"
               "  exposure-engine predict photo.CR2                         # JSON on stdout\n"
               "  exposure-engine predict photo.jpg --variants 3 --seed 7 -o edit.json   # edit-1.json ...\n"
               "  exposure-engine predict photo.CR2 --format xmp -o photo.CR2.xmp\n"
               f"  exposure-engine predict photo.jpg --start-daemon          # uses/starts {DEFAULT_URL}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE")
    add_export_options(p, required=False)
    p.add_argument("-o", "--output", metavar="PATH",
                   help="output file (default for json: stdout); with --variants N: PATH-1, PATH-2, ...")
    p.add_argument("--server", metavar="URL", help="ask the daemon at URL instead of loading the model here")
    p.add_argument("--start-daemon", action="store_true",
                   help=f"start a daemon at --server (default {DEFAULT_URL}) if none answers, then use it")
    p.add_argument("--keys", metavar="DIR", help="CURVE client keys for a daemon started with --keys")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="daemon reply timeout (default 30)")
    p.add_argument("--style", metavar="NAME", help="model folder name (default: 'default')")
    p.add_argument("--models", metavar="DIR", help="in-process: an extra folder of model folders, searched first")
    p.add_argument("--untrained", action="store_true",
                   help="in-process: use an untrained deterministic policy (for trying the pipeline)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="in-process device")
    p.add_argument("--variants", type=int, default=1, metavar="N", help="N variants (dropout samples)")
    p.add_argument("--seed", type=int, metavar="S", help="a reproducible dropout sample (variant i uses S + i); "
                   "without --seed and --variants: the model's mean edit (no dropout, deterministic)")
    p.add_argument("--input-encoding", choices=["auto", "srgb", "linear"], default="auto",
                   help="how non-RAW pixels are encoded (default: from the file)")
    p.set_defaults(func=run)


def variant_path(path: Path, i: int, n: int) -> Path:
    """``edit.json`` -> ``edit-2.json`` for variant 2 of several; unchanged when there is one."""
    return path if n == 1 else path.with_name(f"{path.stem}-{i + 1}{path.suffix}")


def predict_sequences(args: argparse.Namespace) -> list:
    """The predicted :class:`EditSequence` list for ``args`` (in-process or via the daemon). Raises CLIError."""
    from ..cli import CLIError, device_arg
    from ..daemon.protocol import DEFAULT_URL, PROXY_SIDE
    from ..imageio import ImageReadError, load_proxy

    if args.variants < 1 or args.variants > 16:
        raise CLIError(f"--variants must be 1..16, not {args.variants}")
    try:
        proxy = load_proxy(args.image, PROXY_SIDE, args.input_encoding)
    except ImageReadError as e:
        raise CLIError(str(e)) from None

    if args.server or args.start_daemon:
        from ..daemon.client import Client, DaemonError, DaemonUnavailable, ensure_daemon

        url = args.server or DEFAULT_URL
        try:
            client = ensure_daemon(url, keys=args.keys) if args.start_daemon else Client(url, keys=args.keys)
            client.timeout = args.timeout
            with client:
                preds = client.predict(proxy, variants=args.variants, seed=args.seed, style=args.style)
        except (DaemonUnavailable, DaemonError) as e:
            raise CLIError(str(e)) from None
        return [p.sequence for p in preds]

    from ..daemon.protocol import ProtocolError
    from ..daemon.styles import Styles, model_roots
    device = device_arg(args.device)
    policies = {}
    if args.untrained:
        from ..agent.policy import Policy

        policies["untrained"] = Policy.random(seed=0)
    styles = Styles(model_roots(Path(args.models) if args.models else None), device, policies)
    try:
        _, policy = styles.get(args.style or ("untrained" if args.untrained else None))
    except ProtocolError as e:
        raise CLIError(e.message) from None
    return [p.sequence for p in policy.predict(proxy, variants=args.variants, seed=args.seed)]


def run(args: argparse.Namespace) -> int:
    import sys

    from ..cli import CLIError
    from .export import export_to

    if args.format != "json" and not args.output:
        raise CLIError(f"--format {args.format} needs -o PATH (it writes files)")
    sequences = predict_sequences(args)
    input_kind, raw_wb = args.input_kind, None
    if args.format == "xmp":
        from ..imageio.raw import is_raw_path

        if is_raw_path(args.image):
            # An XMP is the raw's whole history: pin darktable's white balance to the camera's, which is what the
            # engine's input was developed with (darktable's default gave mean dE 22, docs/darktable.md).
            from ..exporters.darktable import camera_white_balance

            input_kind, raw_wb = "raw", camera_white_balance(args.image)
    n = len(sequences)
    for i, seq in enumerate(sequences):
        how = f"seed {seq.meta['seed']}" if "seed" in seq.meta else "mean edit"
        print(f"variant {i + 1} ({how}): " + "; ".join(seq.labels()), file=sys.stderr)
        if args.format == "json":
            if args.output:
                path = variant_path(Path(args.output), i, n)
                path.parent.mkdir(parents=True, exist_ok=True)
                seq.save(path)
                print(f"wrote {path}", file=sys.stderr)
            continue
        out = variant_path(Path(args.output), i, n)
        paths = export_to(seq, args.format, args.mode, out, name=args.name and (args.name if n == 1 else
                          f"{args.name}-{i + 1}"), input_kind=input_kind,
                          raw_white_balance=raw_wb)
        print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    if args.format == "json" and not args.output:
        import json

        docs = [s.to_dict() for s in sequences]
        print(json.dumps(docs[0] if n == 1 else docs, indent=2))
    return 0
