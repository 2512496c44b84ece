"""The three networks of Exposure (Hu et al., TOG 2018, Sec. 5 and the reference code).

* :class:`Actor`: pi1 (a stochastic choice among the 8 filters) and pi2 (deterministic parameters for every
  filter, one small head each). Input: RGB + 11 state planes. Dropout after the trunks stays on at inference
  (the paper's "one-to-many": several plausible edits of one photo).
* :class:`Value`: V(s) from RGB + state planes + the 3 statistic planes.
* :class:`Discriminator`: the WGAN critic from RGB + the 3 statistic planes (mean luminance, variance of
  luminance, mean saturation), which are cheap global cues the paper found to help.

All three share the trunk shape: input minus 0.5, four 4x4 stride-2 convolutions (padding 1), LeakyReLU 0.2, no
normalisation, flatten. Widths are configurable (:class:`Arch`): the paper uses 32-64-128-256 on 64x64 proxies
(flatten 4096); the CPU recipe uses 16-32-64-128.

Shapes: images ``(B, 3, S, S)``: the 64x64 states (any S works; each network area-reduces its input to
``arch.proxy``); ``step`` ``(B,)`` long in 0..n_steps;
``used`` ``(B, 8)`` float 0/1 flags of filters already applied.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .. import filters as F

N_STATE_PLANES = 2 + F.N_FILTERS  # step count, "stopped" flag (always 0: episodes have a fixed length), used flags
N_STAT_PLANES = 3
PROB_FLOOR = 0.05  # pi = softmax * (1 - 0.05) + 0.05 / 8: every filter keeps some probability (reference code)


@dataclass(frozen=True)
class Arch:
    """Network shape. Stored in every model folder (config.json) so weights always load with their shape."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    proxy: int = 64  # side of the square input the networks see (64x64 states are area-reduced to it)
    head_hidden: int = 128  # the FC layer after the trunk (4096 -> 128 in the paper)
    dropout: float = 0.5  # actor dropout probability (the reference code's keep_prob 0.5)
    n_steps: int = 5  # episode length; the step plane is step / n_steps
    # How the actor and value networks see the state's pixels: 1.0 = linear, as in the paper; g > 1 = x^(1/g)
    # (2.2: roughly display-encoded). Linear RAW-like states are dark (mean ~0.05), so "planes minus 0.5" hardly
    # differ between a dark and a bright photo; an encoded view spreads them (the critic always sees linear).
    input_gamma: float = 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> "Arch":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "widths" in known:
            known["widths"] = tuple(int(w) for w in known["widths"])
        return cls(**known)

    @property
    def flat(self) -> int:
        side = self.proxy // 2 ** len(self.widths)
        if side < 1:
            raise ValueError(f"proxy {self.proxy} is too small for {len(self.widths)} stride-2 convolutions")
        return self.widths[-1] * side * side


class Trunk(nn.Module):
    """``(B, in_ch, S, S)`` -> ``(B, arch.flat)``: the shared convolutional trunk."""

    def __init__(self, in_ch: int, arch: Arch):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_ch
        for w in arch.widths:
            layers += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = w
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x - 0.5).flatten(1)


def plane_values(step: torch.Tensor, used: torch.Tensor, n_steps: int) -> torch.Tensor:
    """``(B, 10)``: the state planes' values: step / n_steps, stopped (0), 8 used-filter flags."""
    b = step.shape[0]
    return torch.cat([(step.float() / n_steps)[:, None], torch.zeros(b, 1, device=step.device), used.float()], 1)


def state_planes(step: torch.Tensor, used: torch.Tensor, size: int, n_steps: int) -> torch.Tensor:
    """``(B, 10, size, size)`` constant planes: :func:`plane_values` spread over the image."""
    vals = plane_values(step, used, n_steps)
    return vals[:, :, None, None].expand(*vals.shape, size, size)


def statistics(img: torch.Tensor) -> torch.Tensor:
    """``(B, 3)``: mean luminance, biased variance of luminance, mean HSV saturation of the [0, 1]-clipped image."""
    x = img.clamp(0.0, 1.0)
    L = F.lum(x).flatten(1)
    _, _, s = F.rgb_to_hsv_sv(x)
    return torch.stack([L.mean(1), L.var(1, unbiased=False), s.flatten(1).mean(1)], 1)


def stat_planes(img: torch.Tensor) -> torch.Tensor:
    b, _, h, w = img.shape
    return statistics(img)[:, :, None, None].expand(b, N_STAT_PLANES, h, w)


