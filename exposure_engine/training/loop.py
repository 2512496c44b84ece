"""The training loop: Algorithm 1 of Hu et al. (TOG 2018) as the reference code runs it.

Per iteration t of T:

1. the critic D (WGAN with a one-sided gradient penalty) takes ``critic_steps`` steps on real target proxies
   against finished (5-step) agent outputs from the image pool;
2. a batch of states is drawn from the replay pool; the actor picks a filter for each (sampled from pi1) and
   its parameters (pi2), giving s' = filter(s). The reward is
   ``r = 0.05 (D(s') - D(s)) - overexposure(s') - (1 - t/T) 0.05 (ln 8 - H(pi1)) - 1.0 [filter reused]``,
   ``Q = r + V(s')`` (V(s') = 0 after the last step), advantage ``A = Q - V(s)``;
   value loss ``mean(A^2)``; actor loss ``mean(-Q - log pi1(a) A)``: the parameters get the deterministic policy
   gradient through the differentiable filter, D and V; the discrete choice gets REINFORCE with the advantage
   (recipe options, not in the paper: ``choice_gradient="expected"``, off in both named recipes, and
   ``brightness_anchor`` w, 0.5 in ``cpu-fast`` and off in ``paper``, which adds ``w (phi(s') - phi(s))`` to r,
   training/anchor.py, with ``anchor_in_choice`` saying whether its term enters the choice's advantage; and
   ``greedy_from``, off in both, from which fraction of T the applied filter is pi1's argmax as at inference);
3. the stepped states go back to the pool; finished ones feed the critic's image pool.

Learning rates decay as ``lr * 0.1^(3t/T)``. Several processes (torchrun; gloo, or NCCL with one GPU each) average
gradients with an all-reduce after each backward; each draws its own data. Rank 0 writes atomic checkpoints (temp
file + os.replace), the final model folder, ``history.json`` and the report plots (these two also at checkpoints,
at most every ``PROGRESS_EVERY_S``, so that a long run can be watched and a killed one keeps its curves).

Devices: the networks and the batches live on ``TrainConfig.device`` (a GPU when asked for); the data and the replay
pools stay on the CPU, and checkpoints are loaded onto the CPU first, so a checkpoint written on a GPU resumes on a
CPU and back. Losses are
logged as tensors and read once per ``LOG_EVERY`` iterations, so a GPU is not stalled by a sync per step.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import filters as F
from ..agent.networks import MAX_ENTROPY, Actor, Arch, Discriminator, Value, apply_choice, entropy
from ..agent.level import LevelRule
from ..agent.policy import STATE_SIZE, Policy, atomic_write, choose
from . import anchor as A
from . import data as D
from .recipes import Recipe
from .replay import ImagePool, StatePool

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
LOG_EVERY = 10  # iterations averaged into one history row
PROGRESS_EVERY_S = 120.0  # history.json and report/ are refreshed at a checkpoint at most this often (and at the end)


@dataclass
class TrainConfig:
    inputs: list[Path]
    targets: list[Path]
    out: Path
    recipe: Recipe
    unprocess: bool = False
    minutes: float | None = None
    iterations: int | None = None  # overrides recipe.iterations (also the length of the lr / entropy schedules)
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 200
    name: str | None = None
    progress: bool = True
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N" (the CLI resolves "auto", exposure_engine.devices)
    extra: dict = field(default_factory=dict)  # recorded in config.json (e.g. the data split)
    # Paired validation proxies (train --split-from): every monitor step scores the mean edit's PSNR on them, and
    # the weights that scored best are what the model folder gets (the last iterate stays in the checkpoint).
    validation: D.ValidationPairs | None = None
    snapshots: bool = False  # also save the monitored weights of every monitor step as OUT/snapshots/NNNNNN/
    # Anything with a writable ``.value`` (a multiprocessing.Value): set to the iteration reached, for a parent
    # process's progress bar (train --seeds, training/seeds.py).
    counter: Any = None

    @property
    def total(self) -> int:
        return int(self.iterations or self.recipe.iterations)


# --------------------------------------------------------------------------------------------------------------
# distributed helpers (no-ops in a single process)


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _sync_grads(modules: list[torch.nn.Module], world: int) -> None:
    """Average gradients over processes with one all-reduce (flattened) per call."""
    if world == 1:
        return
    import torch.distributed as dist

    params = [p for m in modules for p in m.parameters() if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    off = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[off:off + n].view_as(p.grad))
        off += n


def _broadcast_params(modules: list[torch.nn.Module], world: int) -> None:
    if world == 1:
        return
    import torch.distributed as dist

    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, 0)


def _any(flag: bool, world: int, device: torch.device | None = None) -> bool:
    """True on every rank if ``flag`` is True on any (so all ranks stop at the same iteration)."""
    if world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module):
    """Run a module without accumulating gradients into its parameters (gradients still flow to its input)."""
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, fl in zip(modules, flags):
            for p, f in zip(m.parameters(), fl):
                p.requires_grad_(f)


# --------------------------------------------------------------------------------------------------------------
# the two updates


def critic_loss(disc: Discriminator, real: torch.Tensor, fake: torch.Tensor, gp_weight: float
                ) -> tuple[torch.Tensor, dict]:
    """WGAN critic loss with the one-sided gradient penalty on random interpolates (``(B,3,S,S)`` each)."""
    d_real, d_fake = disc(real), disc(fake)
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(disc(mix).sum(), mix, create_graph=True)
    norm = grad.flatten(1).norm(dim=1)
    gp = torch.clamp(norm - 1.0, min=0.0).pow(2).mean()
    w = d_real.mean() - d_fake.mean()
    return -w + gp_weight * gp, {"wasserstein": w.detach(), "gp": gp.detach()}


def overexposure(img: torch.Tensor) -> torch.Tensor:
    """``(B,3,S,S) -> (B,)``: the over-exposure penalty's ``mean(max(x - 1, 0)^2)`` of each image."""
    return torch.clamp(img - 1.0, min=0.0).pow(2).flatten(1).mean(1)


