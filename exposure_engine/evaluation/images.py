"""Reading folders of finished (display-encoded) images for evaluation.

Files are decoded by :mod:`exposure_engine.imageio` (ICC profiles, 16-bit, EXIF orientation) to linear sRGB
primaries and re-encoded with the sRGB curve, so a display image in another colour space is compared in sRGB.
RAW files are refused: an output or target is a finished picture, not sensor data.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}


class EvalInputError(ValueError):
    """An evaluation input that cannot be used; the message names the file or folder and the reason."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def list_images(folder: str | os.PathLike, what: str) -> list[Path]:
    """Image files directly in ``folder``, sorted by name. ``what`` names the folder's role in errors."""
    folder = Path(folder)
    if not folder.exists():
        raise EvalInputError(f"{what} folder {folder} does not exist")
    if not folder.is_dir():
        raise EvalInputError(f"{what} {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise EvalInputError(f"{what} folder {folder} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    return files


def load_display(path: str | os.PathLike) -> np.ndarray:
    """A finished image -> ``(H, W, 3)`` float32 display sRGB in [0, 1]. Raises :class:`EvalInputError`."""
    from ..imageio import ImageReadError, is_raw_path, linear_to_srgb, load_image

    if is_raw_path(path):
        raise EvalInputError(f"{path}: a RAW file is not a finished image; develop it first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # notes such as "alpha dropped" do not change the statistics we need
            linear = load_image(path)
    except ImageReadError as e:
        raise EvalInputError(str(e)) from None
    return linear_to_srgb(linear)


def load_folder(folder: str | os.PathLike, what: str) -> tuple[list[Path], list[np.ndarray], list[Skipped]]:
    """Every readable image of a folder; unreadable files are returned as :class:`Skipped`, not raised, so one
    broken file does not stop an evaluation."""
    paths, images, skipped = [], [], []
    for p in list_images(folder, what):
        try:
            images.append(load_display(p))
            paths.append(p)
        except EvalInputError as e:
            skipped.append(Skipped(str(p), str(e)))
    return paths, images, skipped
