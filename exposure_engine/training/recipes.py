"""Named training configurations.

``paper``    the reference hyper-parameters (Hu et al. 2018, Algorithm 1 as the reference code runs it):
             trunk 32-64-128-256, batch 64, 20,000 iterations, 5 critic steps (100 for the first 10 iterations and
             every 500th), lr_D = 5e-5 * 0.1^(3t/T), lr_actor = 0.3 lr_D, lr_value = 10 lr_actor. About 2.1 s per
             iteration on a 2-core CPU (~11.7 h): a GPU recipe.
``cpu-fast`` what trains a style in about 30 minutes on 2 CPU cores: trunk 16-32-64-128, batch 32, 2 critic steps,
             fewer iterations with proportionally higher learning rates (docs/training.md has the measurements).

``cpu-fast`` adds the brightness anchor (``brightness_anchor`` 0.5) and the level rule (``level_rule``: every
prediction's exposure retuned, agent/level.py); neither is in the paper, ``paper`` keeps both off.
Both see linear states (``input_gamma`` 1.0); ``input_gamma`` 2.2 (actor and value see x^(1/2.2)) is an option for
recipe files, tried and not adopted (docs/training.md, "Diagnosis").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace


CHOICE_GRADIENTS = ("sampled", "expected")


@dataclass(frozen=True)
class Recipe:
    name: str
    widths: tuple[int, ...] = (32, 64, 128, 256)
    proxy: int = 64
    head_hidden: int = 128
    dropout: float = 0.5
    n_steps: int = 5
    input_gamma: float = 1.0  # actor / value see x^(1/input_gamma) (1.0 = linear, the paper); see Arch
    batch: int = 64
    iterations: int = 20_000
    critic_steps: int = 5
    critic_steps_boost: int = 100  # critic steps in the first `boost_first` iterations and every `boost_every`-th
    boost_first: int = 10
    boost_every: int = 500
    lr_d: float = 5e-5
    lr_decay: float = 0.1 ** 3  # lr(t) = lr * lr_decay^(t / iterations)
    actor_lr_ratio: float = 0.3
    value_lr_ratio: float = 10.0  # relative to the actor's
    betas: tuple[float, float] = (0.5, 0.9)
    gp_weight: float = 10.0
    reward_scale: float = 0.05  # reward = reward_scale * (D(out) - D(in)) - penalties
    overexposure_weight: float = 1.0
    entropy_weight: float = 0.05  # decays linearly to 0 over training
    reuse_penalty: float = 1.0
    pool_size: int = 128  # replay pool of unfinished states
    fake_pool_size: int = 256  # recent finished images the critic sees as fakes
    threads: int = 2  # torch intra-op threads per process (OMP_WAIT_POLICY=PASSIVE is set by the command)
    monitor_every: int = 100  # iterations between histogram-intersection checks on held-out proxies
    ema: float = 0.0  # > 0: keep an exponential moving average of the actor's weights (decay per iteration) and
    #                   ship that instead of the last iterate (Polyak averaging; not in the paper; 0 = off)
    # How pi1 (the filter choice) learns. "sampled": REINFORCE with the TD advantage of the one filter drawn (the
    # paper). "expected": the exact expectation over all eight filters, sum_a pi1(a) Q(s, a), each filter's Q
    # evaluated with the parameters pi2 proposed for it (D and V without gradients; "all-action" or mean
    # actor-critic, not in the paper): no sampling noise in the choice's gradient, ~8 extra D and V forwards per step.
    choice_gradient: str = "sampled"
    # Training progress (t / T) from which the filter each training step applies is pi1's argmax among the unused
    # filters, as at inference, instead of a draw from pi1 (the paper draws throughout: 1.0 = never). pi2's
    # parameters are otherwise learned for states reached, and futures taken, by random filter choices; from here
    # on they learn the programs inference will run (not in the paper).
    greedy_from: float = 1.0
    # (ev, cast, saturation) of a fresh random look drawn for every input sample (unprocess.Jitter: +-ev stops, R/B
    # gains within 1+cast, chroma x [1-saturation, 1+saturation]); zeros = off (the paper: one look per file).
    input_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # > 0: the reward gets brightness_anchor * (phi(s') - phi(s)), phi = minus the state's distance in stops from
    # its episode's anchor, the brightness the input's quantile among the inputs has among the targets
    # (training/anchor.py; not in the paper; 0 = off).
    brightness_anchor: float = 0.0
    # With the anchor on: True (default) = one value network for the whole reward, so the anchor's term is part of
    # the filter choice's advantage too. False = the value network learns the anchor's returns in a second head and
    # the choice (pi1) learns from the critic's and the penalties' returns alone, while the parameters (pi2) still
    # get the whole Q (anchor included) through the differentiable filter (not in the paper).
    anchor_in_choice: bool = True
    # With the anchor on: True = the anchored level is the mean of log2 brightness and log2 white level (99.5th
    # percentile of luminance), anchored to the mean of the quantile map's brightness and the targets' median white
    # level (training/anchor.py; not in the paper).
    anchor_white_point: bool = False
    # True = the saved model carries a level rule (agent/level.py; not in the paper): every prediction's exposure is
    # retuned so that the output's level meets the mean of the brightness map's reading and the targets' white
    # level. Validation (the choice of weights) and the monitor still score the policy's own programs.
    level_rule: bool = False

    def __post_init__(self):
        if self.choice_gradient not in CHOICE_GRADIENTS:
            raise ValueError(f"recipe {self.name!r}: choice_gradient {self.choice_gradient!r} is not one of "
                             f"{', '.join(CHOICE_GRADIENTS)}")
        if not 0.0 <= self.greedy_from <= 1.0:
            raise ValueError(f"recipe {self.name!r}: greedy_from must be in [0, 1], not {self.greedy_from!r}")
        if not self.brightness_anchor >= 0.0:
            raise ValueError(f"recipe {self.name!r}: brightness_anchor must be >= 0, not {self.brightness_anchor!r}")
        if not isinstance(self.anchor_in_choice, bool):
            raise ValueError(f"recipe {self.name!r}: anchor_in_choice must be true or false, "
                             f"not {self.anchor_in_choice!r}")
        if not isinstance(self.anchor_white_point, bool):
            raise ValueError(f"recipe {self.name!r}: anchor_white_point must be true or false, "
                             f"not {self.anchor_white_point!r}")
        if not isinstance(self.level_rule, bool):
            raise ValueError(f"recipe {self.name!r}: level_rule must be true or false, not {self.level_rule!r}")
        if self.anchor_white_point and self.brightness_anchor == 0.0:
            raise ValueError(f"recipe {self.name!r}: anchor_white_point needs brightness_anchor > 0")
        if not self.anchor_in_choice and self.brightness_anchor == 0.0:
            raise ValueError(f"recipe {self.name!r}: anchor_in_choice false needs brightness_anchor > 0")
        if len(self.input_jitter) != 3:
            raise ValueError(f"recipe {self.name!r}: input_jitter is [ev, cast, saturation], not {self.input_jitter!r}")
        self.jitter  # validates the amounts

    @property
    def jitter(self):
        from .unprocess import Jitter

        try:
            return Jitter(*map(float, self.input_jitter))
        except ValueError as e:
            raise ValueError(f"recipe {self.name!r}: {e}") from None

    @property
    def value_heads(self) -> int:
        """The value network's outputs: 2 (critic part, anchor part) when the anchor is kept out of the choice."""
        return 1 if self.anchor_in_choice else 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["betas"] = list(self.betas)
        d["input_jitter"] = list(self.input_jitter)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("widths", "betas", "input_jitter"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)

    def arch_dict(self) -> dict:
        return {"widths": list(self.widths), "proxy": self.proxy, "head_hidden": self.head_hidden,
                "dropout": self.dropout, "n_steps": self.n_steps,
                "input_gamma": self.input_gamma}