def step_reward(recipe: Recipe, d_gain: torch.Tensor, over: torch.Tensor, reused: torch.Tensor,
                ent_pen: torch.Tensor | float = 0.0, anchor_gain: torch.Tensor | float = 0.0) -> torch.Tensor:
    """The reward of a step from its critic gain ``D(s') - D(s)``, over-exposure, reuse flag, entropy penalty and
    brightness-anchor gain ``phi(s') - phi(s)`` (any broadcastable shapes): the one formula the sampled step and
    :func:`expected_q` share."""
    return (recipe.reward_scale * d_gain - recipe.overexposure_weight * over - ent_pen
            - recipe.reuse_penalty * reused + recipe.brightness_anchor * anchor_gain)


def anchor_gain(recipe: Recipe, img: torch.Tensor, new_img: torch.Tensor, anchor: torch.Tensor | None
                ) -> tuple[torch.Tensor | float, torch.Tensor | None]:
    """``(phi(s') - phi(s), |b(s') - anchor|)`` of the brightness anchor, ``(B,)`` each (``(0, None)`` when the
    recipe has it off); the gain is differentiable in ``new_img``, the distance (stops, for the logs) is not."""
    if recipe.brightness_anchor == 0.0:
        return 0.0, None
    if anchor is None:
        raise ValueError(f"recipe {recipe.name!r} has brightness_anchor on: the step needs the episodes' anchors")
    with torch.no_grad():
        before = A.potential(img, anchor, recipe.anchor_white_point)  # a state of the pool: no gradient to carry
    after = A.potential(new_img, anchor, recipe.anchor_white_point)
    return after - before, -after.detach()


