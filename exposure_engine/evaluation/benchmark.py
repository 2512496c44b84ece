"""The quality benchmark: can the agent learn a hidden style from unpaired examples, and how far does it get
compared with ordinary automatic tools and with the style itself?

For one photo folder and each style of :mod:`.styles`:

1. split the photos (seeded, :func:`exposure_engine.training.data.split_photos`) into an *input* half and a
   disjoint *target* half; the last ``n_test`` inputs are held out for testing;
2. inputs are made RAW-like by :func:`exposure_engine.training.unprocess.unprocess` with random amounts (darker,
   colour cast, desaturated, tone curve undone); the *clean* linear version of a photo is the same unprocessing
   with neutral amounts (tone curve and sRGB curve undone only);
3. targets = the style applied to the clean linear target photos; ground truth of a test input = the style
   applied to its clean linear photo;
4. a policy is trained per style by a pluggable :data:`Trainer` (the real training loop, an untrained random
   policy for plumbing checks, or an existing model folder);
5. every method's renders of the test inputs are scored against the target set (histogram intersection, the
   paper's metric) and against the ground truth (paired PSNR / dE). The *ceiling* is the ground truth itself
   scored against the target set: what a perfect imitation of the style would get, given that test and target
   photos show different scenes. The *exposure oracle* is the style applied perfectly to the clean photo except
   for its exposure, which it sets from the RAW-like input's mean luminance with the best such rule for the
   training inputs: what a perfect imitation of the style can reach in paired PSNR / dE when, like any method
   trained on unpaired data, it has only the input's brightness to undo the random exposure with. The *unpaired
   reference* keeps less: the style's exact render of the photo with the input's own colour (the random cast and
   desaturation, which the two photo sets cannot tell from the scene's colour) at the brightness the unpaired
   brightness map gives (:func:`unpaired_brightness_map`, no pairs): perfect tone with only what the marginals say
   about each photo's brightness and colour, i.e. about where a faithful unpaired agent lands.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..imageio.transfer import srgb_to_linear
from . import baselines as B
from . import metrics as M
from . import report as R
from . import styles as S
from .images import EvalInputError

SHEET_ROWS = 6  # test images shown in a contact sheet


def _print(line: str) -> None:
    print(line, flush=True)  # progress of a minutes-long run must show up in a redirected log too


@dataclass(frozen=True)
class Photo:
    stem: str
    display: np.ndarray  # (H, W, 3) float32 display sRGB, shrunk to the bench's size


@dataclass
class TrainingJob:
    """What a trainer gets for one style. The folders hold the same images as the lists (16-bit TIFF linear
    inputs, 16-bit PNG display targets) for trainers that read files."""

    style: str
    inputs: list[np.ndarray]   # RAW-like linear (H, W, 3) float32
    targets: list[np.ndarray]  # display sRGB (H, W, 3) float32
    inputs_dir: Path
    targets_dir: Path
    out_dir: Path
    minutes: float
    seed: int
    device: str = "cpu"  # where a training loop runs its networks (resolved: cpu, cuda, cuda:N)
    resume: bool = False  # a training loop continues from out_dir/checkpoint.pt when there is one
    # Paired examples (RAW-like proxy, the style's own render) for choosing among a run's weights, never for its
    # gradients: what a photographer who has finished a few of the inputs by hand could give (None: unpaired only)
    validation: object | None = None  # exposure_engine.training.data.ValidationPairs
    snapshots: bool = False  # a training loop keeps every monitored weight set (out_dir/snapshots/)
    fold: int | None = None  # the cross-validation fold whose inputs are held out ({fold} in model:/best: paths)


#: A trainer turns a job into a policy (``exposure_engine.agent.policy.Policy``) plus a dict describing the run.
Trainer = Callable[[TrainingJob], tuple[object, dict]]


@dataclass
class BenchConfig:
    photos_dir: Path
    out_dir: Path
    styles: list[str] = field(default_factory=lambda: list(S.STYLES))
    n_photos: int | None = None  # use the first N photos of the folder (sorted), None = all
    n_test: int = 8
    size: int = 384  # long edge the photos are area-reduced to
    minutes: float = 1.0  # training budget per style
    seed: int = 0  # the split, the RAW-like draws, the metric's patches, and (unless train_seed) the training
    train_seed: int | None = None  # the training run's own seed (initialisation, sampling), None = seed
    trainer: str = "random"  # "loop" (recipe cpu-fast), "loop:RECIPE", "random", "none", "model:PATH", "best:GLOB",
    # "best-targets:GLOB"
    device: str = "cpu"  # for the "loop" trainers
    resume: bool = False  # "loop" trainers continue a killed or budget-stopped run from its checkpoint
    validate: int = 0  # the first N training inputs with their ground truth choose the "loop" run's weights
    snapshots: bool = False  # "loop" trainers keep the weights of every monitor step
    # K-fold cross-validation of the input half (folds >= 2): each fold's inputs are the test inputs of a policy
    # trained on the other folds' inputs, and every method is scored on all folds' test renders together, ~half the
    # folder instead of n_test images (the set-level metric's noise). fold = k runs that one fold only (as an
    # ordinary bench: its test inputs, its training); None runs every fold and pools them. n_test is then unused.
    folds: int = 0
    fold: int | None = None


# ---------------------------------------------------------------------------------------------------------------
# Data


def _shrink(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = size / max(h, w)
    if s >= 1:
        return np.ascontiguousarray(img, np.float32)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def load_photos(paths: Sequence[Path], size: int) -> tuple[list[Photo], list[dict]]:
    """Decode photos to display sRGB shrunk to ``size``; unreadable files are skipped and reported."""
    from .images import load_display

    photos, skipped = [], []
    for p in paths:
        try:
            photos.append(Photo(Path(p).stem, _shrink(load_display(p), size)))
        except EvalInputError as e:
            skipped.append({"path": str(p), "reason": str(e)})
    return photos, skipped


def clean_linear(display: np.ndarray) -> np.ndarray:
    """A finished photo's "scene" version: tone curve and sRGB curve undone, nothing randomised."""
    from ..training.unprocess import UnprocessParams, unprocess

    return unprocess(display, UnprocessParams(ev=0.0, saturation=1.0, gains=(1.0, 1.0, 1.0), tone=True))


