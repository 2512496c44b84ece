"""Step strips: one PNG that shows how the agent retouched a photo, step by step (the paper's Figure 3).

One column per state: the input proxy, then the proxy after each step. Under each step's proxy: the filter's
name and parameters (:attr:`Filter.label`), its icon (:meth:`Filter.draw`: the curve, the gains or a bar), and
the policy's action probabilities over the eight filters as a small bar chart, the chosen filter highlighted.

Drawn with matplotlib's Agg backend (no display needed). The input of a sequence is linear light and the last
step's output is display-encoded, so the first columns look dark: that is what the agent saw.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from . import filters as F
from .agent.level import added_by_rule
from .sequence import EditSequence

# Short names for the probability bars (the registry's order = the action ids).
SHORT = {"exposure": "Exp", "gamma": "Gam", "white_balance": "WB", "saturation": "Sat", "tone_curve": "Tone",
         "color_curves": "Col", "contrast": "Con", "black_and_white": "B&W"}
CHOSEN = "#d95f02"
OTHER = "#9e9e9e"
USED = "#dcdcdc"  # filters applied at earlier steps: not chosen again, whatever their probability


class StripSource(Protocol):
    """What a strip needs from a prediction (:class:`exposure_engine.agent.policy.Prediction` has it)."""

    sequence: EditSequence
    probabilities: np.ndarray  # (n_steps, 8)
    proxies: Sequence[np.ndarray]  # n_steps + 1 states, each (h, w, 3) float; first = the input proxy


def _display(state: np.ndarray) -> np.ndarray:
    """A proxy state ``(h, w, 3)`` float -> what the screen shows: the values clipped to [0, 1]."""
    return np.clip(np.nan_to_num(np.asarray(state, dtype=np.float32)), 0.0, 1.0)


def _wrap_label(label: str, width: int = 26) -> str:
    # Colour-curve labels hold 24 numbers: break them per channel first, then at spaces.
    parts = label.replace(" G[", "\nG[").replace(" B[", "\nB[").replace("curves R[", "curves\nR[").split("\n")
    return "\n".join(textwrap.fill(p, width) for p in parts)


def draw_strip(prediction: StripSource, path: str | Path, *, title: str | None = None, dpi: int = 110) -> Path:
    """Write the step strip of ``prediction`` to ``path`` (PNG) and return the path.

    prediction: a policy :class:`Prediction` (``sequence``, ``probabilities`` ``(n, 8)``, ``proxies`` ``n + 1``
    arrays ``(h, w, 3)``). title: an optional line on top (e.g. the file and model names).
    """
    # A bare Figure renders with Agg on savefig: no pyplot, no global backend switch, no display needed.
    from matplotlib.figure import Figure

    steps = prediction.sequence.steps
    n = len(steps)
    probs = np.asarray(prediction.probabilities, dtype=np.float64).reshape(n, F.N_FILTERS) if n else \
        np.zeros((0, F.N_FILTERS))
    if len(prediction.proxies) != n + 1:
        raise ValueError(f"a prediction of {n} steps needs {n + 1} proxies (input + one per step), "
                         f"got {len(prediction.proxies)}")

    cols = n + 1
    col_w = 2.3
    # One probability scale for all steps (comparable bars) that still shows an untrained policy's near-uniform
    # 0.12s apart from its 0.15s.
    top = float(min(1.0, max(0.3, 1.2 * probs.max()))) if n else 1.0
    fig = Figure(figsize=(cols * col_w, 6.4 if title else 6.1), dpi=dpi)
    # Rows: proxy (titled with the step), label + icon, probability bars.
    gs = fig.add_gridspec(3, cols, height_ratios=[2.3, 1.2, 1.5], hspace=0.12, wspace=0.12,
                          left=0.02, right=0.99, top=0.9 if title else 0.95, bottom=0.08)
    if title:
        fig.suptitle(title, fontsize=10, y=0.98)

    first_bars = next((c for c, st in enumerate(steps, 1) if not added_by_rule(st)), 0)
    for c in range(cols):
        img_ax = fig.add_subplot(gs[0, c])
        img_ax.imshow(_display(prediction.proxies[c]), interpolation="nearest")
        img_ax.set_xticks([])
        img_ax.set_yticks([])
        if c == 0:
            img_ax.set_title("Input (linear)", fontsize=10, weight="bold")
            note = fig.add_subplot(gs[1:, 0])
            note.axis("off")
            note.text(0.02, 0.95, f"{n} steps\n\nbars: the policy's\nprobability of each\nfilter at that step;\n"
                      f"orange = chosen,\nlight = used earlier\n(not chosen again)", ha="left", va="top", fontsize=8,
                      color="#444444")
            continue

        step = steps[c - 1]
        f = step.definition
        packed = step.packed()
        added = added_by_rule(step)
        img_ax.set_title(f"{c}. {f.title}" + (" (level)" if added else ""), fontsize=10, weight="bold")
        for spine in img_ax.spines.values():
            spine.set_edgecolor(CHOSEN)
            spine.set_linewidth(1.5)

        # Label text with the icon at its left.
        sub = gs[1, c].subgridspec(1, 2, width_ratios=[1, 2.1], wspace=0.05)
        icon_ax = fig.add_subplot(sub[0, 0])
        icon_ax.imshow(f.draw(packed, size=64), interpolation="nearest")
        icon_ax.set_anchor("N")  # top-aligned with the label's first line
        icon_ax.set_xticks([])
        icon_ax.set_yticks([])
        text_ax = fig.add_subplot(sub[0, 1])
        text_ax.axis("off")
        text_ax.text(0.0, 1.0, _wrap_label(f.label(packed), 22), ha="left", va="top", fontsize=7,
                     family="DejaVu Sans Mono")

        bar_ax = fig.add_subplot(gs[2, c])
        if added:  # no policy decision to show
            bar_ax.axis("off")
            m = step.meta
            why = (f"put in front by the\nmodel's level rule\n({m['level_ev']:+.2f} EV)" if "level_ev" in m
                   else f"added by the model's\nlevel rule (contrast\n{m['level_contrast']:.2f} stops)")
            bar_ax.text(0.02, 0.95, why + ", not\nchosen by the policy", ha="left", va="top", fontsize=8,
                        color="#444444")
            continue
        p = probs[c - 1]
        used = {s.definition.index for s in steps[: c - 1] if not added_by_rule(s)}
        colours = [CHOSEN if g.index == f.index else USED if g.index in used else OTHER for g in F.FILTERS]
        bar_ax.bar(range(F.N_FILTERS), p, color=colours, width=0.8)
        bar_ax.set_ylim(0, top)
        bar_ax.set_xticks(range(F.N_FILTERS))
        bar_ax.set_xticklabels([SHORT.get(g.name, g.name[:4]) for g in F.FILTERS], rotation=90, fontsize=7)
        bar_ax.tick_params(axis="y", labelsize=6, length=2)
        bar_ax.set_yticks([0, round(top / 2, 2), round(top, 2)])
        if c > first_bars:  # the scale once, on the first column with bars
            bar_ax.set_yticklabels([])
        bar_ax.text(f.index, min(p[f.index] + 0.04 * top, 0.9 * top), f"{p[f.index]:.2f}", ha="center", fontsize=6.5,
                    color=CHOSEN)
        for side in ("top", "right"):
            bar_ax.spines[side].set_visible(False)

    path = Path(path)
    fig.savefig(path, format="png")
    return path