def network_input(img: torch.Tensor, size: int) -> torch.Tensor:
    """The state as a network sees it: area-reduced to ``size`` (states are 64x64; the CPU recipe's networks
    look at 32x32) and bounded. The reference code never clips the state; the bound only keeps a wild exposure
    from blowing up activations (the over-exposure penalty is what teaches the agent to stay in range)."""
    if img.shape[-1] != size or img.shape[-2] != size:
        if img.shape[-1] % size == 0 and img.shape[-2] == img.shape[-1]:
            k = img.shape[-1] // size
            while k % 2 == 0:  # 2x2 means by strided adds: ~4x faster than avg_pool2d on CPU for these sizes
                img = (img[..., 0::2, 0::2] + img[..., 1::2, 0::2] + img[..., 0::2, 1::2] + img[..., 1::2, 1::2]) * 0.25
                k //= 2
            if k > 1:
                img = torch.nn.functional.avg_pool2d(img, k)  # an exact area reduction, faster than the adaptive one
        else:
            img = torch.nn.functional.adaptive_avg_pool2d(img, size)
    return img.clamp(-1.0, 4.0)


def encode(img: torch.Tensor, gamma: float) -> torch.Tensor:
    """The pixels as the actor / value trunks see them (:attr:`Arch.input_gamma`); identity for 1.0."""
    if gamma == 1.0:
        return img
    return img.clamp(1e-4, 4.0) ** (1.0 / gamma)


def _init(module: nn.Module) -> None:
    """Xavier-uniform weights, zero biases (reference code)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class Actor(nn.Module):
    """pi1 (filter probabilities) and pi2 (every filter's parameters) from one state.

    forward(img (B,3,S,S), step (B,), used (B,8)) -> (probs (B,8), packed (B,8,MAX_PACKED)): row ``packed[b, k]``
    holds filter k's parameters (``F.FILTERS[k].n_packed`` values, zero padded) for state b.
    """

    def __init__(self, arch: Arch = Arch()):
        super().__init__()
        self.arch = arch
        in_ch = 3 + N_STATE_PLANES
        self.param_trunk = Trunk(in_ch, arch)
        self.select_trunk = Trunk(in_ch, arch)
        self.drop = nn.Dropout(arch.dropout)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(arch.flat, arch.head_hidden), nn.LeakyReLU(0.2), nn.Linear(arch.head_hidden, f.n_raw))
            for f in F.FILTERS)
        self.select = nn.Sequential(nn.Linear(arch.flat, arch.head_hidden), nn.LeakyReLU(0.2),
                                    nn.Linear(arch.head_hidden, F.N_FILTERS))
        _init(self)

    def inputs(self, img: torch.Tensor, step: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """The trunks' input ``(B, 3 + 10, P, P)``: the area-reduced, bounded state and the state planes."""
        img = encode(network_input(img, self.arch.proxy), self.arch.input_gamma)
        return torch.cat([img, state_planes(step, used, img.shape[-1], self.arch.n_steps)], 1)

    def _dropout(self, feat: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.drop(feat) if mask is None else feat * mask

    def select_probs(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """pi1 ``(B, 8)`` from :meth:`inputs` ``x``: the selection trunk and head only."""
        return self.probs_from_features(self.select_trunk(x), mask)

    def probs_from_features(self, feat: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """pi1 ``(B, 8)`` from the selection trunk's features ``(B, flat)``."""
        logits = self.select(self._dropout(feat, mask))
        return torch.softmax(logits, 1) * (1.0 - PROB_FLOOR) + PROB_FLOOR / F.N_FILTERS

    def params_from_features(self, feat: torch.Tensor, choice: torch.Tensor,
                             mask: torch.Tensor | None = None) -> torch.Tensor:
        """The chosen filters' packed parameters ``(B, MAX_PACKED)`` (zero padded) from the parameter trunk's
        features ``(B, flat)``, running only the heads of filters that some row chose (rows grouped by filter).
        Equal, up to float rounding, to ``select_params(forward(...)[1], choice)`` with the same dropout mask."""
        feat = self._dropout(feat, mask)
        ids = choice.tolist()
        first = ids[0]
        if all(k == first for k in ids):
            f = F.FILTERS[first]
            p = f.params_from_raw(self.heads[first](feat))
            return torch.nn.functional.pad(p, (0, F.MAX_PACKED - f.n_packed))
        out = feat.new_zeros(feat.shape[0], F.MAX_PACKED)
        for k in sorted(set(ids)):
            f = F.FILTERS[k]
            rows = torch.tensor([i for i, c in enumerate(ids) if c == k], device=feat.device)
            out[rows, : f.n_packed] = f.params_from_raw(self.heads[k](feat[rows]))
        return out

    def forward(self, img: torch.Tensor, step: torch.Tensor, used: torch.Tensor,
                masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """masks: optional explicit dropout masks ``(B, flat)`` for the parameter and selection trunks, already
        scaled (0 or 1/(1-p)); inference passes per-row seeded masks so a result depends only on its own seed,
        not on the batch it ran in. Without masks, ``nn.Dropout`` applies (in train mode).

        Training needs every filter's parameters (this method); inference chooses first and then runs only the
        chosen head (:meth:`probs_from_features`, :meth:`params_from_features`)."""
        x = self.inputs(img, step, used)
        pm, sm = (None, None) if masks is None else masks
        pf = self._dropout(self.param_trunk(x), pm)
        cols = []
        for f, head in zip(F.FILTERS, self.heads):
            p = f.params_from_raw(head(pf))  # (B, n_packed)
            cols.append(torch.nn.functional.pad(p, (0, F.MAX_PACKED - f.n_packed)))
        packed = torch.stack(cols, 1)
        return self.select_probs(x, sm), packed


class Value(nn.Module):
    """V(s): ``(img (B,3,S,S), step (B,), used (B,8)) -> (B,)``, or ``(B, heads)`` with ``heads > 1``: one value
    per part of the reward, sharing the trunk (the trainer's ``anchor_in_choice=False`` learns the critic's and the
    brightness anchor's returns apart; their sum is V)."""

    def __init__(self, arch: Arch = Arch(), heads: int = 1):
        super().__init__()
        self.arch = arch
        self.heads = heads
        self.trunk = Trunk(3 + N_STATE_PLANES + N_STAT_PLANES, arch)
        self.fc = nn.Sequential(nn.Linear(arch.flat, arch.head_hidden), nn.LeakyReLU(0.2),
                                nn.Linear(arch.head_hidden, heads))
        _init(self)

    def forward(self, img: torch.Tensor, step: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        img = network_input(img, self.arch.proxy)
        x = torch.cat([encode(img, self.arch.input_gamma), state_planes(step, used, img.shape[-1], self.arch.n_steps),
                       stat_planes(img)], 1)
        v = self.fc(self.trunk(x))
        return v[:, 0] if self.heads == 1 else v


class Discriminator(nn.Module):
    """The WGAN critic: ``img (B,3,S,S) -> (B,)`` (higher = more like the target photos)."""

    def __init__(self, arch: Arch = Arch()):
        super().__init__()
        self.arch = arch
        self.trunk = Trunk(3 + N_STAT_PLANES, arch)
        self.fc = nn.Sequential(nn.Linear(arch.flat, arch.head_hidden), nn.LeakyReLU(0.2), nn.Linear(arch.head_hidden, 1))
        _init(self)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        img = network_input(img, self.arch.proxy)
        x = torch.cat([img, stat_planes(img)], 1)
        return self.fc(self.trunk(x))[:, 0]


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """``(B, 8) -> (B,)`` Shannon entropy in nats."""
    return -(probs * torch.log(probs)).sum(1)


MAX_ENTROPY = math.log(F.N_FILTERS)


def select_params(packed_all: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """``packed_all (B, 8, MAX_PACKED)``, ``choice (B,)`` long -> the chosen filters' ``(B, MAX_PACKED)``."""
    return packed_all[torch.arange(choice.shape[0], device=choice.device), choice]


def apply_choice(img: torch.Tensor, choice: torch.Tensor, packed_all: torch.Tensor) -> torch.Tensor:
    """One agent step: each row of ``img (B,3,S,S)`` through its chosen filter with the actor's parameters
    (differentiable with respect to the parameters)."""
    return apply_chosen(img, choice, select_params(packed_all, choice))


def apply_chosen(img: torch.Tensor, choice: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Each row of ``img`` through its filter ``choice (B,)`` with packed ``params (B, MAX_PACKED)``. When every
    row chose the same filter (always so for one image) the filter runs directly, without
    ``F.apply_packed``'s per-filter row scans; the result is the same."""
    ids = choice.tolist()
    if ids and all(k == ids[0] for k in ids):
        f = F.FILTERS[ids[0]]
        return f.apply(img, params[:, : f.n_packed])
    return F.apply_packed(img, choice, params)