def agent_step(actor: Actor, value: Value, disc: Discriminator, img: torch.Tensor, step: torch.Tensor,
               used: torch.Tensor, recipe: Recipe, progress: float, anchor: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """One actor/value update's loss on a batch of states. Returns ``(loss, new_img, new_step, new_used, logs)``.

    img ``(B,3,S,S)``, step ``(B,)`` long, used ``(B,8)``, anchor ``(B,)`` (the episodes' brightness anchors; only
    read when the recipe's ``brightness_anchor`` is on), all on the networks' device; ``progress`` = t / T in
    [0, 1]. The logs are 0-d tensors (``usage``: filter counts ``(8,)``), read by the caller when it logs."""
    b = img.shape[0]
    probs, packed_all = actor(img, step, used)
    if progress >= recipe.greedy_from:  # inference's own choice: the likeliest filter not used yet
        choice = choose(probs.detach(), used, probs.new_zeros(b), deterministic=True, allow_reuse=False)
    else:
        choice = torch.multinomial(probs.detach(), 1).squeeze(1)
    new_img = apply_choice(img, choice, packed_all)
    rows = torch.arange(b, device=img.device)
    reused = used[rows, choice]
    new_used = used.clone()
    new_used[rows, choice] = 1.0
    new_step = step + 1
    done = new_step >= recipe.n_steps

    with torch.no_grad():
        d_in = disc(img)
    with frozen(disc, value):
        d_out = disc(new_img)
        v_next = value(new_img, new_step, new_used).view(b, -1)  # (B, value heads)
    v_next = torch.where(done.unsqueeze(1), torch.zeros_like(v_next), v_next)
    over = overexposure(new_img)
    ent = entropy(probs)
    ent_pen = (1.0 - progress) * recipe.entropy_weight * (MAX_ENTROPY - ent)
    a_gain, a_dist = anchor_gain(recipe, img, new_img, anchor)
    # One column per value head: the whole reward, or (anchor_in_choice False) the critic part and the anchor part.
    # Column 0 is what the filter choice learns from; the parameters' deterministic gradient sees the whole Q.
    if recipe.anchor_in_choice:
        parts = step_reward(recipe, d_out - d_in, over, reused, ent_pen, a_gain).unsqueeze(1)
    else:
        parts = torch.stack([step_reward(recipe, d_out - d_in, over, reused, ent_pen),
                             recipe.brightness_anchor * a_gain], 1)
    reward = parts.sum(1)
    q_parts = parts + v_next
    q = q_parts.sum(1)
    v = value(img, step, used).view(b, -1)
    adv_parts = q_parts.detach() - v
    value_loss = adv_parts.pow(2).sum(1).mean()
    choice_adv, choice_v = adv_parts[:, 0].detach(), v[:, 0].detach()
    if recipe.choice_gradient == "expected":
        choice_loss = -(probs * (expected_q(disc, value, img, d_in, used, new_step, done, packed_all.detach(), recipe,
                                            anchor) - choice_v.unsqueeze(1))).sum(1)
    else:
        choice_loss = -torch.log(probs[rows, choice]) * choice_adv
    actor_loss = (-q + choice_loss).mean()
    logs = {"actor_loss": actor_loss.detach(), "value_loss": value_loss.detach(),
            "reward": reward.detach().mean(), "d_gain": (d_out - d_in).detach().mean(),
            "overexposure": over.detach().mean(), "entropy": ent.detach().mean(),
            "reuse": reused.mean(), "usage": torch.bincount(choice, minlength=F.N_FILTERS)}
    if a_dist is not None:  # finished images' distance from their anchors, stops (NaN: none finished here)
        logs["anchor_error"] = (a_dist * done).sum() / done.sum()  # 0 / 0 = NaN, without a GPU sync
    return actor_loss + value_loss, new_img.detach(), new_step, new_used, logs


def expected_q(disc: Discriminator, value: Value, img: torch.Tensor, d_in: torch.Tensor, used: torch.Tensor,
               new_step: torch.Tensor, done: torch.Tensor, packed_all: torch.Tensor, recipe: Recipe,
               anchor: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 8)``: each filter's Q(s, a) = r(s, a) + V(s') with the parameters the actor proposed for it, without
    gradients (recipe ``choice_gradient="expected"``). The entropy penalty is left out: it is the same for every
    filter, so it cannot move the choice's expected gradient (it acts through its own gradient in the loss). With
    ``anchor_in_choice=False`` it is the critic part's Q (no anchor term, the value's first head)."""
    b, n = img.shape[0], F.N_FILTERS
    with torch.no_grad():
        # every filter on the whole batch, filter-major: (8B, 3, S, S), one D and one V call for all of them
        outs = torch.cat([f.apply(img, packed_all[:, f.index, : f.n_packed]) for f in F.FILTERS])
        choice = torch.arange(n, device=img.device).repeat_interleave(b)
        used_all = used.repeat(n, 1)
        used_all[torch.arange(n * b, device=img.device), choice] = 1.0
        d_out = disc(outs).view(n, b)
        v_next = value(outs, new_step.repeat(n), used_all)
        v_next = (v_next if recipe.anchor_in_choice else v_next[:, 0]).view(n, b)
        v_next = torch.where(done.unsqueeze(0), torch.zeros_like(v_next), v_next)
        gain = 0.0
        if recipe.anchor_in_choice:
            gain, _ = anchor_gain(recipe, img.repeat(n, 1, 1, 1), outs, None if anchor is None else anchor.repeat(n))
            gain = gain.view(n, b) if torch.is_tensor(gain) else gain
        reward = step_reward(recipe, d_out - d_in.unsqueeze(0), overexposure(outs).view(n, b), used.t(), 0.0, gain)
        return (reward + v_next).t()


# --------------------------------------------------------------------------------------------------------------


def _lr(recipe: Recipe, progress: float) -> float:
    return recipe.lr_d * recipe.lr_decay ** progress


def _finish_episodes(actor: Actor, images: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Run fresh inputs through whole episodes without gradients (to seed the critic's image pool)."""
    with torch.no_grad():
        b, dev = images.shape[0], images.device
        step = torch.zeros(b, dtype=torch.long, device=dev)
        used = torch.zeros(b, F.N_FILTERS, device=dev)
        for t in range(n_steps):
            probs, packed_all = actor(images, step, used)
            choice = torch.multinomial(probs, 1).squeeze(1)
            images = apply_choice(images, choice, packed_all)
            used[torch.arange(b, device=dev), choice] = 1.0
            step = step + 1
    return images


