"""Exports of an edit sequence to other programs' formats.

``export(sequence, fmt, ...)`` returns the files to write, main file first: ``{file name: content}``.

* ``"xmp"``: a darktable XMP sidecar (the image's whole history), see :mod:`.darktable`;
* ``"dtstyle"``: a darktable style, applied on top of an image's history;
* ``"cube"``: a 3D LUT of the whole sequence (sRGB-encoded input), see :mod:`.cube`;
* ``"gimp"``: the layer plan the GIMP plug-in executes (``NAME.gimp-plan.json``), see :mod:`.gimp`.

darktable exports take ``mode``: ``"native"`` (one editable module per step) or ``"exact"`` (one ``lut3d``
reading ``NAME.cube``, returned beside the main file; darktable looks it up relative to its 3D LUT root folder,
preference ``plugins/darkroom/lut3d/def_path``).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..sequence import EditSequence, as_sequence

FORMATS = ("xmp", "dtstyle", "cube", "gimp")
MODES = ("native", "exact")
SUFFIX = {"xmp": ".xmp", "dtstyle": ".dtstyle", "cube": ".cube", "gimp": ".gimp-plan.json"}


def safe_name(name: str) -> str:
    """A file-name-safe version of a style name (letters, digits, ``-``, ``_``, ``.``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "exposure"


def export(sequence: EditSequence | dict | str | Path, fmt: str, mode: str = "native", name: str = "exposure",
           input_kind: str = "raster", cube_size: int | None = None,
           description: str | None = None, raw_white_balance=None) -> dict[str, bytes]:
    """Export ``sequence`` as ``fmt``; returns ``{file name: bytes}``, the main file first.

    name: the style name (dtstyle) and the stem of every file name.
    input_kind: ``"raster"`` (JPEG/PNG/TIFF: darktable's v3.0-JPEG base order) or ``"raw"`` (v3.0 order).
    raw_white_balance: for an XMP of a raw, the camera's as-shot multipliers
        (:func:`~.darktable.camera_white_balance`): pins darktable's white balance to the one the engine's input
        was developed with. Without it darktable uses its default, which is D65 (wrong colours) under its default
        "modern" chromatic adaptation.
    Raises ``ValueError`` (:class:`~exposure_engine.sequence.SequenceError` or
    :class:`~.darktable.ExportError`) naming the bad field or option.
    """
    from . import cube as cube_mod
    from . import darktable as dt

    if fmt not in FORMATS:
        raise dt.ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if mode not in MODES:
        raise dt.ExportError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if input_kind not in dt.INPUT_KINDS:
        raise dt.ExportError(f"input_kind must be one of {', '.join(dt.INPUT_KINDS)}, not {input_kind!r}")
    seq = as_sequence(sequence)
    stem = safe_name(name)
    if fmt == "gimp":
        from . import gimp

        return gimp.export(seq, mode, name)
    size = cube_size or cube_mod.DEFAULT_SIZE

    if fmt == "cube":
        return {stem + ".cube": cube_mod.sequence_to_cube(seq, size, title=name)}

    files: dict[str, bytes] = {}
    extra: dict[str, bytes] = {}
    if mode == "exact":
        cube_file = stem + ".cube"
        extra[cube_file] = cube_mod.sequence_to_cube(seq, size, title=name)
        entries = dt.exact_entries(cube_file, name)
    else:
        entries = dt.native_entries(seq)
    if raw_white_balance is not None and not (fmt == "xmp" and input_kind == "raw"):
        raise dt.ExportError("raw_white_balance only applies to an XMP of a raw (fmt 'xmp', input_kind 'raw'); "
                             "a style keeps the white balance the image already has")
    if fmt == "xmp":
        wb = dt.raw_development_entries(raw_white_balance)
        files[stem + ".xmp"] = dt.to_xmp(wb + entries, input_kind)
    else:
        desc = description if description is not None else "exposure-engine: " + "; ".join(seq.labels())
        files[stem + ".dtstyle"] = dt.to_dtstyle(entries, name, desc, input_kind)
    files.update(extra)
    return files


def write(files: dict[str, bytes], directory: str | Path) -> list[Path]:
    """Write ``export()``'s result into ``directory``; returns the paths, main file first."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for fname, data in files.items():
        p = d / fname
        p.write_bytes(data)
        out.append(p)
    return out


__all__ = ["export", "write", "safe_name", "FORMATS", "MODES"]