def raw_like(display: np.ndarray, seed: int, index: int) -> tuple[np.ndarray, dict]:
    """A RAW-like input with random amounts drawn from (seed, index); returns the image and the amounts."""
    from ..training.unprocess import random_params, unprocess

    params = random_params(np.random.default_rng([seed, index]))
    return unprocess(display, params), params.to_dict()


TEST_DRAWS = 1_000_000  # test input i is drawn from (seed, TEST_DRAWS + i), training input i from (seed, i)


def draws(photos: Sequence[Photo], seed: int, *, test: bool) -> list[tuple[np.ndarray, dict]]:
    """The bench's RAW-like inputs of ``photos`` and their amounts (:func:`raw_like`), the test or the training
    draws: the one numbering the bench, the trainers and the oracle study share."""
    first = TEST_DRAWS if test else 0
    return [raw_like(p.display, seed, first + i) for i, p in enumerate(photos)]


def split(paths: Sequence[Path], seed: int, n_test: int) -> dict[str, list[Path]]:
    """Seeded split into train inputs, held-out test inputs and a disjoint target half (the training code's split,
    so a model trained by ``exposure-engine train`` with the same seed never saw the test inputs)."""
    from ..training.data import split_photos

    half = len(paths) // 2
    if half < 2:
        raise EvalInputError(f"the quality bench needs at least 4 photos, got {len(paths)}")
    n_test = max(1, min(n_test, half - 1))
    return split_photos(list(paths), seed, n_test)


def fold_split(paths: Sequence[Path], seed: int, folds: int, fold: int) -> dict[str, list[Path]]:
    """Fold ``fold`` of a ``folds``-fold cross-validation of :func:`split`'s input half: that fold's inputs held out
    for testing, the other folds' inputs (in order) for training, the same targets. The folds are contiguous blocks
    of the shuffled input half, their sizes within one of each other; the last one is :func:`split`'s held-out
    inputs for ``n_test`` = its size, so the last fold *is* that ordinary bench (same training inputs and draws)."""
    from ..training.data import split_photos

    halves = split_photos(list(paths), seed, 0)
    inputs, targets = halves["train_inputs"], halves["targets"]
    if not 2 <= folds <= len(inputs):
        raise EvalInputError(f"--folds {folds}: needs 2 <= folds <= the {len(inputs)} inputs (half the photos)")
    if not 0 <= fold < folds:
        raise EvalInputError(f"--fold {fold}: folds are numbered 0..{folds - 1}")
    bounds = np.round(np.linspace(0, len(inputs), folds + 1)).astype(int)
    a, b = int(bounds[fold]), int(bounds[fold + 1])
    return {"train_inputs": inputs[:a] + inputs[b:], "holdout_inputs": inputs[a:b], "targets": targets}


# ---------------------------------------------------------------------------------------------------------------
# Trainers


def _model_path(pattern: str, job: TrainingJob) -> str:
    """``pattern`` with ``{style}`` and ``{fold}`` filled in for ``job``."""
    if "{fold}" in pattern and job.fold is None:
        raise EvalInputError(f"{pattern}: '{{fold}}' stands for a cross-validation fold; give --folds")
    return pattern.replace("{style}", job.style).replace("{fold}", str(job.fold))


def _write_job_files(job: TrainingJob) -> None:
    import tifffile

    from ..imageio import save_image

    job.inputs_dir.mkdir(parents=True, exist_ok=True)
    job.targets_dir.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(job.inputs):
        tifffile.imwrite(job.inputs_dir / f"{i:04d}.tif", (np.clip(x, 0, 1) * 65535 + 0.5).astype(np.uint16))
    for i, t in enumerate(job.targets):
        save_image(job.targets_dir / f"{i:04d}.png", t, bits=16)


def random_trainer(job: TrainingJob) -> tuple[object, dict]:
    """No training: an untrained policy with a seeded initialisation (checks the plumbing, gives a floor)."""
    from ..agent.policy import Policy

    return Policy.random(seed=job.seed), {"trainer": "random", "note": "untrained policy (plumbing check)"}


def model_trainer(path: str) -> Trainer:
    """No training: an existing model folder, e.g. ``models/default`` (meaningful for the style it learnt).
    ``{style}`` in the path stands for the style's name (``runs/{style}/model``: one model per style, e.g. trained
    elsewhere by ``loop:RECIPE`` and scored here again), ``{fold}`` for the cross-validation fold (``--folds``:
    ``runs/fold-{fold}/{style}/model``, one model per fold, e.g. trained in parallel by ``--fold K`` runs)."""

    def run(job: TrainingJob) -> tuple[object, dict]:
        from ..agent.policy import Policy

        folder = _model_path(path, job)
        return Policy.load(folder), {"trainer": "model", "model": str(folder)}

    return run


def best_trainer(pattern: str, by: str = "validation") -> Trainer:
    """No training: of the model folders matching the glob ``pattern`` (``{style}`` as in :func:`model_trainer`,
    e.g. ``runs/seed-*/{style}/model``: runs of one style with different training seeds), the best one. Every
    candidate is scored here, so runs made elsewhere compare on equal terms, and never on the test inputs.

    ``by="validation"`` (``--trainer best:GLOB``): the best PSNR on *this* bench's validation pairs (``--validate
    N``: the same pairs a ``loop`` run chooses its weights by). ``by="targets"`` (``--trainer best-targets:GLOB``):
    the best mean PSNR on :data:`~exposure_engine.training.select.DRAWS` RAW-like draws of the style's target
    renders developed back towards themselves, as ``train --seeds`` ranks its runs
    (:func:`exposure_engine.training.select.score_policies`): no paired data at all, and not the training inputs
    each run's level rule was fitted on."""

    def run(job: TrainingJob) -> tuple[object, dict]:
        import glob

        from ..agent.policy import Policy
        from ..training import select

        if by == "validation" and job.validation is None:
            raise EvalInputError("--trainer best:GLOB chooses by validation PSNR: give --validate N "
                                 "(or best-targets:GLOB, which needs no paired photos)")
        folders = sorted(glob.glob(_model_path(pattern, job)))
        if not folders:
            raise EvalInputError(f"--trainer {_BEST_SPECS[by]}{pattern}: no model folder matches for style "
                                 f"{job.style!r}")
        policies = {f: Policy.load(f) for f in folders}
        if by == "validation":
            pairs = [job.validation]
        else:  # keyed by the names a loop run gives the target files: the draws a ranking of those files makes
            pairs = select.draws_of_images(job.targets, [f"{i:04d}.png" for i in range(len(job.targets))],
                                           select.DRAWS)
        # nothing here reads the score without the level rule: skip that second pass over the pairs
        scores = {r["model"]: r["val_psnr"] for r in select.score_policies(policies, pairs, without_rule=False)}
        best = max(scores, key=scores.get)
        return policies[best], {"trainer": "best", "by": by, "model": best, "val_psnr": scores[best],
                                "candidates": scores}

    return run


_BEST_SPECS = {"validation": "best:", "targets": "best-targets:"}


def loop_trainer(recipe: str = "cpu-fast") -> Trainer:
    """The real training loop (:func:`exposure_engine.training.loop.train`) with ``recipe`` and a time budget of
    ``job.minutes``; the inputs and targets go through files (16-bit linear TIFFs, 16-bit sRGB PNGs), as they
    would for ``exposure-engine train``."""
    from ..training.recipes import get as get_recipe

    try:
        get_recipe(recipe)  # an unknown name fails before any data is written
    except KeyError as e:
        raise EvalInputError(f"--trainer loop:{recipe}: {e.args[0]}") from None

    def run(job: TrainingJob) -> tuple[object, dict]:
        from ..agent.policy import Policy
        from ..training import loop

        _write_job_files(job)
        # the training loop's progress bar on a terminal, none in a redirected log (the stage lines say enough)
        cfg = loop.TrainConfig(inputs=sorted(job.inputs_dir.glob("*.tif")),
                               targets=sorted(job.targets_dir.glob("*.png")), out=job.out_dir,
                               recipe=get_recipe(recipe), unprocess=False, minutes=job.minutes, seed=job.seed,
                               name=f"bench-{job.style}", progress=sys.stderr.isatty(),
                               device=job.device, resume=job.resume,
                               extra={"benchmark": "quality", "style": job.style}, validation=job.validation,
                               snapshots=job.snapshots)
        summary = loop.train(cfg)
        keep = {k: summary[k] for k in ("iterations", "stopped_by", "seconds", "selected_iteration") if k in summary}
        info = {"trainer": "loop", "recipe": recipe, "minutes": job.minutes, "device": job.device, **keep}
        if "selected_iteration" in summary:  # the run chose among its weights: its last ones are scored beside
            info["last_model"] = str(job.out_dir / "last")
        return Policy.load(job.out_dir), info

    return run


def make_trainer(spec: str) -> Trainer | None:
    if spec == "none":
        return None
    if spec == "random":
        return random_trainer
    if spec == "loop" or spec.startswith("loop:"):
        return loop_trainer(spec.partition(":")[2] or "cpu-fast")
    if spec.startswith("model:"):
        return model_trainer(spec[len("model:"):])
    for by, prefix in _BEST_SPECS.items():
        if spec.startswith(prefix):
            return best_trainer(spec[len(prefix):], by)
    raise EvalInputError(f"unknown trainer {spec!r}: use loop, loop:RECIPE, random, none, model:PATH, best:GLOB "
                         "or best-targets:GLOB")


def validation_pairs(style: S.Style, photos: Sequence[Photo], raw: Sequence[tuple[np.ndarray, dict]], n: int):
    """The first ``n`` training inputs as :class:`exposure_engine.training.data.ValidationPairs`: each RAW-like
    input's 64 px proxy beside the style's own render of its clean photo, reduced the same way."""
    from ..training.data import ValidationPairs

    n = min(n, len(photos))
    return ValidationPairs.reduced([x for x, _ in raw[:n]], [style.apply(clean_linear(p.display)) for p in photos[:n]],
                                   [p.stem for p in photos[:n]])


def agent_renders(policy, inputs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[dict]]:
    """The policy's edit of each input as ``retouch`` makes it (argmax filter, the mean edit: no dropout),
    rendered at full size."""
    from ..renderer import render

    outs, seqs = [], []
    for x in inputs:
        pred = policy.predict(x)[0]
        outs.append(render(x, pred.sequence))
        seqs.append(pred.sequence.to_dict())
    return outs, seqs


# ---------------------------------------------------------------------------------------------------------------
# The exposure oracle

ORACLE_FIT_SIZE = 128  # long edge of the images the rule is fitted on (the choice of rule, not its scores)
ORACLE_SLOPES = (-1.0, -0.75, -0.5, -0.25, 0.0)  # b: 0 = one gain for every photo, -1 = every output as bright


def mean_luminance(linear: np.ndarray) -> float:
    """Mean of the paper's luminance (``filters.LUM_*``) of a linear image, floored at 1e-6 (a black input)."""
    from ..filters import LUM_B, LUM_G, LUM_R

    x = np.asarray(linear, np.float32)
    return max(float((LUM_R * x[..., 0] + LUM_G * x[..., 1] + LUM_B * x[..., 2]).mean()), 1e-6)


def exposure_oracle(style: S.Style, clean: np.ndarray, ev: float, input_lum: float, rule: tuple[float, float]
                    ) -> np.ndarray:
    """The style applied to the clean linear photo, exposed by ``rule = (a, b)``: the input (made ``ev`` stops
    darker than ``clean``) gets ``a + b log2(input_lum)`` stops, so the output is off by ``ev + a + b
    log2(input_lum)`` stops and by nothing else."""
    a, b = rule
    return style.apply(clean * np.float32(2.0 ** (ev + a + b * np.log2(input_lum))))


def display_log2_brightness(display: np.ndarray) -> float:
    """log2 mean linear luminance of a display sRGB image (what brightness means for outputs and truths here)."""
    return float(np.log2(mean_luminance(srgb_to_linear(display))))


def unpaired_brightness_map(inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]):
    """The brightness anchor's quantile map (training/anchor.py) from linear ``inputs``' log2 mean luminance to
    display ``targets``' (whole images; the training loop fits it on crops): each input's brightness as far as
    the two unpaired sets tell it."""
    from ..training.anchor import BrightnessAnchor

    return BrightnessAnchor.from_values([np.log2(mean_luminance(x)) for x in inputs],
                                        [display_log2_brightness(t) for t in targets])


def render_at_brightness(style: S.Style, photo: np.ndarray, log2_brightness: float, *, iterations: int = 24
                         ) -> np.ndarray:
    """The style's render of the linear ``photo`` times one gain, found by bisection over +-8 stops, such that the
    render's log2 mean linear luminance is ``log2_brightness`` (the nearest reachable one where the style's
    clipping makes it unreachable)."""
    lo, hi = -8.0, 8.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if display_log2_brightness(style.apply(photo * np.float32(2.0 ** mid))) < log2_brightness:
            lo = mid
        else:
            hi = mid
    return style.apply(photo * np.float32(2.0 ** (0.5 * (lo + hi))))


def with_input_colour(display: np.ndarray, amounts: dict, *, saturation: bool = True, cast: bool = True
                      ) -> np.ndarray:
    """The clean linear photo with (some of) its RAW-like draw's colour (:func:`raw_like`'s ``amounts``): its
    desaturation and white-balance cast, not its exposure."""
    from ..training.unprocess import UnprocessParams, unprocess

    return unprocess(display, UnprocessParams(ev=0.0, saturation=amounts["saturation"] if saturation else 1.0,
                                              gains=tuple(amounts["gains"]) if cast else (1.0, 1.0, 1.0)))


def unpaired_reference(style: S.Style, display: np.ndarray, amounts: dict, input_lum: float, brightness_map
                       ) -> np.ndarray:
    """The unpaired reference of one test photo (module docstring): the style's render of the photo with its
    input's colour, as bright as ``brightness_map`` (:func:`unpaired_brightness_map`) says for ``input_lum``."""
    return render_at_brightness(style, with_input_colour(display, amounts),
                                float(brightness_map.of_log2(np.log2(input_lum))))


def exposure_rule_for(style: S.Style, train_photos: Sequence[Photo], train_draws: Sequence[tuple[np.ndarray, dict]]
                      ) -> tuple[float, float]:
    """:func:`fit_exposure_rule` on the training photos and their RAW-like draws (:func:`draws`)."""
    return fit_exposure_rule(style, [clean_linear(p.display) for p in train_photos], [a["ev"] for _, a in train_draws],
                             [mean_luminance(x) for x, _ in train_draws])


def fit_exposure_rule(style: S.Style, cleans: Sequence[np.ndarray], evs: Sequence[float],
                      input_lums: Sequence[float]) -> tuple[float, float]:
    """The rule ``(a, b)`` (gain in stops = ``a + b log2(mean input luminance)``) whose :func:`exposure_oracle`
    renders have the best mean PSNR against ``style(clean)`` over these photos: ``b`` from
    :data:`ORACLE_SLOPES`, ``a`` on a 0.5-stop grid in [-4, 4] refined to 0.1. Fitted on copies reduced to
    :data:`ORACLE_FIT_SIZE` px (PSNR capped at 100 dB so that an exact rule does not make the mean infinite)."""
    small = [_shrink(c, ORACLE_FIT_SIZE) for c in cleans]
    truths = [style.apply(c) for c in small]

    def mean_psnr(rule: tuple[float, float]) -> float:
        return float(np.mean([min(M.psnr(exposure_oracle(style, c, ev, lum, rule), t), 100.0)
                              for c, t, ev, lum in zip(small, truths, evs, input_lums)]))

    best = max(((mean_psnr((a, b)), a, b) for b in ORACLE_SLOPES for a in np.arange(-4.0, 4.01, 0.5)),
               key=lambda r: r[0])
    _, a0, b = best
    best = max([best] + [(mean_psnr((a0 + d, b)), a0 + d, b) for d in np.arange(-0.4, 0.41, 0.1) if abs(d) > 1e-9],
               key=lambda r: r[0])
    return round(float(best[1]), 2), float(best[2])


# ---------------------------------------------------------------------------------------------------------------
# The benchmark


def score(outputs: Sequence[np.ndarray], target_stats: np.ndarray, truths: Sequence[np.ndarray] | None,
          seed: int) -> dict:
    """Histogram intersection against the targets (with its bootstrap spread) and, given ``truths``, paired
    PSNR / dE."""
    stats = M.set_statistics(outputs, seed)
    hist = M.intersection_from_statistics(stats, target_stats).to_dict()
    spread = M.bootstrap_spread(stats, target_stats, seed=seed)
    paired = M.paired_metrics(outputs, truths).to_dict() if truths is not None else None
    return {"histogram": hist, "histogram_sd": spread, "paired": paired}


@dataclass
class _FoldRenders:
    """Every method's renders of one fold's test inputs, with what produced them."""

    renders: dict[str, list[np.ndarray]]  # method -> one image per test input (baselines, agent, oracle, ...)
    truths: list[np.ndarray]
    rule: tuple[float, float] | None  # the exposure oracle's rule, fitted on this fold's training inputs
    training: dict | None


def _render_fold(style: S.Style, train_photos: Sequence[Photo], test_photos: Sequence[Photo],
                 targets: Sequence[np.ndarray], baseline_fns: dict, cfg: BenchConfig, trainer: Trainer | None,
                 work: Path, fold: int | None, log: Callable[[str], None]) -> _FoldRenders:
    """Train (or load) a policy on ``train_photos`` and render ``test_photos`` with every method; the policy's
    files go under ``work`` (model/, train/), its sequences under ``cfg.out_dir/style/sequences``."""
    tag = style.name if fold is None else f"{style.name} fold {fold}"
    t0 = time.perf_counter()
    test_clean = [clean_linear(p.display) for p in test_photos]
    truths = [style.apply(c) for c in test_clean]
    test_raw = draws(test_photos, cfg.seed, test=True)
    test_inputs = [x for x, _ in test_raw]
    renders = {name: [fn(x) for x in test_inputs] for name, fn in baseline_fns.items()}
    log(f"[{tag}] {len(train_photos)} training inputs, {len(test_inputs)} test inputs "
        f"({time.perf_counter() - t0:.1f} s)")

    # The exposure oracle's rule is fitted on the training inputs (the same draws a trainer gets), never on the test.
    train_raw = draws(train_photos, cfg.seed, test=False)
    train_inputs = [x for x, _ in train_raw]
    rule = None
    if train_raw:
        rule = exposure_rule_for(style, train_photos, train_raw)
        renders["exposure_oracle"] = [exposure_oracle(style, c, amounts["ev"], mean_luminance(x), rule)
                                      for c, (x, amounts) in zip(test_clean, test_raw)]
        bmap = unpaired_brightness_map(train_inputs, targets)
        renders["unpaired_reference"] = [unpaired_reference(style, p.display, amounts, mean_luminance(x), bmap)
                                         for p, (x, amounts) in zip(test_photos, test_raw)]
        log(f"[{tag}] exposure oracle {rule[0]:+.2f} {rule[1]:+.2f} log2(mean luminance) stops, unpaired "
            f"reference ({time.perf_counter() - t0:.1f} s)")

    training = None
    if trainer is not None:
        pairs = validation_pairs(style, train_photos, train_raw, cfg.validate) if cfg.validate > 0 else None
        job = TrainingJob(style.name, train_inputs, list(targets), work / "train" / "inputs",
                          work / "train" / "targets", work / "model", cfg.minutes,
                          cfg.seed if cfg.train_seed is None else cfg.train_seed, cfg.device, cfg.resume, pairs,
                          cfg.snapshots, fold)
        t1 = time.perf_counter()
        policy, training = trainer(job)
        training = {**training, "seconds": round(time.perf_counter() - t1, 1)}
        log(f"[{tag}] policy ready ({training})")
        renders["agent"], seqs = agent_renders(policy, test_inputs)
        if training.get("last_model"):
            from ..agent.policy import Policy

            renders["agent_last_weights"], _ = agent_renders(Policy.load(training["last_model"]), test_inputs)
        seq_dir = Path(cfg.out_dir) / style.name / "sequences"
        seq_dir.mkdir(parents=True, exist_ok=True)
        for p, seq in zip(test_photos, seqs):
            (seq_dir / f"{p.stem}.json").write_text(json.dumps(seq, indent=2) + "\n")
    return _FoldRenders(renders, truths, rule, training)


# Rows of a style's table, in this order (those a run made).
_ORDER = ("agent", "agent_last_weights", "exposure_oracle", "unpaired_reference")


def run_folds(style: S.Style, splits: Sequence[tuple[Sequence[Photo], Sequence[Photo]]],
              target_photos: Sequence[Photo], cfg: BenchConfig, trainer: Trainer | None,
              log: Callable[[str], None] = _print) -> dict:
    """One style over ``splits`` (training photos, test photos): one split is an ordinary bench; several are
    cross-validation folds, each with its own policy (``cfg.out_dir/style/fold-K/``), and every method is scored on
    all folds' test renders together. Writes the contact sheet and the agent's sequences."""
    out = Path(cfg.out_dir) / style.name
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    targets = [style.apply(clean_linear(p.display)) for p in target_photos]
    target_stats = M.set_statistics(targets, cfg.seed)
    baseline_fns = {name: spec.make(targets) for name, spec in B.BASELINES.items()}
    log(f"[{style.name}] {len(targets)} targets ({time.perf_counter() - t0:.1f} s)")

    pooled = len(splits) > 1
    parts = [_render_fold(style, train, test, targets, baseline_fns, cfg, trainer,
                          out / f"fold-{k}" if pooled else out, k if pooled else cfg.fold, log)
             for k, (train, test) in enumerate(splits)]
    truths = [t for f in parts for t in f.truths]
    # A method is scored only where every fold has it (e.g. last weights only where every run chose among weights).
    names = [n for n in parts[0].renders if all(n in f.renders for f in parts)]
    renders = {n: [img for f in parts for img in f.renders[n]] for n in names}

    methods = {n: score(renders[n], target_stats, truths, cfg.seed) for n in names if n not in _ORDER}
    methods.update({n: score(renders[n], target_stats, truths, cfg.seed) for n in _ORDER if n in renders})
    if "exposure_oracle" in methods:  # fitted on each fold's own training inputs
        rules = [list(f.rule) for f in parts]
        methods["exposure_oracle"].update({"rules": rules} if pooled else {"rule": rules[0]})
    # The ceiling's paired scores are trivially perfect (it *is* the ground truth): only its histogram counts.
    methods["ceiling"] = {**score(truths, target_stats, None, cfg.seed), "paired": None}

    # The identity baseline is the input as a display shows it: it doubles as the "input" column.
    shown = ["identity"] + [n for n in renders if n not in ("identity", "exposure_oracle", "unpaired_reference")]
    columns = ["input (= identity)"] + shown[1:] + ["ground truth"]
    rows = [[renders[n][i] for n in shown] + [truths[i]] for i in range(min(SHEET_ROWS, len(truths)))]
    sheet_path = out / "contact-sheet.png"
    R.save_png(sheet_path, R.contact_sheet(rows, columns))
    log(f"[{style.name}] done in {time.perf_counter() - t0:.1f} s; sheet {sheet_path}")
    trainings = [f.training for f in parts]
    training = ({"folds": trainings} if pooled and trainer is not None else trainings[0])
    return {"title": style.title, "description": style.description, "expressible": style.expressible,
            "methods": methods, "training": training, "contact_sheet": str(sheet_path)}


def run_style(style: S.Style, train_photos: Sequence[Photo], test_photos: Sequence[Photo],
              target_photos: Sequence[Photo], cfg: BenchConfig, trainer: Trainer | None,
              log: Callable[[str], None] = _print) -> dict:
    """Everything for one style on one split (:func:`run_folds` with one fold)."""
    return run_folds(style, [(train_photos, test_photos)], target_photos, cfg, trainer, log)


def run(cfg: BenchConfig, log: Callable[[str], None] = _print) -> dict:
    """The whole benchmark; returns the results dict and writes ``results.json`` and ``results.md``."""
    from .images import list_images

    for name in cfg.styles:
        if name not in S.STYLES:  # unknown names fail before any work
            raise EvalInputError(f"unknown style {name!r}; known: {', '.join(S.STYLES)}")
    trainer = make_trainer(cfg.trainer)
    paths = list_images(cfg.photos_dir, "photos")
    if cfg.n_photos is not None:
        paths = paths[: cfg.n_photos]
    if cfg.folds and cfg.fold is None:
        splits = [fold_split(paths, cfg.seed, cfg.folds, k) for k in range(cfg.folds)]
    elif cfg.folds:
        splits = [fold_split(paths, cfg.seed, cfg.folds, cfg.fold)]
    else:
        splits = [split(paths, cfg.seed, cfg.n_test)]
    # Each photo is decoded once, whichever folds it is in; an unreadable one is skipped (and reported) everywhere.
    photo_of: dict[Path, Photo] = {}
    skipped: list[dict] = []
    for path in dict.fromkeys(p for s in splits for part in s.values() for p in part):
        got, bad = load_photos([path], cfg.size)
        skipped += bad
        if got:
            photo_of[path] = got[0]
    loaded = [{part: [photo_of[p] for p in files if p in photo_of] for part, files in s.items()} for s in splits]
    if any(not s["holdout_inputs"] for s in loaded) or not loaded[0]["targets"]:
        raise EvalInputError("no readable test inputs or targets left after skipping unreadable photos")
    if len(loaded) == 1:
        split_stems = {k: [p.stem for p in v] for k, v in loaded[0].items()}
    else:
        split_stems = {"holdout_inputs": [p.stem for s in loaded for p in s["holdout_inputs"]],
                       "targets": [p.stem for p in loaded[0]["targets"]],
                       "folds": [[p.stem for p in s["holdout_inputs"]] for s in loaded]}
    results = {
        "config": {**asdict(cfg), "photos_dir": str(cfg.photos_dir), "out_dir": str(cfg.out_dir)},
        "split": split_stems,
        "skipped": skipped,
        "styles": {},
    }
    for name in cfg.styles:
        results["styles"][name] = run_folds(S.get(name), [(s["train_inputs"], s["holdout_inputs"]) for s in loaded],
                                            loaded[0]["targets"], cfg, trainer, log)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(R.finite(results), indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(results))
    return results


def results_markdown(results: dict) -> str:
    cfg = results["config"]
    sizes = {k: len(v) for k, v in results["split"].items()}
    if "folds" in sizes:
        folds = results["split"]["folds"]
        split_sizes = (f"{len(folds)}-fold cross-validation of {sizes['holdout_inputs']} inputs (folds of "
                       f"{', '.join(str(len(f)) for f in folds)}: each scored with the policy trained on the "
                       f"others), targets {sizes['targets']}")
    else:
        split_sizes = ", ".join(f"{k} {v}" for k, v in sizes.items())
        if cfg.get("folds"):
            split_sizes += f"; fold {cfg['fold']} of {cfg['folds']}"
    lines = ["# Quality benchmark", "",
             f"Photos: {cfg['photos_dir']} ({split_sizes}); long edge {cfg['size']} px; seed {cfg['seed']}; "
             f"trainer {cfg['trainer']}, {cfg['minutes']} min per style.",
             "Histogram intersection against the style's target set (higher is better, the ceiling is the style's "
             "own renders of the test photos); PSNR / dE76 against those renders (paired). exposure_oracle: the "
             "style's own render with the exposure set from the input's mean luminance (the best such rule on the "
             "training inputs), a reference for the paired scores a method that must infer exposure can reach. "
             "unpaired_reference: the style's own render with the input's colour (cast, desaturation) left in and "
             "the brightness from the unpaired map of input to target brightness: where a faithful unpaired "
             "agent lands.", ""]
    for name, r in results["styles"].items():
        kind = "expressible by the 8 filters" if r["expressible"] else "not exactly expressible by the 8 filters"
        lines += [f"## {r['title']} ({name}: {kind})", "", r["description"], "", R.markdown_table(r["methods"]), ""]
        oracle = r["methods"].get("exposure_oracle", {})
        rules = {"": oracle["rule"]} if "rule" in oracle else {f", fold {k}": v for k, v in
                                                               enumerate(oracle.get("rules", []))}
        for whose, rule in rules.items():
            lines += [f"Exposure oracle's rule{whose}: {rule[0]:+.2f} {rule[1]:+.2f} log2(mean input luminance) "
                      "stops.", ""]
        training = r["training"] or {}
        runs = {f", fold {k}": t for k, t in enumerate(training["folds"])} if "folds" in training else (
            {"": training} if training else {})
        for whose, t in runs.items():
            lines += [f"Training{whose}: {t}", ""]
        lines += [f"Contact sheet: {r['contact_sheet']}", ""]
    if results["skipped"]:
        lines += ["Skipped files:", ""] + [f"- {s['path']}: {s['reason']}" for s in results["skipped"]] + [""]
    return "\n".join(lines)
