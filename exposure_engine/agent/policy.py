"""Inference: a trained actor turned into edit sequences.

A model folder (``models/NAME/``, docs/training.md) holds

* ``policy.pt``   the actor's ``state_dict`` (float32; loaded with ``torch.load(weights_only=True)``);
* ``config.json`` ``{"format": "exposure-engine-model", "version": 1, "name", "weights": "policy.pt",
  "arch": {...}, "recipe": {...}, "training": {...}, "metrics": {...}}`` and optionally ``"level"`` (agent/level.py);
* ``model_card.md`` for people.

:meth:`Policy.predict` runs the paper's test-time procedure on a 64x64 proxy: five steps, each choosing a filter
(argmax of pi1 by default) and its parameters (pi2). A model whose config.json has a ``"level"`` rule then has each
program's exposure retuned on the same proxy (agent/level.py; not in the paper). With dropout ON (variants, or a
seed given) different seeds give different, plausible variants (the paper's one-to-many); with dropout off (one
prediction, no seed: the default) the result is the policy's mean edit, deterministic. The randomness of a
prediction comes only from its seed: each row of a batch draws its own dropout masks from its own generator, so a
result does not depend on what else was in the batch, and ``seed`` / ``seed + i`` reproduce variant ``i``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import filters as F
from ..imageio.proxy import STATE_SIZE, resize_proxy  # noqa: F401  (defined beside make_proxy; re-exported)
from ..sequence import EditSequence, Step
from ..renderer import prepared_constants, programs_batch, step_batch
from .fused import FusedTrunks, pooled_input
from .level import MIN_OFFSET_EV, LevelRule, with_contrast, with_gain
from .networks import Actor, Arch, apply_chosen, encode, network_input, plane_values

MODEL_FORMAT = "exposure-engine-model"
MODEL_VERSION = 1
WEIGHTS_FILE = "policy.pt"
CONFIG_FILE = "config.json"


class ModelError(ValueError):
    """A model folder or weights file that cannot be used; the message names the file and the reason."""


@dataclass
class Prediction:
    """One predicted edit.

    sequence:      the chosen steps (format v1); each step's meta has ``probabilities`` {filter: p} and ``label``.
                   With the model's level rule the step holding its gain records it as ``level_ev``: the first
                   step when that is an Exposure step, else one more Exposure step in front (no probabilities).
    probabilities: ``(n, 8)`` pi1 at each of the sequence's n steps (before any reuse mask), filter order of
                   ``F.FILTERS``; a row of zeros for a step the level rule put in front.
    proxies:       ``n + 1`` states ``(64, 64, 3)`` float32: the input proxy, then after each step (unclipped;
                   ``render(proxies[0], sequence, clip=False)`` reproduces ``proxies[-1]``).
    seed:          the seed that reproduces this prediction; None for a mean edit (no dropout: needs no seed).
    """

    sequence: EditSequence
    probabilities: np.ndarray
    proxies: list[np.ndarray] = field(repr=False)
    seed: int | None = 0


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _state_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


class Policy:
    """Inference wrapper around the actor, with its configuration (arch, recipe) and identity.

    The Policy takes the actor over: it switches it to eval mode and moves it to ``device`` in place. A caller
    that goes on training the same module (the training loop's monitor) passes a copy, or restores ``.train()``.
    """

    def __init__(self, actor: Actor, *, name: str = "untrained", config: dict | None = None,
                 content_hash: str | None = None, device: str | torch.device = "cpu"):
        self.actor = actor.eval()
        self.arch: Arch = actor.arch
        self.name = name
        self.config = dict(config or {})
        self.content_hash = content_hash or _sha256_bytes(_state_bytes(actor.state_dict()))
        self.device = torch.device(device)
        self.actor.to(self.device)
        self._fused_trunks: FusedTrunks | None = None  # built by _fused() on first use
        self._fused_key: tuple = ()
        self._rule_hash: tuple = (None, None)  # (level rule, its hash): computed once per rule, not per sequence
        # config.json's "level": the exposure retune every prediction gets (agent/level.py); None: none
        self.level_rule = LevelRule.from_dict(self.config["level"]) if self.config.get("level") else None

    @property
    def level_rule_hash(self) -> str | None:
        """16 hex digits of the sha256 of the level rule's canonical JSON; None without a rule."""
        rule = self.level_rule
        if rule is None:
            return None
        if self._rule_hash[0] is not rule:
            canonical = json.dumps(rule.to_dict(), sort_keys=True).encode()
            self._rule_hash = (rule, hashlib.sha256(canonical).hexdigest()[:16])
        return self._rule_hash[1]

    @property
    def identity(self) -> str:
        """What decides this policy's predictions: the weights' sha256, and its level rule's when it has one (two
        models with the same weights and different rules, e.g. after ``training.add_level``, predict differently)."""
        rule = self.level_rule_hash
        return self.content_hash if rule is None else f"{self.content_hash}+level-{rule}"

    @property
    def sequence_model(self) -> dict:
        """The ``"model"`` entry of the sequences this policy predicts: name, weights sha256 and, with a level
        rule, its hash (``level_rule``), so a sequence names everything that decided it."""
        rule = self.level_rule_hash
        return {"name": self.name, "sha256": self.content_hash, **({"level_rule": rule} if rule else {})}

    # --- construction -----------------------------------------------------------------------------------------
    @classmethod
    def random(cls, seed: int = 0, **arch) -> "Policy":
        """An untrained actor with a deterministic initialisation (for tests). ``arch``: :class:`Arch` fields."""
        a = Arch.from_dict(arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            actor = Actor(a)
        return cls(actor, name=f"random-{seed}", config={"arch": a.to_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Policy":
        """Load a model folder (``models/NAME/``) or its weights file (config.json read from beside it)."""
        path = Path(path)
        if path.is_dir():
            folder, weights = path, path / WEIGHTS_FILE
            cfg_path = folder / CONFIG_FILE
            if cfg_path.is_file():
                try:
                    weights = folder / json.loads(cfg_path.read_text()).get("weights", WEIGHTS_FILE)
                except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
                    raise ModelError(f"{cfg_path}: not a valid model config ({e})") from None
        elif path.is_file():
            folder, weights = path.parent, path
        else:
            raise ModelError(f"{path}: no such model folder or weights file")
        config: dict = {}
        cfg_path = folder / CONFIG_FILE
        if cfg_path.is_file():
            try:
                config = json.loads(cfg_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ModelError(f"{cfg_path}: not valid JSON ({e})") from None
            if not isinstance(config, dict) or config.get("format", MODEL_FORMAT) != MODEL_FORMAT:
                raise ModelError(f"{cfg_path}: not an exposure-engine model config")
            if int(config.get("version", MODEL_VERSION)) > MODEL_VERSION:
                raise ModelError(f"{cfg_path}: model format version {config['version']} is newer than this "
                                 f"engine supports ({MODEL_VERSION})")
        if not weights.is_file():
            raise ModelError(f"{weights}: weights file missing")
        data = weights.read_bytes()
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types (pickle, zip, runtime) for a corrupt file
            raise ModelError(f"{weights}: cannot read weights ({type(e).__name__}: {e})") from None
        if isinstance(state, dict) and "actor" in state and isinstance(state["actor"], dict):
            # A training checkpoint: take its actor and the config stored with it.
            config = {**state.get("config", {}), **config}
            state = state["actor"]
        try:
            arch = Arch.from_dict(config.get("arch", {}))
            actor = Actor(arch)
            actor.load_state_dict(state)
        except (RuntimeError, TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"{weights}: weights do not match the architecture in {CONFIG_FILE} ({e})") from None
        name = str(config.get("name") or folder.name)
        try:
            return cls(actor, name=name, config=config, content_hash=_sha256_bytes(data), device=device)
        except ValueError as e:  # a malformed "level" entry
            raise ModelError(f"{cfg_path}: {e}") from None

    def save(self, folder: str | os.PathLike, *, extra_config: dict | None = None) -> Path:
        """Write ``policy.pt`` and ``config.json`` into ``folder`` (atomically: temp file + rename).
        Updates ``content_hash`` to the written file's sha256. Returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", torch.float32) for k, v in self.actor.state_dict().items()}
        data = _state_bytes(state)
        atomic_write(folder / WEIGHTS_FILE, data)
        self.content_hash = _sha256_bytes(data)
        cfg = {**self.config, **(extra_config or {})}
        cfg.update({"format": MODEL_FORMAT, "version": MODEL_VERSION, "name": self.name, "weights": WEIGHTS_FILE,
                    "sha256": self.content_hash, "arch": self.arch.to_dict()})
        self.config = cfg
        atomic_write(folder / CONFIG_FILE, (json.dumps(cfg, indent=2) + "\n").encode())
        return folder

    def to(self, device: str | torch.device) -> "Policy":
        self.device = torch.device(device)
        self.actor.to(self.device)
        self._fused_trunks = None
        return self

    def _fused(self) -> FusedTrunks:
        """The actor's trunks restructured for inference: built on first use, rebuilt if the actor's trunk weights
        have changed since (their in-place version counters, e.g. a training step or load_state_dict)."""
        trunks = [*self.actor.select_trunk.parameters(), *self.actor.param_trunk.parameters()]
        key = tuple((id(w), w._version) for w in trunks)
        if self._fused_trunks is None or self._fused_key != key:
            # Its layers' default initialisation (overwritten at once) would draw from the global generator: a
            # training run's monitor predicting would move the run's random stream.
            with torch.random.fork_rng(devices=[]):
                self._fused_trunks = FusedTrunks(self.actor).to(self.device)
            self._fused_trunks.prepack()
            self._fused_key = key
        return self._fused_trunks

    # --- inference --------------------------------------------------------------------------------------------
    def predict(self, proxy: np.ndarray, *, variants: int = 1, seed: int | None = None, dropout: bool | None = None,
                deterministic_choice: bool = True, allow_reuse: bool = False, level: bool = True) -> list[Prediction]:
        """Edit sequences for one image.

        proxy: ``(h, w, 3)`` float32 linear RGB, any size (area-resized to a 64x64 state).
        variants: how many predictions; variant ``i`` uses seed ``seed + i`` (dropout masks, and the filter draw
            when ``deterministic_choice`` is False). ``seed=None`` draws a fresh random seed.
        dropout: sample dropout masks (the paper's test time: one of many plausible edits) or not (the policy's
            *mean* edit: no unit dropped, deterministic). ``None`` (default): on when ``variants > 1`` or a
            ``seed`` is given, so one prediction without a seed is the mean edit, which scored better on held-out
            photos (docs/training.md, "Dropout at inference").
        deterministic_choice: argmax of pi1 (the paper's test time) rather than a sample.
        allow_reuse: let a filter appear twice (training penalises reuse; by default inference masks used filters).
        level: apply the model's level rule (config.json ``"level"``, agent/level.py) when it has one: the
            program's exposure retuned so that the output's level follows the rule. False: the policy's own program.
        """
        if variants < 1:
            raise ValueError(f"variants must be >= 1, got {variants}")
        dropout = resolve_dropout(dropout, variants, seed)
        small = resize_proxy(proxy, STATE_SIZE)
        base = secrets.randbits(31) if seed is None else int(seed)
        return self.predict_batch(np.repeat(small[None], variants, 0), seeds=[base + i for i in range(variants)],
                                  dropout=dropout, deterministic_choice=deterministic_choice, allow_reuse=allow_reuse,
                                  level=level)

    @torch.inference_mode()
    def predict_batch(self, proxies: np.ndarray | Sequence[np.ndarray], *, seeds: Sequence[int] | None = None,
                      dropout: bool | Sequence[bool] = True, deterministic_choice: bool = True,
                      allow_reuse: bool = False, level: bool = True) -> list[Prediction]:
        """Edit sequences for N proxies in one forward pass per step.

        proxies: ``(N, 64, 64, 3)`` float32 linear RGB (or a list of ``(h, w, 3)`` arrays, resized here).
        seeds: one per proxy (default: fresh random seeds). Row i's result equals ``predict(proxies[i], seed=seeds[i])``
            up to float rounding (~1e-7: the batched matrix products may round differently).
        dropout: for all rows or one per row (see :meth:`predict`); a row without dropout is its mean edit, the
            same whatever its seed (the seed then only matters with ``deterministic_choice=False``).
        level: see :meth:`predict`.
        """
        arch = self.arch
        batch = np.stack([resize_proxy(p, STATE_SIZE) for p in proxies]) if len(proxies) else np.zeros((0,))
        n = batch.shape[0]
        if n == 0:
            return []
        seeds = [secrets.randbits(31) for _ in range(n)] if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} proxies")
        drop = [bool(dropout)] * n if isinstance(dropout, (bool, np.bool_)) else [bool(d) for d in dropout]
        if len(drop) != n:
            raise ValueError(f"got {len(drop)} dropout flags for {n} proxies")
        steps = arch.n_steps
        # Per-row randomness, drawn up front from the row's own generator: dropout masks for both trunks at every
        # step, then a uniform per step (the filter draw). A mean-edit row keeps every unit (inverted dropout needs
        # no rescaling then); with an argmax choice it draws nothing at all.
        keep = 1.0 - arch.dropout
        masks = torch.ones(n, steps, 2, arch.flat) if any(drop) else None
        uniforms = torch.zeros(n, steps, dtype=torch.float64)
        for i, s in enumerate(seeds):
            if not (drop[i] or not deterministic_choice):
                continue
            g = torch.Generator().manual_seed(s)
            m = torch.rand(steps, 2, arch.flat, generator=g)  # drawn even when unused: the uniforms come after
            if drop[i]:
                masks[i] = (m < keep).float() / max(keep, 1e-12)
            uniforms[i] = torch.rand(steps, generator=g, dtype=torch.float64)
        dev = self.device
        if masks is not None:
            masks = masks.to(dev)
        unit = torch.ones((), device=dev)  # no row drops units: a scalar mask (the actor's own Dropout never runs here)

        fused = self._fused()
        on_cpu = dev.type == "cpu"
        # States live in one NHWC buffer. On the CPU each step runs the renderer's pixel kernels in place
        # (renderer.step_batch: ~10x faster than the torch filters on 64x64 proxies, same values to ~1e-6) and the
        # trunks' input is pooled straight from it (fused.pooled_input). Elsewhere (CUDA) the torch filters and
        # pooling run on the device.
        states = np.empty((steps + 1, *batch.shape), np.float32)
        states[0] = batch
        pooled = np.empty((n, 3, arch.proxy, arch.proxy), np.float32)
        img = None if on_cpu else torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(dev)
        used = torch.zeros(n, F.N_FILTERS, device=dev)
        probs_all, choices, params, prepared = [], [], [], []  # prepared: each step's kernel constants
        for t in range(steps):
            step = torch.full((n,), t, dtype=torch.long, device=dev)
            # Both trunks at once (FusedTrunks), then choose, then only the chosen filters' parameter heads: the
            # same result as the full forward's row for that filter, without 7 unused heads.
            if on_cpu and pooled_input(states[t], arch.proxy, arch.input_gamma, pooled) is not None:
                rgb = torch.from_numpy(pooled)
            else:
                if img is None:
                    img = torch.from_numpy(np.ascontiguousarray(states[t].transpose(0, 3, 1, 2)))
                rgb = encode(network_input(img, arch.proxy), arch.input_gamma)
            f_sel, f_par = fused(rgb, plane_values(step, used, arch.n_steps))
            probs = self.actor.probs_from_features(f_sel, unit if masks is None else masks[:, t, 1])
            choice = choose(probs, used, uniforms[:, t].to(dev), deterministic=deterministic_choice,
                            allow_reuse=allow_reuse)
            p = self.actor.params_from_features(f_par, choice, unit if masks is None else masks[:, t, 0])
            used[torch.arange(n, device=dev), choice] = 1.0
            choice_np, p_np = choice.cpu().numpy(), p.float().cpu().numpy()
            prepared.append(prepared_constants(choice_np, p_np))  # once per step: the rule renders them again
            if on_cpu:
                states[t + 1] = states[t]
                programs_batch(states[t + 1], choice_np[:, None], prepared[t][:, None])  # step_batch's kernel
                img = None
            else:
                img = apply_chosen(img, choice, p)
                states[t + 1] = img.permute(0, 2, 3, 1).float().cpu().numpy()
            probs_all.append(probs.float().cpu().numpy())
            choices.append(choice_np)
            params.append(p_np)

        offsets, amounts, wanted = np.zeros(n), np.zeros(n, np.float32), None
        if level and self.level_rule is not None:
            offsets, found, wanted = self.level_rule.retune(states[0], choices, params, prepared=prepared)
            offsets[np.abs(offsets) < MIN_OFFSET_EV] = 0.0
            amounts = amounts if found is None else found
        lead = states[0]  # the inputs with the level rule's gain (Exposure's float32 2^d)
        if offsets.any():  # the states of the retuned programs: the same steps on the gained inputs
            lead = states[0] * np.exp2(offsets.astype(np.float32))[:, None, None, None]
            for t in range(steps):
                states[t + 1] = lead if t == 0 else states[t]
                programs_batch(states[t + 1], choices[t][:, None], prepared[t][:, None])
        finished = None  # the states after the level rule's Contrast step (rows with one)
        if amounts.any():
            finished = states[steps].copy()
            con = np.zeros((n, params[0].shape[1]), np.float32)
            con[:, 0] = amounts
            step_batch(finished, np.full(n, F.get("contrast").index), con)
        out = []
        probs_np = np.stack(probs_all, 1).astype(np.float32)  # (n, steps, 8)
        shown = probs_np.astype(np.float64).round(6).tolist()  # the step meta's rounded probabilities
        names = [f.name for f in F.FILTERS]
        chosen, values = [c.tolist() for c in choices], [p.tolist() for p in params]  # Python ints / floats
        for i in range(n):
            pr = probs_np[i]
            proxies = [states[t, i] for t in range(steps + 1)]
            seq_steps = []
            for t in range(steps):  # Step.from_packed, with the label from the same values
                f = F.FILTERS[chosen[t][i]]
                v = values[t][i][: f.n_packed]
                seq_steps.append(Step(f.name, f.to_json(v), {"probabilities": dict(zip(names, shown[i][t])),
                                                              "label": f.label(v)}))
            if offsets[i]:
                seq_steps, added = with_gain(seq_steps, offsets[i])
                if added:  # a step the policy did not choose: no probabilities; its state is the gained input
                    pr = np.concatenate([np.zeros((1, F.N_FILTERS), np.float32), pr])
                    proxies.insert(1, lead[i])
            if amounts[i]:  # the rule's Contrast step, after the policy's: no probabilities either
                seq_steps = with_contrast(seq_steps, float(amounts[i]), float(wanted[i]))
                pr = np.concatenate([pr, np.zeros((1, F.N_FILTERS), np.float32)])
                proxies.append(finished[i])
            # A sampled edit records the seed that reproduces it; a mean edit needs none ("dropout": false).
            how = {"seed": seeds[i]} if drop[i] else {"dropout": False}
            seq = EditSequence(seq_steps, {"model": self.sequence_model, **how})
            out.append(Prediction(seq, pr, proxies, seeds[i] if drop[i] else None))
        return out


def resolve_dropout(dropout: bool | None, variants: int, seed: int | None) -> bool:
    """Whether a prediction samples dropout masks: as asked, else on for variants or an explicit seed (a seed names
    a sample), off for one prediction without a seed (the mean edit). Raises ValueError for variants without it."""
    if dropout is None:
        dropout = variants > 1 or seed is not None
    if not dropout and variants > 1:
        raise ValueError("variants > 1 need dropout (without it every variant is the same edit)")
    return dropout


def choose(probs: torch.Tensor, used: torch.Tensor, uniform: torch.Tensor, *, deterministic: bool,
           allow_reuse: bool) -> torch.Tensor:
    """Pick a filter per row: ``probs (B, 8)``, ``used (B, 8)`` flags, ``uniform (B,)`` in [0, 1) -> ``(B,)`` long.
    Without reuse, used filters get probability 0 (renormalised)."""
    p = probs if allow_reuse else probs * (1.0 - used)
    if deterministic:
        return p.argmax(1)
    cdf = torch.cumsum(p.double(), 1)
    cdf = cdf / cdf[:, -1:]
    idx = torch.searchsorted(cdf, uniform.double()[:, None].to(cdf.device), right=True).squeeze(1)
    return idx.clamp(max=F.N_FILTERS - 1)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one, never a torn file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
