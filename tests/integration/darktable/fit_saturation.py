"""Fit darktable's stand-in for the paper's saturation filter (run by hand; a few minutes):

    python tests/integration/darktable/fit_saturation.py

The paper's saturation (HSV, s' = s + (1 - s)(0.5 - |0.5 - v|) 0.8, blended by the amount) has no darktable
equivalent. For each candidate (colorbalancergb chroma / saturation / vibrance, velvia), in each coordinate
state (Rec.709 coordinates or darktable's working space), this renders the chart with the control at several
values through darktable-cli and reports the mean CIE76 dE against exposure_engine.render of
[gamma 1/2.2, saturation amount] for amounts 0.5 and 1, and the dE with no module at all (baseline).
The winner goes into exposure_engine/exporters/darktable.py (SATURATION_*).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dtcompare import chart, darktable_render, delta_e, engine_render, read_image, write_png  # noqa: E402

from exposure_engine.exporters import darktable as dt  # noqa: E402
from exposure_engine.sequence import EditSequence  # noqa: E402

GAMMA = {"filter": "gamma", "params": {"gamma": 1 / 2.2}}


def seq(*steps) -> EditSequence:
    return EditSequence.from_dict({"format": "exposure-edit-sequence", "version": 1, "steps": list(steps)})


def render_entries(work: Path, tag: str, extra: list[tuple[str, dt.HistoryEntry]]) -> np.ndarray:
    """Chart through darktable with [gamma 1/2.2] + ``extra`` ops (kind, entry)."""
    original = dt.TRANSLATIONS["saturation"].emit
    dt.TRANSLATIONS["saturation"].emit = lambda s: extra
    try:
        entries = dt.native_entries(seq(GAMMA, {"filter": "saturation", "params": {"amount": 0.0}}))
    finally:
        dt.TRANSLATIONS["saturation"].emit = original
    xmp = work / f"{tag}.xmp"
    xmp.write_bytes(dt.to_xmp(entries))
    return read_image(darktable_render(work / "chart.png", xmp, work / f"{tag}.tif"))


def main() -> None:
    img = chart()
    work = Path(tempfile.mkdtemp(prefix="fitsat"))
    write_png(work / "chart.png", img)
    amounts = (0.5, 1.0)
    refs = {p: engine_render(img, seq(GAMMA, {"filter": "saturation", "params": {"amount": p}})) for p in amounts}
    base = render_entries(work, "baseline", [])
    print("baseline (no module): " + ", ".join(f"p={p}: dE {delta_e(base, refs[p]).mean():.2f}" for p in amounts))
    candidates = {
        "velvia bias 0": ([10, 25, 40, 60, 80], lambda v: dt.HistoryEntry("velvia", dt.pack_velvia(v, 0.0), "")),
        "velvia bias 1": ([10, 25, 40, 60, 80], lambda v: dt.HistoryEntry("velvia", dt.pack_velvia(v, 1.0), "")),
        "colorbalancergb saturation_global": ([0.1, 0.2, 0.3],
                                              lambda v: dt.HistoryEntry("colorbalancergb",
                                                                        dt.pack_colorbalancergb(saturation_global=v),
                                                                        "")),
    }
    only = sys.argv[1:]
    for label, (values, make) in candidates.items():
        if only and not any(o in label for o in only):
            continue
        for state in ("srgb", "working"):
            errs = np.array([[delta_e(render_entries(work, f"{label}_{state}_{v}".replace(" ", "_"),
                                                     [(state, make(v))]), refs[p]).mean() for p in amounts]
                             for v in values])
            best = [values[int(np.argmin(errs[:, j]))] for j in range(len(amounts))]
            print(f"{label:34s} {state:8s} " + "; ".join(
                f"p={p}: best {b} dE {errs[:, j].min():.2f}" for j, (p, b) in enumerate(zip(amounts, best)))
                + f"   dE(p=1) by value {dict(zip(values, np.round(errs[:, 1], 2).tolist()))}", flush=True)


if __name__ == "__main__":
    main()