PAPER = Recipe(name="paper")

CPU_FAST = Recipe(
    name="cpu-fast",
    widths=(16, 32, 64, 128),
    proxy=32,  # networks see the 64x64 states area-reduced to 32x32: ~2.5x cheaper per iteration
    batch=32,
    iterations=3_000,
    critic_steps=2,
    critic_steps_boost=20,
    boost_every=250,
    # ~7x fewer iterations than the paper: learning rates scaled up so the critic and the actor still move;
    # the same 0.1^3 decay over the (shorter) run.
    lr_d=3e-4,
    pool_size=128,
    fake_pool_size=128,
    # One thread: at these layer sizes a second OpenMP thread costs more in synchronisation than it computes
    # (151-168 vs 263-289 ms per iteration on 2 idle cores, docs/training.md); two runs can then share 2 cores.
    threads=1,
    # Each output's brightness pulled towards its input's quantile among the targets (training/anchor.py): on
    # noir +4.7 dB test PSNR over six seeds, better on every one; punchy and teal_orange, three paired runs:
    # +1.0, +1.1 and -0.75 dB; 12 % more time per iteration (docs/evaluation.md, "The brightness anchor").
    brightness_anchor=0.5,
    # Each prediction's exposure retuned to the level rule (agent/level.py): over the five RAW-like draws of the
    # default task's held-out photos +0.1 to +1.3 dB on five seeds of aic10_6k.json; on the bench's punchy,
    # teal_orange and original styles +0.46, +0.19 and +0.51 dB averaged over 6, 2 and 2 seeds (docs/training.md,
    # "The level rule").
    level_rule=True,
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (PAPER, CPU_FAST)}


def get(name: str, **overrides) -> Recipe:
    """A named recipe, or a JSON file of Recipe fields (``{"base": "cpu-fast", "batch": 16, ...}``: fields not
    given come from ``base``, default "cpu-fast"), with optional overrides."""
    if name.endswith(".json"):
        import json
        from pathlib import Path

        try:
            d = json.loads(Path(name).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise KeyError(f"recipe file {name}: {e}") from None
        if not isinstance(d, dict):
            raise KeyError(f"recipe file {name}: expected a JSON object")
        unknown = set(d) - set(Recipe.__dataclass_fields__) - {"base"}
        if unknown:
            raise KeyError(f"recipe file {name}: unknown fields {', '.join(sorted(unknown))}")
        base = get(d.pop("base", "cpu-fast"))
        merged = {**base.to_dict(), "name": Path(name).stem, **d}
        try:
            r = Recipe.from_dict(merged)
        except (TypeError, ValueError) as e:
            raise KeyError(f"recipe file {name}: {e}") from None
    else:
        try:
            r = RECIPES[name]
        except KeyError:
            raise KeyError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)} (or a .json file)") from None
    return replace(r, **overrides) if overrides else r
