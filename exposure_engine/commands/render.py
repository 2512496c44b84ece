"""``exposure-engine render``: apply an edit sequence to a photo at full resolution and write the result."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "render", help="apply an edit sequence (JSON) to a photo at full resolution",
        description="Decode INPUT (camera RAW, PNG, JPEG, TIFF...) to linear light, apply the edit sequence and "
                    "write display-encoded sRGB. The output format follows OUT's extension: .jpg (8-bit), "
                    ".png (8 or 16-bit), .tif (16-bit by default, or 8). EXIF is copied, an sRGB profile embedded.")
    p.add_argument("input", metavar="INPUT", help="photo to edit")
    p.add_argument("--sequence", "-s", required=True, metavar="SEQ.json", help="edit sequence (format v1)")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output file (.jpg, .png, .tif)")
    p.add_argument("--bits", type=int, choices=(8, 16), help="bits per sample (default: 8 for JPEG/PNG, 16 TIFF)")
    p.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG quality 1-100 (default 95)")
    p.add_argument("--input-encoding", choices=("auto", "srgb", "linear"), default="auto",
                   help="how to read integer/float samples of non-RAW input: auto = embedded ICC profile, else "
                        "sRGB for integers and linear for floats (default auto)")
    p.add_argument("--max-pixels", type=float, metavar="N",
                   help="refuse inputs whose header declares more pixels (default 300e6)")
    p.add_argument("--overwrite", action="store_true", help="allow OUT to be the input file itself")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CLIError
    from ..imageio import ImageReadError, ImageWriteError, load_photo, output_format, save_image
    from ..sequence import EditSequence, SequenceError

    src, out = Path(args.input), Path(args.output)
    # Everything that can be checked without decoding is checked first: a bad flag costs no decode time.
    try:
        sequence = EditSequence.load(args.sequence)
    except SequenceError as e:
        raise CLIError(f"bad edit sequence: {e}") from None
    try:
        fmt, bits = output_format(out, args.bits)
    except ImageWriteError as e:
        raise CLIError(str(e)) from None
    if not 1 <= args.quality <= 100:
        raise CLIError(f"--quality must be 1..100, got {args.quality}")
    if args.max_pixels is not None and args.max_pixels <= 0:
        raise CLIError(f"--max-pixels must be positive, got {args.max_pixels:g}")
    out_dir = out.parent if str(out.parent) else Path(".")
    if not out_dir.is_dir():
        raise CLIError(f"{out}: the folder {out_dir} does not exist")
    if out.exists() and src.exists() and out.resolve() == src.resolve() and not args.overwrite:
        raise CLIError(f"{out}: is the input file; pass --overwrite to replace it")
    try:
        photo = load_photo(src, input_encoding=args.input_encoding,
                           max_pixels=None if args.max_pixels is None else int(args.max_pixels))
    except ImageReadError as e:
        raise CLIError(f"cannot read {e}") from None
    for note in photo.warnings:
        print(f"exposure-engine render: warning: {photo.path}: {note}", file=sys.stderr)

    from ..renderer import render

    display = render(photo.pixels, sequence, out=photo.pixels)   # in place: no second full-size buffer
    try:
        notes = save_image(out, display, bits=bits, quality=args.quality, exif=photo.exif)
    except ImageWriteError as e:
        raise CLIError(str(e)) from None
    for note in notes:
        print(f"exposure-engine render: warning: {out}: {note}", file=sys.stderr)
    w, h = photo.size
    print(f"{out}: {w}x{h} {bits}-bit {fmt}, {len(sequence.steps)} step(s) from {args.sequence}")
    return 0
