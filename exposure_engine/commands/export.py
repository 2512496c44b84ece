"""``exposure-engine export SEQ.json --format xmp|dtstyle|cube -o PATH``: offline, no daemon needed."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="turn an edit sequence into a darktable XMP / style or a .cube LUT (offline)",
        description="Export an edit sequence (format v1 JSON) for another program. The main file goes to -o; "
                    "files it refers to (the .cube of --mode exact) are written beside it.",
        epilog="examples:\n"
               "  exposure-engine export edit.json --format dtstyle -o exposure.dtstyle\n"
               "  exposure-engine export edit.json --format xmp --mode exact -o photo.jpg.xmp   # + exposure.cube\n"
               "  exposure-engine export edit.json --format cube -o look.cube",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sequence", metavar="SEQ.json", help="edit sequence (format v1)")
    add_export_options(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="main output file")
    p.set_defaults(func=run)


def add_export_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    """--format/--mode/--name/--input-kind, shared with ``predict``."""
    p.add_argument("--format", required=required, choices=["xmp", "dtstyle", "cube"] + ([] if required else ["json"]),
                   default=None if required else "json",
                   help="xmp: darktable sidecar; dtstyle: darktable style; cube: 3D LUT" +
                        ("" if required else "; json: the edit sequence (default)"))
    p.add_argument("--mode", choices=["native", "exact"], default="native",
                   help="darktable formats: native (one editable module per step, default) or exact "
                        "(one lut3d module reading a .cube written beside the main file)")
    p.add_argument("--name", metavar="NAME",
                   help="style name and stem of extra files (default: the output file's stem)")
    p.add_argument("--input-kind", choices=["raster", "raw"], default="raster",
                   help="darktable formats: the kind of photo they will be applied to (default raster)")


def export_to(sequence, fmt: str, mode: str, output: Path, *, name: str | None = None,
              input_kind: str = "raster", raw_white_balance=None) -> list[Path]:
    """Export ``sequence`` and write the files: the main one at ``output``, the others beside it under the
    names the main file refers to. ``raw_white_balance``: for an XMP of a raw, the camera's as-shot multipliers
    (see :func:`exposure_engine.exporters.export`). Returns the written paths, main first. Raises CLIError."""
    from ..cli import CLIError
    from ..daemon.protocol import ProtocolError
    from ..daemon.server import export_files

    name = name or output.name.split(".")[0] or "exposure"
    try:
        files = export_files(sequence, fmt, mode, name, input_kind, raw_white_balance=raw_white_balance)
    except ProtocolError as e:
        raise CLIError(e.message) from None
    return write_files(files, output)


def write_files(files: dict[str, bytes], output: Path) -> list[Path]:
    """Write exporter output: the first (main) file at ``output``, the rest by name in its folder."""
    from ..cli import CLIError

    output.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (fname, data) in enumerate(files.items()):
        path = output if i == 0 else output.parent / Path(fname).name  # never outside the folder
        try:
            path.write_bytes(data)
        except OSError as e:
            raise CLIError(f"cannot write {path}: {e.strerror}") from None
        written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    import sys

    from ..cli import CLIError
    from ..sequence import EditSequence, SequenceError

    try:
        seq = EditSequence.load(args.sequence)
    except SequenceError as e:
        raise CLIError(str(e)) from None
    paths = export_to(seq, args.format, args.mode, Path(args.output), name=args.name, input_kind=args.input_kind)
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return 0