def validation_psnr(policy: Policy, pairs: D.ValidationPairs) -> float:
    """Mean PSNR (dB) of the policy's mean edits of the validation inputs against their references, on proxies
    (each capped at 100 dB, so that one exact edit does not make the mean infinite)."""
    from ..evaluation.metrics import psnr

    preds = policy.predict_batch(pairs.inputs, dropout=False)
    return float(np.mean([min(psnr(p.proxies[-1], ref), 100.0) for p, ref in zip(preds, pairs.references)]))


def _log_row(acc: list[dict]) -> dict:
    """Means of the logged 0-d tensors over ``acc`` (one GPU sync; NaNs skipped), and the summed filter counts."""
    keys = [k for k in acc[0] if k != "usage"]
    means = torch.stack([torch.stack([a[k].float() for a in acc]).nanmean() for k in keys]).tolist()
    row = dict(zip(keys, means))
    row["usage"] = torch.stack([a["usage"] for a in acc]).sum(0).tolist()
    return row


def _cpu_copy(module: torch.nn.Module) -> torch.nn.Module:
    """The module itself on a CPU run, a CPU copy otherwise (for Policy: monitor, hashes, the saved model)."""
    if next(module.parameters()).device.type == "cpu":
        return module
    return copy.deepcopy(module).cpu()


