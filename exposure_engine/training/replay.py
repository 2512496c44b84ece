"""Replay memory of the reference code: a pool of unfinished episode states, and a pool of finished images.

Each iteration pops a batch of states from :class:`StatePool`, the actor applies one step to each, and the
results go back; states that completed their last step leave the pool (into :class:`ImagePool`, where the critic
finds its fakes) and fresh inputs take their place. Because states of every step count sit in the pool at once,
every batch mixes all steps of many trajectories, which decorrelates the updates (paper, Sec. 5.3).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .. import filters as F


class StatePool:
    """``size`` states: images ``(size, 3, S, S)``, step counts ``(size,)`` long, used-filter flags ``(size, 8)``,
    and each episode's brightness anchor ``(size,)`` (``anchor_of(fresh input images)``, set when an episode
    starts and kept through its steps; zeros without ``anchor_of``)."""

    def __init__(self, size: int, fresh: Callable[[int], torch.Tensor], n_steps: int, rng: np.random.Generator,
                 anchor_of: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.fresh, self.n_steps, self.rng = fresh, n_steps, rng
        self.anchor_of = anchor_of
        self.images = fresh(size)
        self.step = torch.zeros(size, dtype=torch.long)
        self.used = torch.zeros(size, F.N_FILTERS)
        self.anchor = self._anchors(self.images)
        # All states start at step 0; random sampling of batches desynchronises their step counts within a few
        # dozen iterations, after which every batch mixes all steps.

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(indices (n,), images (n,3,S,S), step (n,), used (n,8))`` drawn without replacement."""
        idx = torch.from_numpy(self.rng.choice(len(self), size=min(n, len(self)), replace=False)).long()
        return idx, self.images[idx].clone(), self.step[idx].clone(), self.used[idx].clone()

    def put_back(self, idx: torch.Tensor, images: torch.Tensor, step: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """Store the stepped states; finished ones (step == n_steps) are replaced by fresh inputs.
        Returns the finished images ``(k, 3, S, S)``."""
        done = step >= self.n_steps
        finished = images[done].detach().clone()
        self.images[idx] = images.detach()
        self.step[idx] = step
        self.used[idx] = used
        k = int(done.sum())
        if k:
            rows = idx[done]
            self.images[rows] = new = self.fresh(k)
            self.step[rows] = 0
            self.used[rows] = 0.0
            self.anchor[rows] = self._anchors(new)
        return finished

    def _anchors(self, images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(images.shape[0]) if self.anchor_of is None else self.anchor_of(images).float()

    def state_dict(self) -> dict:
        return {"images": self.images, "step": self.step, "used": self.used, "anchor": self.anchor}

    def load_state_dict(self, d: dict) -> None:
        self.images, self.step, self.used = d["images"], d["step"], d["used"]
        # checkpoints from before the anchor existed: the states' own anchors (exact for those still at step 0)
        self.anchor = d["anchor"] if "anchor" in d else self._anchors(self.images)


class ImagePool:
    """A ring buffer of the most recent finished images ``(capacity, 3, S, S)``: the critic's fakes."""

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity, self.rng = capacity, rng
        self.images: torch.Tensor | None = None
        self.count = 0  # items written in total (position = count % capacity)

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def add(self, images: torch.Tensor) -> None:
        if images.shape[0] == 0:
            return
        if self.images is None:
            self.images = torch.zeros((self.capacity,) + tuple(images.shape[1:]))
        for img in images[-self.capacity:]:
            self.images[self.count % self.capacity] = img
            self.count += 1

    def sample(self, n: int) -> torch.Tensor:
        if len(self) == 0:
            raise RuntimeError("the finished-image pool is empty")
        idx = torch.from_numpy(self.rng.integers(0, len(self), n)).long()
        return self.images[idx].clone()

    def state_dict(self) -> dict:
        return {"images": self.images, "count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.images, self.count = d["images"], int(d["count"])
