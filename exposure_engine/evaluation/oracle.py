"""Where an agent's paired error comes from: brightness, colour or tone, measured against the exposure oracle.

``bench quality`` reports the exposure oracle (:func:`.benchmark.exposure_oracle`: the style's own render with
the exposure guessed from the input's brightness) beside the agent. This study takes one style and one model on
the bench's own split and test inputs and says, per test photo, how far the agent's and the oracle's brightness
are from the ground truth, and how much the oracle loses when the input's random colour (the unprocessing's
white-balance cast and desaturation) is left as it is::

    python -m exposure_engine.evaluation.oracle --photos-dir /work/shared/photos --style noir \\
        --model RUN/noir/model [--test 20 --size 384 --seed 0]

Brightness error of an output: ``log2`` of its mean linear luminance over the ground truth's (0 = as bright).
Brightness response (summary ``brightness_response``): how the outputs' log2 brightness follows the inputs' over
the test photos, for the agent, the oracle and the ground truth: ``slope`` (stops out per stop in; 0 = every
output equally bright, negative = brighter inputs come out darker), ``spread`` (standard deviation, stops) and
``corr`` (correlation with the ground truth's). An unpaired critic sees only the target set, so an agent can
match its brightness distribution and still get each photo's brightness wrong. For a model trained with the
brightness anchor (recipe ``brightness_anchor``, training/anchor.py) the anchor's map is read from its config.json
and reported as a fourth "method": the brightness each test input was anchored at, its error against the truth,
and how far the agent's outputs are from it.

Two more columns say what an *unpaired* method could reach and where the agent's own error is:

* ``unpaired_reference`` (the bench's, :func:`.benchmark.unpaired_reference`): the style's exact render of the
  photo with the input's colour left as it is (cast and desaturation: an unpaired method cannot tell a random
  cast from the scene's own colour) and each output as bright as the unpaired brightness map says (the brightness
  anchor's quantile map, fitted on the whole training inputs against the targets: no pairs). Perfect tone with
  only what the two marginals say about each photo's brightness and colour: where a faithful unpaired agent
  lands, not a hard limit (a network could read more from the content than the mean brightness and colour).
* ``agent_brightness_fixed`` and ``agent_gains_fixed``: the agent's output with its brightness error removed (one
  linear gain to the truth's mean luminance), and with each channel's mean put at the truth's (one linear gain per
  channel): what is left is tone shape and saturation.
* ``agent_map_brightness`` and ``agent_reference_colour``: the agent's output moved, without pairs, to the
  brightness the unpaired map gives (one gain), or to the unpaired reference's mean colour, i.e. the input's own
  cast (per-channel gains, brightness kept): whether the agent's brightness or mean colour is worse than what the
  unpaired information says (higher PSNR than the agent's: it is).

With ``--program-fit`` (about 20 s a photo here, beside a training run) two more say whether the agent's *program*
(its filters, in its order) or its *parameters* are what is wrong: :func:`fit_program` fits the program's
parameters by gradient descent

* to the ground truth (``agent_program_fit``, paired): the most that program can give on that photo;
* to the unpaired reference (``agent_program_reference_fit``, no pairs): how close that program can follow the
  unpaired reference, scored against the truth;
* to the unpaired reference from the agent's own parameters (``agent_refit``), with how far each parameter moves
  (summary ``agent_refit_moves``: mean and spread over the photos whose program has that filter): a mean move
  beyond the spread is a bias of the agent's, the same on every photo.

``--program exposure,gamma,...`` fits that program the same two ways (``program_fit``, ``program_reference_fit``),
e.g. the style's own filters, to compare with the agent's choice.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from ..imageio.transfer import srgb_to_linear
from ..training.anchor import BrightnessAnchor
from . import benchmark as BM
from . import metrics as M
from . import styles as S


def brightness_response(inputs: np.ndarray, outputs: np.ndarray, truths: np.ndarray) -> dict:
    """Slope, spread and correlation with the truths of the outputs' log2 brightness against the inputs' (all
    ``(N,)`` log2 brightnesses, N >= 2, the inputs not all equal)."""
    inputs, outputs, truths = (np.asarray(v, np.float64) for v in (inputs, outputs, truths))
    corr = float(np.corrcoef(outputs, truths)[0, 1]) if np.ptp(outputs) > 0 and np.ptp(truths) > 0 else float("nan")
    return {"slope": float(np.polyfit(inputs, outputs, 1)[0]), "spread": float(outputs.std()), "corr": corr}


def with_gains(output: np.ndarray, *, brightness: float | None = None, like: np.ndarray | None = None) -> np.ndarray:
    """``output`` (display sRGB) with linear gains (``training.error_split``'s) that give it log2 mean luminance
    ``brightness`` (one gain for all channels; ``None``: its own) and, with ``like``, the mean colour (chroma of the
    channel means) of the display image ``like``: what following a predictor of brightness or colour exactly gives."""
    from ..training import error_split as E

    have = E.channel_means(srgb_to_linear(output))
    chroma = None if like is None else E.log2_chroma(E.channel_means(srgb_to_linear(like)))
    return E.apply_gains(output, E.gains_to(have, brightness=brightness, chroma=chroma).astype(np.float32))


def _raw_for(f, packed: Sequence[float]):
    """Raw network outputs whose parameters (``f.params_from_raw``) are ``packed``, found numerically (every
    mapping is a squashing, some with a mask or a normalisation: one generic inverse instead of eight)."""
    import torch

    want = torch.tensor([list(packed)[: f.n_packed]], dtype=torch.float32)
    raw = torch.zeros(1, f.n_raw, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss = ((f.params_from_raw(raw) - want) ** 2).sum()
        loss.backward()
        opt.step()
    return raw.detach()


def fit_program(image: np.ndarray, target: np.ndarray, filters: Sequence[str], *, init=None, steps: int = 300,
                work_size: int = 128, ev_starts: tuple[float, ...] = (0.0, 1.5, 3.0)) -> tuple[np.ndarray, list]:
    """The program ``filters`` (filter names, in order) with the parameters that fit the display ``target`` best:
    Adam on the mean squared error of the clipped output, at ``work_size`` on the long edge. Starts: ``init`` (one
    packed parameter list per step, e.g. an agent's own) when given; else every exposure start in ``ev_starts``
    (exposure's tanh saturates: one start can get stuck at a bound) with the other parameters at identity.
    ``image`` linear ``(H, W, 3)``, ``target`` ``(H, W, 3)`` in [0, 1]. Returns the best start's render of
    ``image`` at full size (float32, clipped; best by its full-size PSNR) and its packed parameters per step."""
    import cv2
    import torch

    from .. import filters as F

    fs = [F.get(n) for n in filters]
    scale = min(1.0, work_size / max(image.shape[:2]))
    small = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))

    def tensor(a: np.ndarray, resize: bool) -> torch.Tensor:
        a = cv2.resize(a, small, interpolation=cv2.INTER_AREA) if resize and scale < 1 else a
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), np.float32))[None]

    def start(ev: float) -> list:
        raws = [torch.zeros(1, f.n_raw) for f in fs]
        if "exposure" in filters:
            raws[list(filters).index("exposure")][0, 0] = float(np.arctanh(np.clip(ev / 3.5, -0.99, 0.99)))
        return raws

    starts = [[_raw_for(f, p) for f, p in zip(fs, init)]] if init is not None else \
        [start(ev) for ev in (ev_starts if "exposure" in filters else (0.0,))]
    x, t, full = tensor(image, True), tensor(target, True), tensor(image, False)
    best, best_psnr = None, -np.inf
    for raws in starts:
        raws = [r.clone().requires_grad_(True) for r in raws]
        opt = torch.optim.Adam(raws, lr=0.05)

        def forward(img: torch.Tensor) -> torch.Tensor:
            for f, r in zip(fs, raws):
                img = f.apply(img, f.params_from_raw(r))
            return img.clamp(0.0, 1.0)

        for _ in range(steps):
            opt.zero_grad()
            loss = ((forward(x) - t) ** 2).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = np.ascontiguousarray(forward(full)[0].numpy().transpose(1, 2, 0))
            params = [f.params_from_raw(r)[0, : f.n_packed].tolist() for f, r in zip(fs, raws)]
        score = M.psnr(out, target)
        if score > best_psnr:
            best, best_psnr = (out, params), score
    return best


def corrected(output: np.ndarray, truth: np.ndarray, *, per_channel: bool) -> np.ndarray:
    """``output`` (display sRGB) with the truth's mean luminance (``per_channel`` False) or also the truth's chroma,
    i.e. each channel's mean (True): its error minus brightness (or mean colour). The same correction as the shipped
    model's held-out study (``training.error_split``)."""
    from ..training import error_split as E

    return with_gains(output, brightness=E.log2_brightness(E.channel_means(srgb_to_linear(truth))),
                      like=truth if per_channel else None)


def study(photos_dir: Path, style_name: str, model: str, *, n_test: int = 20, size: int = 384, seed: int = 0,
          program_fit: bool = False, program: list[str] | None = None) -> dict:
    from ..agent.policy import Policy
    from ..renderer import render
    from .images import list_images

    style = S.get(style_name)
    parts = BM.split(list_images(photos_dir, "photos"), seed, n_test)
    train = BM.load_photos(parts["train_inputs"], size)[0]
    test = BM.load_photos(parts["holdout_inputs"], size)[0]
    # The bench's rule and test inputs: the same draws and fit as benchmark._render_fold.
    train_draws = BM.draws(train, seed, test=False)
    rule = BM.exposure_rule_for(style, train, train_draws)
    targets = [style.apply(BM.clean_linear(t.display)) for t in BM.load_photos(parts["targets"], size)[0]]
    bmap = BM.unpaired_brightness_map([x for x, _ in train_draws], targets)
    policy = Policy.load(model)
    # a model trained with the brightness anchor: the brightness it was asked for, beside what it gave
    anchor_map = policy.config.get("training", {}).get("brightness_anchor")
    anchor = None if anchor_map is None else BrightnessAnchor.from_dict(anchor_map)
    rows = []
    for p, (x, amounts) in zip(test, BM.draws(test, seed, test=True)):
        clean = BM.clean_linear(p.display)
        truth = style.apply(clean)
        lum = BM.mean_luminance(x)
        pred = policy.predict(x)[0]
        agent = render(x, pred.sequence)
        oracle = BM.exposure_oracle(style, clean, amounts["ev"], lum, rule)

        def colour_left(saturation: bool, cast: bool) -> float:
            # The oracle on the photo with (some of) the input's colour kept: exposure and tone as the oracle's.
            photo = BM.with_input_colour(p.display, amounts, saturation=saturation, cast=cast)
            return M.psnr(BM.exposure_oracle(style, photo, amounts["ev"], lum, rule), truth)

        reference = BM.unpaired_reference(style, p.display, amounts, lum, bmap)
        bright = {k: BM.display_log2_brightness(v) for k, v in (("agent", agent), ("oracle", oracle),
                                                                   ("truth", truth))}
        if anchor is not None:
            bright["anchor"] = float(anchor.of_log2(np.log2(lum)))
        rows.append({"photo": p.stem, "agent_psnr": M.psnr(agent, truth), "oracle_psnr": M.psnr(oracle, truth),
                     "agent_brightness_error": bright["agent"] - bright["truth"],
                     "oracle_brightness_error": bright["oracle"] - bright["truth"],
                     "oracle_colour_left_psnr": colour_left(True, True),
                     "oracle_cast_left_psnr": colour_left(False, True),
                     "oracle_desaturation_left_psnr": colour_left(True, False),
                     "unpaired_reference_psnr": M.psnr(reference, truth),
                     "agent_brightness_fixed_psnr": M.psnr(corrected(agent, truth, per_channel=False), truth),
                     "agent_gains_fixed_psnr": M.psnr(corrected(agent, truth, per_channel=True), truth),
                     "agent_map_brightness_psnr": M.psnr(with_gains(agent, brightness=float(
                         bmap.of_log2(np.log2(lum)))), truth),
                     "agent_reference_colour_psnr": M.psnr(with_gains(agent, like=reference), truth),
                     "steps": pred.sequence.labels(), "input_log2_brightness": float(np.log2(lum)),
                     **{f"{k}_log2_brightness": v for k, v in bright.items()}})
        agent_filters = [s.filter for s in pred.sequence.steps]
        fits = ([("agent_program", agent_filters)] if program_fit else []) + ([("program", program)] if program else [])
        for name, filters in fits:
            rows[-1][f"{name}_fit_psnr"] = M.psnr(fit_program(x, truth, filters)[0], truth)
            rows[-1][f"{name}_reference_fit_psnr"] = M.psnr(fit_program(x, reference, filters)[0], truth)
        if program_fit:
            # the agent's own parameters moved to where they best follow the unpaired reference: how far
            own = [s.definition.from_json(s.params) for s in pred.sequence.steps]
            refit, moved = fit_program(x, reference, agent_filters, init=own)
            rows[-1]["agent_refit_psnr"] = M.psnr(refit, truth)
            rows[-1]["agent_refit_moves"] = {s.filter: [b - a for a, b in zip(o, m)]
                                             for s, o, m in zip(pred.sequence.steps, own, moved)}
    keys = [k for k in rows[0] if k.endswith("_psnr")]
    summary = {k: float(np.mean([min(r[k], 100.0) for r in rows])) for k in keys}  # an exact render is inf dB
    for k in ("agent_brightness_error", "oracle_brightness_error"):
        summary[f"mean_abs_{k}"] = float(np.mean([abs(r[k]) for r in rows]))
    if program_fit:
        moves: dict[str, list] = {}
        for r in rows:
            for name, m in r["agent_refit_moves"].items():
                moves.setdefault(name, []).append(m)
        # a mean move larger than the spread is a bias the agent has on every photo, not noise from photo to photo
        summary["agent_refit_moves"] = {name: {"photos": len(m), "mean": np.mean(m, 0).tolist(),
                                               "std": np.std(m, 0).tolist()} for name, m in moves.items()}
    kinds = ("agent", "oracle", "truth") + (("anchor",) if anchor is not None else ())
    if anchor is not None:
        summary["mean_abs_anchor_brightness_error"] = float(np.mean([abs(r["anchor_log2_brightness"]
                                                                        - r["truth_log2_brightness"]) for r in rows]))
        summary["mean_abs_agent_from_anchor"] = float(np.mean([abs(r["agent_log2_brightness"]
                                                                  - r["anchor_log2_brightness"]) for r in rows]))
    if len(rows) >= 2 and np.ptp([r["input_log2_brightness"] for r in rows]) > 0:
        col = {k: np.array([r[f"{k}_log2_brightness"] for r in rows]) for k in ("input",) + kinds}
        summary["brightness_response"] = {k: brightness_response(col["input"], col[k], col["truth"]) for k in kinds}
    return {"style": style_name, "model": model, "rule": list(rule), "rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m exposure_engine.evaluation.oracle", description=__doc__.split("\n")[0])
    ap.add_argument("--photos-dir", required=True, type=Path)
    ap.add_argument("--style", required=True, choices=list(S.STYLES))
    ap.add_argument("--model", required=True, help="model folder")
    ap.add_argument("--test", type=int, default=20)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--program-fit", action="store_true",
                    help="also fit the agent's own program to the truth and to the unpaired reference (slow)")
    ap.add_argument("--program", type=lambda v: v.split(","), metavar="FILTER,...",
                    help="also fit this program (filter names in order) to the truth and to the unpaired reference")
    a = ap.parse_args(argv)
    if a.program:
        from .. import filters as F

        try:
            [F.get(n) for n in a.program]
        except KeyError as e:
            ap.error(str(e.args[0]))
    res = study(a.photos_dir, a.style, a.model, n_test=a.test, size=a.size, seed=a.seed, program_fit=a.program_fit,
                program=a.program)
    print(f"{a.style}, {a.model}; exposure rule {res['rule'][0]:+.2f} {res['rule'][1]:+.2f} log2(mean luminance)")
    print(f"{'photo':20s} {'agent dB':>8s} {'oracle dB':>9s} {'agent EV':>8s} {'oracle EV':>9s}  agent's steps")
    for r in res["rows"]:
        print(f"{r['photo']:20s} {r['agent_psnr']:8.2f} {r['oracle_psnr']:9.2f} {r['agent_brightness_error']:+8.2f} "
              f"{r['oracle_brightness_error']:+9.2f}  {' | '.join(r['steps'])[:100]}")
    s = res["summary"]
    print(f"mean PSNR: agent {s['agent_psnr']:.2f} dB, oracle {s['oracle_psnr']:.2f} dB (per image capped at 100); "
          f"oracle with the input's colour left {s['oracle_colour_left_psnr']:.2f} dB (cast only "
          f"{s['oracle_cast_left_psnr']:.2f}, desaturation only {s['oracle_desaturation_left_psnr']:.2f})")
    print(f"unpaired reference (the style's exact tone, the input's colour, brightness from the unpaired map) "
          f"{s['unpaired_reference_psnr']:.2f} dB; the agent with its brightness error removed "
          f"{s['agent_brightness_fixed_psnr']:.2f} dB, with each channel's mean error removed "
          f"{s['agent_gains_fixed_psnr']:.2f} dB")
    print(f"the agent's output put exactly where the unpaired information says (no pairs): at the unpaired map's "
          f"brightness {s['agent_map_brightness_psnr']:.2f} dB; with the unpaired reference's mean colour (the "
          f"input's cast left in) {s['agent_reference_colour_psnr']:.2f} dB")
    if "agent_program_fit_psnr" in s:
        print(f"the agent's own program with its parameters fitted: to the truth (paired) "
              f"{s['agent_program_fit_psnr']:.2f} dB; to the unpaired reference "
              f"{s['agent_program_reference_fit_psnr']:.2f} dB; from its own parameters to the reference "
              f"{s['agent_refit_psnr']:.2f} dB, its parameters moving by (mean / spread over the photos using it):")
        for name, m in s["agent_refit_moves"].items():
            print(f"  {name:16s} {m['photos']:3d} photos  " + ", ".join(f"{a:+.3f} / {b:.3f}"
                                                                       for a, b in zip(m["mean"], m["std"])))
    if "program_fit_psnr" in s:
        print(f"the program {' | '.join(a.program)} with its parameters fitted: to the truth (paired) "
              f"{s['program_fit_psnr']:.2f} dB; to the unpaired reference {s['program_reference_fit_psnr']:.2f} dB")
    print(f"mean |brightness error|: agent {s['mean_abs_agent_brightness_error']:.2f} EV, oracle "
          f"{s['mean_abs_oracle_brightness_error']:.2f} EV"
          + (f", the model's brightness anchor {s['mean_abs_anchor_brightness_error']:.2f} EV (agent from its anchor "
             f"{s['mean_abs_agent_from_anchor']:.2f} EV)" if "mean_abs_anchor_brightness_error" in s else ""))
    if "brightness_response" in s:
        print("brightness response (output stops per input stop / spread in stops / correlation with the truth's): "
              + ", ".join(f"{k} {v['slope']:+.2f} / {v['spread']:.2f} / {v['corr']:+.2f}"
                          for k, v in s["brightness_response"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
