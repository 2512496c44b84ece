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

* On a CPU with oneDNN (:meth:`FusedTrunks.prepack`), the convolutions run as oneDNN primitives with weights
  reordered once into its blocked layout and LeakyReLU fused into the primitive: a plain ``conv2d`` call reorders
  the weights on every call (0.16 ms for layer 4 alone), which for these tiny maps is as long as the arithmetic.
  Both trunks for a batch of 8 on the 2-core CPU this was written on: 1.5 ms instead of 2.7 ms (medians of 100,
  ``exposure-engine bench infer --breakdown``). Not on every CPU: on an AMD EPYC (Zen 2, AVX2) the same
  primitives took 21 ms against 1.6 ms for plain ``conv2d``, so :meth:`~FusedTrunks.prepack` times both paths and
  keeps the packed one only where it is clearly faster, once per architecture in a process.

* :func:`pooled_input` computes the trunks' RGB input straight from the NHWC proxy states the renderer kernels
  step (area reduction, bound, encoding: :func:`networks.network_input` and :func:`networks.encode` in one pass),
  instead of an NCHW copy and five torch calls per step.

Shapes: ``rgb (B, 3, P, P)`` as the trunk sees it (area-reduced, bounded, encoded: ``Actor.inputs`` without the
planes), ``planes (B, 10)`` the constant planes' values (:func:`networks.plane_values`) -> ``(select (B, flat), param (B, flat))``.
"""
from __future__ import annotations

import time

import numba
import numpy as np
import torch
from torch import nn
from torch.nn import functional as Fn

from .networks import N_STATE_PLANES, Actor

SPEED_RUNS = 5  # calls of each path FusedTrunks.prepack times, once per architecture and process
# The packed path is kept only when its median is under this fraction of the plain path's. The two paths round
# differently (~1e-7), so a close call decided by timing noise would give the same model slightly different
# sequences from one load to the next (measured: a model saved and loaded again beside a training run).
PACKED_MARGIN = 0.8
# The decision, per trunk architecture (layer shapes), for the rest of the process: every policy of one
# architecture loaded by a process (a model saved and loaded again, the daemon's styles) predicts with one path.
_CHOSEN: dict[tuple, bool] = {}


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
            plane_maps = torch.cat(  # (10, 2 w0, H1, W1)
                [Fn.conv2d(ones, w1[:, 3 + c:4 + c], stride=2, padding=1) for c in range(N_STATE_PLANES)], 0)
            rest = []
            for s, p in zip(sel[1:], par[1:]):
                conv = nn.Conv2d(2 * s.in_channels, 2 * s.out_channels, 4, stride=2, padding=1, groups=2).to(w1.device)
                conv.weight.copy_(torch.cat([s.weight, p.weight], 0))
                conv.bias.copy_(torch.cat([s.bias, p.bias]))
                rest.append(conv)
            self.rest = nn.ModuleList(rest)
            # "minus 0.5" folded out as well: conv1(rgb - 0.5) + sum_c (v_c - 0.5) R_c
            #   = conv1(rgb) + planes @ R - 0.5 (sum_c R_c + sum_rgb R_rgb)     (R: layer-1 response to ones)
            rgb_maps = Fn.conv2d(ones.expand(1, 3, -1, -1), w1[:, :3], stride=2, padding=1)[0]
            offset = -0.5 * (plane_maps.sum(0) + rgb_maps)
            # Stored channels-last, (.., H, W, C) flattened: oneDNN's convolutions return channels-last tensors,
            # and adding a same-layout shift is 0.1 ms cheaper per step than adding an NCHW one.
            self.map_shape = tuple(offset.shape)  # (2 w0, H1, W1)
            self.register_buffer("plane_rows", plane_maps.permute(0, 2, 3, 1).reshape(N_STATE_PLANES, -1)
                                 .contiguous())
            self.register_buffer("offset_row", offset.permute(1, 2, 0).reshape(1, -1).contiguous())
        self.requires_grad_(False)
        self._packed: list | None = None

    def prepack(self, *, only_if_faster: bool = True) -> bool:
        """Switch to prepacked oneDNN convolutions when this runs on a CPU with oneDNN (torch's own choice of
        primitive, called through the entry points torch.compile uses). Checked against the plain path on a random
        input; on any failure or mismatch the plain path stays. With ``only_if_faster`` (the default) the packed
        path is also timed against the plain one on that input (median of :data:`SPEED_RUNS` calls each) and kept
        only if clearly faster (under :data:`PACKED_MARGIN` of the plain time; module docstring: 13-27x slower on
        one CPU, about 2x faster on another), once per architecture in a process (:data:`_CHOSEN`): later trunks
        of the same shapes take the same path untimed. Returns whether the packed path is on."""
        self._packed = None
        if self.conv1.weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
            return False
        try:
            op = torch.ops.mkldnn._convolution_pointwise
            reorder = torch._C._nn.mkldnn_reorder_conv2d_weight
            packed = [(reorder(c.weight.to_mkldnn(), [1, 1], [2, 2], [1, 1], c.groups, None), c.bias, c.groups)
                      for c in (self.conv1, *self.rest)]
            probe = (torch.rand(2, 3, self.map_shape[-1] * 2, self.map_shape[-1] * 2,
                                generator=torch.Generator().manual_seed(0)),
                     torch.rand(2, N_STATE_PLANES, generator=torch.Generator().manual_seed(1)))
            want = self.forward(*probe)
            self._packed = [op, packed]
            got = self.forward(*probe)
            if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(want, got)):
                self._packed = None
            elif only_if_faster:
                key = self._shapes()
                if key not in _CHOSEN:
                    self._packed = None
                    plain_s = self._median_seconds(probe)
                    self._packed = [op, packed]
                    _CHOSEN[key] = self._median_seconds(probe, give_up=2 * plain_s) < PACKED_MARGIN * plain_s
                if not _CHOSEN[key]:
                    self._packed = None
        except Exception:  # no oneDNN entry points in this torch build: the plain convolutions are correct too
            self._packed = None
        return self._packed is not None

    def _shapes(self) -> tuple:
        """What the convolutions' speed depends on: their weight shapes and groups, and the map size."""
        return (*(tuple(c.weight.shape) + (c.groups,) for c in (self.conv1, *self.rest)), tuple(self.map_shape))

    def _median_seconds(self, probe: tuple, give_up: float = float("inf")) -> float:
        """Median wall time of :data:`SPEED_RUNS` forward calls on ``probe`` (the path now switched on); the first
        call slower than ``give_up`` seconds is returned at once (a path 13x slower needs no more calls)."""
        times = []
        for _ in range(SPEED_RUNS):
            t0 = time.perf_counter()
            self.forward(*probe)
            times.append(time.perf_counter() - t0)
            if times[-1] > give_up:
                return times[-1]
        return sorted(times)[SPEED_RUNS // 2]

    def forward(self, rgb: torch.Tensor, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, w = self.map_shape
        shift = torch.addmm(self.offset_row, planes, self.plane_rows).view(-1, h, w, c).permute(0, 3, 1, 2)
        if self._packed is None:
            y = Fn.leaky_relu(self.conv1(rgb) + shift, 0.2)
            for conv in self.rest:
                y = Fn.leaky_relu(conv(y), 0.2)
        else:
            op, packed = self._packed
            (wt, bias, g), rest = packed[0], packed[1:]
            y = op(rgb, wt, bias, [1, 1], [2, 2], [1, 1], g, "none", [], "")
            y = Fn.leaky_relu(y.add_(shift), 0.2)
            for wt, bias, g in rest:
                y = op(y, wt, bias, [1, 1], [2, 2], [1, 1], g, "leaky_relu", [0.2], "")
        w = self.width
        return y[:, :w].flatten(1), y[:, w:].flatten(1)


def pooled_input(states: np.ndarray, size: int, gamma: float, out: np.ndarray | None = None) -> np.ndarray | None:
    """``states`` float32 ``(B, S, S, 3)`` C-contiguous -> ``(B, 3, size, size)`` float32: what
    ``encode(network_input(states as NCHW, size), gamma)`` gives (same sums in the same order for a 2x reduction;
    ~1e-7 otherwise). None when ``S`` is not a multiple of ``size`` (the caller then uses the torch functions)."""
    b, h, w, c = states.shape
    if h != w or h % size or c != 3 or states.dtype != np.float32 or not states.flags.c_contiguous:
        return None
    if out is None:
        out = np.empty((b, 3, size, size), np.float32)
    _pool(states, h // size, np.float32(1.0 / gamma), out)
    return out


@numba.njit(cache=True, nogil=True)
def _pool(states, k, inv_gamma, out):
    size = out.shape[2]
    scale = np.float32(1.0) / np.float32(k * k)
    lo, hi, floor, one = np.float32(-1.0), np.float32(4.0), np.float32(1e-4), np.float32(1.0)
    for b in range(states.shape[0]):
        for y in range(size):
            for ch in range(3):
                o = out[b, ch, y]
                if k == 2:  # the CPU recipe's 64 -> 32, written out: 7x faster than the general loop
                    r0 = states[b, 2 * y].reshape(-1)
                    r1 = states[b, 2 * y + 1].reshape(-1)
                    for x in range(size):
                        i = 6 * x + ch  # network_input's order of the 2x2 adds: (0,0), (1,0), (0,1), (1,1)
                        o[x] = (r0[i] + r1[i] + r0[i + 3] + r1[i + 3]) * scale
                else:
                    for x in range(size):
                        s = np.float32(0.0)
                        for dx in range(k):
                            for dy in range(k):
                                s += states[b, y * k + dy, x * k + dx, ch]
                        o[x] = s * scale
                for x in range(size):
                    v = min(max(o[x], lo), hi)
                    o[x] = v if inv_gamma == one else max(v, floor) ** inv_gamma
