"""The actor's two convolutional trunks as one inference network: the same function, less work.

Inference (:meth:`Policy.predict_batch`) runs both trunks on every step; this module restructures them once per
loaded policy, exactly (up to float rounding; tests/test_agent.py compares with :class:`networks.Trunk`):

* Both trunks read the same input, so they run as one network: layer 1 with both trunks' filters stacked
  (``2 * w0`` outputs), layers 2-4 as grouped convolutions (``groups=2``: each half sees only its own trunk's
  channels). One convolution call per layer instead of two.
* 10 of the 13 input planes are constant per image (step / n_steps, the "stopped" flag, 8 used-filter flags).
  The convolution of a constant plane is that constant times a fixed map (the kernel summed over the taps that
  land inside the image rather than in the zero padding), so layer 1 convolves only the 3 RGB planes and adds
  ``sum_c (v_c - 0.5) R_c`` with ``R_c`` precomputed (the trunk's input is "planes minus 0.5").

Shapes: ``rgb (B, 3, P, P)`` as the trunk sees it (area-reduced, bounded, encoded: ``Actor.inputs`` without the
planes), ``planes (B, 10)`` the constant planes' values (:func:`networks.plane_values`) -> ``(select (B, flat), param (B, flat))``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as Fn

from .networks import N_STATE_PLANES, Actor


class FusedTrunks(nn.Module):
    def __init__(self, actor: Actor):
        super().__init__()
        arch = actor.arch
        sel = [m for m in actor.select_trunk.body if isinstance(m, nn.Conv2d)]
        par = [m for m in actor.param_trunk.body if isinstance(m, nn.Conv2d)]
        self.width = arch.widths[-1]
        with torch.no_grad():
            w1 = torch.cat([sel[0].weight, par[0].weight], 0)  # (2 w0, 3 + 10, 4, 4)
            self.conv1 = nn.Conv2d(3, w1.shape[0], 4, stride=2, padding=1).to(w1.device)
            self.conv1.weight.copy_(w1[:, :3])
            self.conv1.bias.copy_(torch.cat([sel[0].bias, par[0].bias]))
            # R_c: the response of layer 1 to a plane of ones in input channel 3 + c, zero padding included.
            ones = torch.ones(1, 1, arch.proxy, arch.proxy, device=w1.device)
            self.register_buffer("plane_maps", torch.cat(
                [Fn.conv2d(ones, w1[:, 3 + c:4 + c], stride=2, padding=1) for c in range(N_STATE_PLANES)], 0))
            rest = []
            for s, p in zip(sel[1:], par[1:]):
                conv = nn.Conv2d(2 * s.in_channels, 2 * s.out_channels, 4, stride=2, padding=1, groups=2).to(w1.device)
                conv.weight.copy_(torch.cat([s.weight, p.weight], 0))
                conv.bias.copy_(torch.cat([s.bias, p.bias]))
                rest.append(conv)
            self.rest = nn.ModuleList(rest)
        self.requires_grad_(False)

    def forward(self, rgb: torch.Tensor, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv1(rgb - 0.5) + torch.einsum("bc,cohw->bohw", planes - 0.5, self.plane_maps)
        y = Fn.leaky_relu(y, 0.2)
        for conv in self.rest:
            y = Fn.leaky_relu(conv(y), 0.2)
        w = self.width
        return y[:, :w].flatten(1), y[:, w:].flatten(1)
