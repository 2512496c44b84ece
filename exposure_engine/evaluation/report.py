"""Result tables (markdown) and contact sheets (PNG) for evaluations and the quality benchmark."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

HEADER = "| method | luminance % | contrast % | saturation % | mean % | PSNR dB | dE76 |"
RULE = "|---|---:|---:|---:|---:|---:|---:|"


def _num(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def table_row(name: str, histogram: dict, paired: dict | None, spread: dict | None = None) -> str:
    """One markdown row from ``HistogramScores.to_dict()``, ``PairedScores.to_dict()`` (or None) and optionally
    the bootstrap standard deviations of the histogram scores (shown as "71.3 ± 2.1")."""
    p = paired or {}

    def h(k: str) -> str:
        return _num(histogram[k]) + (f" ± {spread[k]:.1f}" if spread else "")

    return (f"| {name} | {h('luminance')} | {h('contrast')} | {h('saturation')} | {h('mean')} | "
            f"{_num(p.get('psnr'), 2)} | {_num(p.get('delta_e'), 2)} |")


def markdown_table(methods: dict[str, dict]) -> str:
    """``{method: {"histogram": {...}, "paired": {...} | None, "histogram_sd": {...} (optional)}}`` -> a markdown
    table, rows in the given order."""
    rows = [HEADER, RULE] + [table_row(name, m["histogram"], m.get("paired"), m.get("histogram_sd"))
                             for name, m in methods.items()]
    return "\n".join(rows)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(img, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], column_titles: Sequence[str], *, tile_width: int = 192,
                  gap: int = 4, title_height: int = 22) -> np.ndarray:
    """A grid of display sRGB images -> ``(H, W, 3)`` uint8 RGB.

    rows: one list per row of ``(h, w, 3)`` float images in [0, 1] (all columns of a row usually the same photo);
    each tile is area-resized to ``tile_width`` wide, a row is as tall as its tallest tile.
    """
    import cv2

    n_cols = len(column_titles)
    if any(len(r) != n_cols for r in rows):
        raise ValueError(f"every row needs {n_cols} images (one per column title)")
    tiles = []
    for r in rows:
        row = []
        for img in r:
            h, w = img.shape[:2]
            th = max(1, round(h * tile_width / w))
            interp = cv2.INTER_AREA if w > tile_width else cv2.INTER_LINEAR
            row.append(_to_uint8(cv2.resize(np.ascontiguousarray(img, np.float32), (tile_width, th),
                                            interpolation=interp)))
        tiles.append(row)
    heights = [max(t.shape[0] for t in row) for row in tiles]
    width = n_cols * tile_width + (n_cols + 1) * gap
    height = title_height + sum(heights) + (len(tiles) + 1) * gap
    sheet = np.full((height, width, 3), 255, np.uint8)
    scale = 0.4
    for c, title in enumerate(column_titles):
        x = gap + c * (tile_width + gap)
        text = title if len(title) <= 30 else title[:29] + "."
        cv2.putText(sheet, text, (x + 2, title_height - 7), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    y = title_height + gap
    for row, rh in zip(tiles, heights):
        for c, t in enumerate(row):
            x = gap + c * (tile_width + gap)
            sheet[y:y + t.shape[0], x:x + tile_width] = t
        y += rh + gap
    return sheet


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 array as PNG (cv2 wants BGR)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"{path}: cannot write PNG")


def finite(obj):
    """JSON has no infinity: an identical pair's PSNR is written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj
