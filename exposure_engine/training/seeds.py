"""Several training seeds side by side, one process each, and the best one kept (``train --seeds N``).

Why: ``cpu-fast`` trains on one thread (at its layer sizes a second thread costs more than it computes:
docs/training.md, "One thread or two"), so one run leaves a laptop's other cores idle; and runs of one recipe that
differ only in their seed spread widely (six punchy seeds: 21.4-24.0 dB). ``--seeds N`` trains seeds S .. S+N-1 at
once, each in its own process and folder ``OUT/seeds/seed-K/`` (exactly what ``train --seed K --out
OUT/seeds/seed-K`` writes, its own validation choosing its weights; its log in ``train.log`` there), then ranks
their saved models on the same RAW-like draws of the *target* photos, each developed back towards its finished
self (:func:`~exposure_engine.training.select.score_policies`, each model as it predicts, level rule included),
and copies the best into ``OUT``, with ``OUT/seeds.json`` (every seed's scores and the choice) and
``OUT/report/seeds.png`` (every seed's validation and histogram-intersection curves).

Why the targets rank: every run fits its level rule's brightness map on its own draws of the training inputs, so
scoring on those photos flatters the run whose map happens to fit them (measured: docs/training.md, "Several seeds
at once"); the targets are photos no run saw as inputs, and every run's critic and rule saw them alike. They need
no pairs, so ``--inputs/--targets`` runs can be ranked too.

``--resume`` resumes every seed from its own checkpoint. A parent killed by any signal takes its children with it
(``PR_SET_PDEATHSIG``); their checkpoints stay.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

from .loop import CHECKPOINT, TrainConfig, _world
from .select import DRAWS

SEEDS_DIR = "seeds"
CHOICE = "seeds.json"
LOG = "train.log"
NOT_COPIED = {CHECKPOINT, "cache", "snapshots", LOG}  # a seed's files that stay in its own folder


class SeedsError(RuntimeError):
    """A seed's run failed; the others' folders are kept."""


def seed_dir(out: str | os.PathLike, seed: int) -> Path:
    return Path(out) / SEEDS_DIR / f"seed-{seed}"


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when its parent dies, even of kill -9 (no orphaned trainings left running).
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(cfg: TrainConfig, validation_files: list[Path], log_path: Path) -> None:
    """One seed's run, in a spawned process, its stdout and stderr (also C-level output) in ``log_path``."""
    _die_with_parent()
    log = open(log_path, "ab", buffering=0)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = open(log.fileno(), "w", buffering=1, closefd=False)
    from . import data as D
    from .loop import train

    if validation_files:  # the draw a standalone `train --seed K` would validate on
        cfg.validation = D.validation_pairs(validation_files, seed=cfg.seed)
    print(json.dumps(train(cfg)), flush=True)


def _copy_model(src: Path, dst: Path) -> None:
    """The chosen seed's model files into ``dst`` (each file replaced atomically; its checkpoint, cache and log stay
    in ``src``)."""
    for item in sorted(src.iterdir()):
        if item.name in NOT_COPIED:
            continue
        if item.is_dir():  # replaced whole: nothing of an earlier choice's folder stays
            shutil.rmtree(dst / item.name, ignore_errors=True)
            shutil.copytree(item, dst / item.name)
        else:
            tmp = dst / f".{item.name}.tmp"
            shutil.copy2(item, tmp)
            os.replace(tmp, dst / item.name)


def train_seeds(base: TrainConfig, n: int, validation_files: list[Path], draws: int = DRAWS) -> dict:
    """Train seeds ``base.seed`` .. ``base.seed + n - 1`` of ``base`` side by side and keep the best one in
    ``base.out``: the best mean PSNR over ``draws`` RAW-like draws of the target photos ``base.targets``.
    ``validation_files``: finished photos whose RAW-like draws choose each run's weights (``train --split-from``'s
    input half; empty: each run keeps its last weights). Returns a summary dict (also ``seeds.json``)."""
    from tqdm import tqdm

    if n < 2:
        raise ValueError(f"--seeds needs at least 2 seeds, not {n}")
    if _world()[1] > 1:
        raise ValueError("--seeds starts its own processes: run it without torchrun")
    out = Path(base.out)
    name = base.name or out.name
    t0 = time.monotonic()
    ctx = mp.get_context("spawn")  # a fresh interpreter per seed: no torch state or threads forked half-way
    runs = []
    for k in range(n):
        cfg = dataclasses.replace(base, seed=base.seed + k, out=seed_dir(out, base.seed + k), progress=False,
                                  name=name, validation=None, counter=ctx.Value("q", 0))
        cfg.out.mkdir(parents=True, exist_ok=True)
        runs.append((cfg, ctx.Process(target=_child, args=(cfg, list(validation_files), cfg.out / LOG),
                                      name=f"seed-{cfg.seed}")))
    threads = n * max(1, base.recipe.threads)
    if threads > (os.cpu_count() or 1):
        print(f"note: {n} seeds x {base.recipe.threads} thread(s) on {os.cpu_count()} cores: the runs share cores "
              f"and each is slower", file=sys.stderr)
    print(f"training seeds {base.seed}..{base.seed + n - 1} side by side; logs in {out / SEEDS_DIR}/seed-*/{LOG}",
          file=sys.stderr, flush=True)
    from .select import draws_of, score_policies

    bar = tqdm(total=n * base.total, desc=f"{n} seeds", unit="it", disable=not base.progress, dynamic_ncols=True,
               smoothing=0.05)
    try:
        for _, p in runs:
            p.start()
        # the ranking's pairs while the runs prepare their data: unreadable targets fail now, not after training
        pairs = draws_of(list(base.targets), draws)
        while any(p.is_alive() for _, p in runs):
            time.sleep(1.0)
            bar.n = sum(cfg.counter.value for cfg, _ in runs)
            bar.set_postfix({f"seed {cfg.seed}": cfg.counter.value for cfg, _ in runs}, refresh=False)
            bar.refresh()
    except BaseException:  # Ctrl-C or an error here: stop the children too (their checkpoints stay)
        for _, p in runs:
            if p.is_alive():
                p.terminate()
                p.join()
        raise
    finally:
        bar.close()
    failed = [(cfg, p.exitcode) for cfg, p in runs if p.exitcode != 0]
    if failed:
        what = "; ".join(f"seed {cfg.seed} (exit code {code}, log {cfg.out / LOG})" for cfg, code in failed)
        raise SeedsError(f"{what} failed; the other seeds' models are in {out / SEEDS_DIR}; --resume continues "
                         f"every seed from its checkpoint")

    from ..agent.policy import Policy, atomic_write

    policies = {str(cfg.seed): Policy.load(cfg.out) for cfg, _ in runs}
    rows = score_policies(policies, pairs)
    best = max(rows, key=lambda r: r["val_psnr"])
    chosen = int(best["model"])
    _copy_model(seed_dir(out, chosen), out)
    iterations = {seed: pol.config["training"]["iterations"] for seed, pol in policies.items()}
    summary = {"seeds": [cfg.seed for cfg, _ in runs], "chosen_seed": chosen,
               "rule": f"best mean PSNR over {draws} RAW-like draws of the {len(base.targets)} target photos, "
                       f"each developed back towards itself (level rule included)",
               "target_psnr": best["val_psnr"], "scores": rows, "iterations": iterations,
               "seconds": round(time.monotonic() - t0, 1), "out": str(out)}
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config.setdefault("training", {})["seeds"] = {k: v for k, v in summary.items() if k != "out"}
    atomic_write(config_path, (json.dumps(config, indent=2) + "\n").encode())
    atomic_write(out / CHOICE, (json.dumps(summary, indent=1) + "\n").encode())
    try:  # every seed's curves in one figure, beside the kept seed's own report
        from .report import compare_runs

        score = {int(r["model"]): r["val_psnr"] for r in rows}
        compare_runs([cfg.out for cfg, _ in runs], out / "report" / "seeds.png",
                     [f"seed {cfg.seed}{' (kept)' if cfg.seed == chosen else ''}: targets {score[cfg.seed]:.2f} dB"
                      for cfg, _ in runs])
    except Exception as e:  # a plotting failure must not lose the choice
        print(f"seeds.png not written: {type(e).__name__}: {e}", file=sys.stderr)
    print(f"chose seed {chosen} (target photos redeveloped: {best['val_psnr']:.2f} dB; "
          + ", ".join(f"seed {r['model']} {r['val_psnr']:.2f}" for r in rows) + f"); model in {out}",
          file=sys.stderr, flush=True)
    return summary