def _setup_device(requested: str, world: int) -> tuple[torch.device, str]:
    """The device this process trains on and the process-group backend. Under torchrun with GPUs each rank takes
    GPU ``LOCAL_RANK``; NCCL when every rank has a GPU of its own, gloo otherwise (it also reduces CUDA tensors)."""
    dev = torch.device(requested)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested}: no CUDA GPU is available to torch here")
        if dev.index is None:  # a plain "cuda": the current GPU, or under torchrun GPU LOCAL_RANK
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
                               if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" and torch.cuda.device_count() >= world else "gloo"
    return dev, backend


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) and write the model folder ``cfg.out``. Returns a summary dict."""
    t_start = time.monotonic()
    rank, world = _world()
    dev, backend = _setup_device(cfg.device, world)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend)
    recipe = cfg.recipe
    torch.set_num_threads(max(1, recipe.threads))
    if recipe.threads > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE" and rank == 0:
        print("note: on a busy machine set OMP_WAIT_POLICY=PASSIVE before starting (docs/training.md: threads)",
              file=sys.stderr)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    T = cfg.total
    arch = Arch.from_dict(recipe.arch_dict())
    is_main = rank == 0
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if is_main else (lambda *a: None)

    # ---- data (rank 0 fills the cache first; the others then read it) ----
    def build():
        ins = D.build_crops(cfg.inputs, "input", cache_dir=out / "cache", seed=cfg.seed, unprocess=cfg.unprocess,
                            progress=cfg.progress and is_main)
        tgs = D.build_crops(cfg.targets, "target", cache_dir=out / "cache", seed=cfg.seed,
                            progress=cfg.progress and is_main)
        return ins, tgs

    if world > 1:
        import torch.distributed as dist

        if is_main:
            inputs, targets = build()
        dist.barrier()
        if not is_main:
            inputs, targets = build()
    else:
        inputs, targets = build()
    for s in inputs.skipped + targets.skipped:
        log(f"skipped {s}")
    log(f"data: {len(inputs.files)} inputs ({inputs.crops.shape[0]} crops), {len(targets.files)} targets "
        f"({targets.crops.shape[0]} crops); training on {dev}" + (f" ({torch.cuda.get_device_name(dev)})"
                                                                    if dev.type == "cuda" else ""))

    rng = np.random.default_rng([cfg.seed, rank])
    torch.manual_seed(cfg.seed * 1000 + rank)  # seeds the CUDA generators too
    in_sampler = D.ProxySampler(inputs.crops, STATE_SIZE, rng, augment=recipe.jitter or None)
    tg_sampler = D.ProxySampler(targets.crops, STATE_SIZE, rng)
    batch = max(1, recipe.batch // world)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (then broadcast anyway)
        actor, value, disc = Actor(arch), Value(arch, recipe.value_heads), Discriminator(arch)
    actor, value, disc = actor.to(dev), value.to(dev), disc.to(dev)
    actor.train()
    _broadcast_params([actor, value, disc], world)
    # Polyak average of the actor (recipe.ema): updated after every actor step, checkpointed, and what is saved.
    ema = copy.deepcopy(actor).requires_grad_(False) if recipe.ema > 0 else None
    betas = tuple(recipe.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=recipe.lr_d, betas=betas)
    opt_a = torch.optim.Adam(actor.parameters(), lr=recipe.lr_d * recipe.actor_lr_ratio, betas=betas)
    opt_v = torch.optim.Adam(value.parameters(), lr=recipe.lr_d * recipe.actor_lr_ratio * recipe.value_lr_ratio,
                             betas=betas)
    anchor_of = (A.BrightnessAnchor.fit(inputs.crops, targets.crops, recipe.anchor_white_point)
                 if recipe.brightness_anchor else None)
    level_cfg = {}  # config.json's "level": the rule every policy saved here applies (agent/level.py)
    if recipe.level_rule:
        bmap = anchor_of if anchor_of is not None else A.BrightnessAnchor.fit(inputs.crops, targets.crops)
        level_cfg = {"level": LevelRule.fit(bmap, targets.frames, inputs.frames).to_dict()}
    pool = StatePool(recipe.pool_size, in_sampler.sample, recipe.n_steps, rng, anchor_of)
    fakes = ImagePool(recipe.fake_pool_size, rng)
    history: list[dict] = []
    monitor: list[dict] = []
    best: dict | None = None  # {"iteration", "val_psnr", "state"}: the best-validated weights so far
    start_iter, elapsed_before = 0, 0.0

    ckpt_path = out / CHECKPOINT
    if cfg.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        trained = Recipe.from_dict(ck["recipe"])
        if trained.widths != recipe.widths or trained.value_heads != recipe.value_heads:
            raise ValueError(f"{ckpt_path}: checkpoint was trained with recipe {ck['recipe']['name']!r} (widths "
                             f"{list(trained.widths)}, anchor_in_choice {trained.anchor_in_choice}), not "
                             f"{recipe.name!r}")
        actor.load_state_dict(ck["actor"]), value.load_state_dict(ck["value"]), disc.load_state_dict(ck["disc"])
        opt_a.load_state_dict(ck["opt_actor"]), opt_v.load_state_dict(ck["opt_value"])
        opt_d.load_state_dict(ck["opt_disc"])
        pool.load_state_dict(ck["pool"]), fakes.load_state_dict(ck["fakes"])
        history, monitor = ck["history"], ck.get("monitor", [])
        best = ck.get("best")
        start_iter, elapsed_before = int(ck["iteration"]), float(ck.get("elapsed", 0.0))
        if "torch_rng" in ck and world == 1:
            torch.set_rng_state(ck["torch_rng"])
            rng.bit_generator.state = ck["np_rng"]
            if dev.type == "cuda" and ck.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ck["cuda_rng"], dev)
        _broadcast_params([actor, value, disc], world)
        if ema is not None:
            ema.load_state_dict(ck["ema_actor"] if ck.get("ema_actor") is not None else actor.state_dict())
        log(f"resumed from {ckpt_path} at iteration {start_iter}")
    elif cfg.resume:
        log(f"--resume: no checkpoint in {out}, starting from scratch")
    if len(fakes) == 0:
        fakes.add(_finish_episodes(actor, in_sampler.sample(recipe.fake_pool_size).to(dev), recipe.n_steps).cpu())

    # fixed monitor set: input and target proxies (centre crops) for the histogram-intersection curve
    mon_in = inputs.crops[:: max(1, len(inputs.crops) // 64)][:64]
    mon_tg = targets.crops[:: max(1, len(targets.crops) // 256)][:256]
    c0 = (D.CROP_SIDE - 64) // 2
    mon_in = np.ascontiguousarray(mon_in[:, c0:c0 + 64, c0:c0 + 64])
    mon_tg = np.ascontiguousarray(mon_tg[:, c0:c0 + 64, c0:c0 + 64])

    def checkpoint(iteration: int, progress: bool = True) -> None:
        if not is_main:
            return
        state = {"actor": actor.state_dict(), "value": value.state_dict(), "disc": disc.state_dict(),
                 "opt_actor": opt_a.state_dict(), "opt_value": opt_v.state_dict(), "opt_disc": opt_d.state_dict(),
                 "pool": pool.state_dict(), "fakes": fakes.state_dict(), "history": history, "monitor": monitor,
                 "iteration": iteration, "elapsed": elapsed_before + time.monotonic() - t_start,
                 "recipe": recipe.to_dict(), "config": {"arch": arch.to_dict(), "recipe": recipe.to_dict()},
                 "torch_rng": torch.get_rng_state(), "np_rng": rng.bit_generator.state, "seed": cfg.seed,
                 "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                 "ema_actor": None if ema is None else ema.state_dict(), "best": best}
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(ckpt_path, buf.getvalue())
        if progress and (last_progress is None or time.monotonic() - last_progress >= PROGRESS_EVERY_S):
            save_progress()

    last_progress: float | None = None  # when save_progress last ran

    def save_progress() -> None:
        # history.json and the report as of now: a long run can be watched while it trains (e.g. with
        # `python -m exposure_engine.training.report`), and a killed one keeps its curves
        nonlocal last_progress
        atomic_write(out / HISTORY, json.dumps({"history": history, "monitor": monitor}, indent=1).encode())
        try:
            from .report import write_report

            write_report(history, monitor, out / "report")
        except Exception as e:  # a plotting failure must not lose a training run
            log(f"report not written: {type(e).__name__}: {e}")
        last_progress = time.monotonic()

    def run_monitor(iteration: int) -> None:
        nonlocal best
        from .report import proxy_histogram_intersection

        watched = _cpu_copy(actor if ema is None else ema)  # the weights that will be saved
        # The policy's own programs, without the level rule: with it, validation chose iteration 100 of 6,000
        # (an all but untrained policy whose brightness the rule sets; docs/training.md, "The level rule").
        pol = Policy(watched, name="monitor")
        preds = pol.predict_batch(mon_in, seeds=list(range(len(mon_in))))
        outs = np.stack([np.clip(p.proxies[-1], 0, 1) for p in preds])
        row = {"iteration": iteration, **proxy_histogram_intersection(outs, mon_tg)}
        if cfg.validation is not None:
            row["val_psnr"] = validation_psnr(pol, cfg.validation)
            if best is None or row["val_psnr"] > best["val_psnr"]:
                best = {"iteration": iteration, "val_psnr": row["val_psnr"],
                        "state": {k: v.detach().cpu().clone() for k, v in watched.state_dict().items()}}
        if cfg.snapshots:
            pol.name = f"{cfg.name or out.name}@{iteration}"
            pol.save(out / "snapshots" / f"{iteration:06d}", extra_config={"training": {"iteration": iteration,
                                                                                      **cfg.extra},
                                                                          "metrics": {"monitor": row}, **level_cfg})
        actor.train()  # Policy() switched it to eval; training relies on nn.Dropout being active
        monitor.append(row)

    from tqdm import tqdm

    deadline = None if cfg.minutes is None else t_start + 60.0 * cfg.minutes
    bar = tqdm(total=T, initial=start_iter, desc="training", unit="it", disable=not (cfg.progress and is_main),
               dynamic_ncols=True, smoothing=0.05)
    if cfg.counter is not None:
        cfg.counter.value = start_iter
    acc: list[dict] = []
    it = start_iter
    stopped_by = "iterations"
    while it < T:
        if _any(deadline is not None and time.monotonic() > deadline, world, dev if backend == "nccl" else None):
            stopped_by = "minutes"
            break
        progress = it / T
        lr = _lr(recipe, progress)
        for g in opt_d.param_groups:
            g["lr"] = lr
        for g in opt_a.param_groups:
            g["lr"] = lr * recipe.actor_lr_ratio
        for g in opt_v.param_groups:
            g["lr"] = lr * recipe.actor_lr_ratio * recipe.value_lr_ratio

        n_critic = recipe.critic_steps_boost if (it < recipe.boost_first or it % recipe.boost_every == 0) \
            else recipe.critic_steps
        for _ in range(n_critic):
            real = tg_sampler.sample(batch).to(dev, non_blocking=True)
            loss_d, dlogs = critic_loss(disc, real, fakes.sample(batch).to(dev, non_blocking=True), recipe.gp_weight)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            _sync_grads([disc], world)
            opt_d.step()
            dlogs["d_loss"] = loss_d.detach()

        idx, *state = pool.sample(batch)
        loss, new_img, new_step, new_used, alogs = agent_step(actor, value, disc, *(t.to(dev) for t in state),
                                                              recipe, progress, pool.anchor[idx].to(dev))
        opt_a.zero_grad(set_to_none=True)
        opt_v.zero_grad(set_to_none=True)
        loss.backward()
        _sync_grads([actor, value], world)
        opt_a.step()
        opt_v.step()
        if ema is not None:
            with torch.no_grad():
                for pe, pa in zip(ema.parameters(), actor.parameters()):
                    pe.lerp_(pa, 1.0 - recipe.ema)
        fakes.add(pool.put_back(idx, new_img.cpu(), new_step.cpu(), new_used.cpu()))
        it += 1

        acc.append({**dlogs, **alogs})
        if it % LOG_EVERY == 0 or it == T:
            row = {"iteration": it, "seconds": round(elapsed_before + time.monotonic() - t_start, 2), "lr_d": lr,
                   **_log_row(acc)}
            history.append(row)
            acc = []
            post = {"W": f"{row['wasserstein']:.3f}", "A": f"{row['actor_loss']:.3f}",
                    "V": f"{row['value_loss']:.4f}", "R": f"{row['reward']:.4f}"}
            if monitor:
                post["HI"] = f"{monitor[-1]['mean']:.3f}"
                if "val_psnr" in monitor[-1]:
                    post["val"] = f"{monitor[-1]['val_psnr']:.2f}dB"
            if deadline is not None:
                post["left"] = f"{max(0.0, deadline - time.monotonic()) / 60:.1f}m"
            bar.set_postfix(post, refresh=False)
        if is_main and recipe.monitor_every and it % recipe.monitor_every == 0:
            run_monitor(it)
        if cfg.checkpoint_every and it % cfg.checkpoint_every == 0:
            checkpoint(it)
        if cfg.counter is not None:
            cfg.counter.value = it
        bar.update(1)
    bar.close()

    from ..agent.policy import _sha256_bytes, _state_bytes

    # The final actor's hash: equal on every rank when the gradient all-reduce kept the replicas in sync.
    summary = {"iterations": it, "stopped_by": stopped_by, "world_size": world,
               "seconds": round(elapsed_before + time.monotonic() - t_start, 1),
               "actor_sha256": _sha256_bytes(_state_bytes(_cpu_copy(actor).state_dict())), "device": str(dev)}
    if is_main:
        if not monitor or monitor[-1]["iteration"] != it:
            run_monitor(it)
        checkpoint(it, progress=False)  # save_progress() follows below
        name = cfg.name or out.name
        last = shipped = _cpu_copy(actor if ema is None else ema)
        # the map the anchor used, so that evaluation can say how closely the outputs followed it
        anchor_info = {} if anchor_of is None else {"brightness_anchor": anchor_of.to_dict()}
        selection: dict = {"rule": "last"}
        if best is not None:
            # the last weights stay available beside the selected ones (OUT/last/, an ordinary model folder)
            Policy(last, name=f"{name}@last", config={"recipe": recipe.to_dict(), **level_cfg}).save(
                out / "last", extra_config={"training": {"iteration": it, **anchor_info, **cfg.extra},
                                            "metrics": {"monitor": monitor[-1]}})
            shipped = copy.deepcopy(last)
            shipped.load_state_dict(best["state"])
            selection = {"rule": "best validation PSNR", "iteration": best["iteration"],
                         "val_psnr": round(best["val_psnr"], 3), "last_val_psnr": round(monitor[-1]["val_psnr"], 3),
                         "n_validation": len(cfg.validation)}
            summary["selected_iteration"] = best["iteration"]
            log(f"selected the weights of iteration {best['iteration']} (validation PSNR {best['val_psnr']:.2f} dB; "
                f"last {monitor[-1]['val_psnr']:.2f} dB)")
        pol = Policy(shipped, name=name, config={"recipe": recipe.to_dict(), **level_cfg})
        training = {**{k: v for k, v in summary.items() if k != "actor_sha256"}, "seed": cfg.seed, "unprocess": cfg.unprocess,
                    "selection": selection,
                    "n_input_files": len(inputs.files), "n_target_files": len(targets.files),
                    "skipped": inputs.skipped + targets.skipped, "torch": torch.__version__,
                    **({"gpu": torch.cuda.get_device_name(dev)} if dev.type == "cuda" else {}), **anchor_info,
                    **cfg.extra}
        pol.save(out, extra_config={"training": training,
                                    "metrics": {"monitor_histogram_intersection": monitor[-1] if monitor else None}})
        save_progress()
        log(f"done: {it} iterations in {summary['seconds']} s ({stopped_by}); model in {out}")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary
