"""Full-resolution renderer: an edit sequence applied to an image of any size.

All eight filters are pointwise, so the whole sequence runs in one pass over the image. Each thread takes a
row, cuts it into chunks of ``CHUNK`` pixels and, per chunk: de-interleaves RGB into three small planar
buffers (L1-resident), runs every step over the buffers with one tight loop per step (the branch-free
``pixel`` kernels of :mod:`exposure_engine.filters`, which LLVM vectorises), then clips and interleaves into
the output. The image is read once and written once; beyond the output array the only memory is three
``CHUNK``-sized buffers per thread, and ``out=image`` renders in place, which is how 100 MP images fit.
Numbers and the command that measures them: docs/performance.md.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import marshal
import sys

import numba
import numpy as np
import torch

from . import filters as F
from . import vecmath
from .sequence import EditSequence, as_sequence
from .vecmath import clamp, f32_bits, fmax

CHUNK = 1024  # pixels per planar buffer: 12 KiB stays in L1 and amortises the per-step dispatch
ROWS_PER_BLOCK = 64  # rows converted at a time when the input is not C-contiguous float32

# The dispatch below names each filter's pixel kernel; tests/test_render.py checks it against the registry so
# that a filter added to filters.py but not here fails loudly.
_EXPOSURE, _GAMMA, _WB, _SAT, _TONE, _COLOR, _CONTRAST, _BW = (f.index for f in F.FILTERS)
_exposure_px, _gamma_px, _wb_px, _saturation_px = (F.EXPOSURE.pixel, F.GAMMA.pixel, F.WHITE_BALANCE.pixel,
                                                    F.SATURATION.pixel)
_tone_px, _color_px, _contrast_px, _bw_px = (F.TONE_CURVE.pixel, F.COLOR_CURVES.pixel, F.CONTRAST.pixel,
                                             F.BLACK_AND_WHITE.pixel)
DISPATCHED = frozenset({_EXPOSURE, _GAMMA, _WB, _SAT, _TONE, _COLOR, _CONTRAST, _BW})

_EXP_MASK = np.int32(0x7F800000)  # float32 exponent bits: all set means inf or NaN


# Offsets of the R, G and B planes in a thread's buffer. Compile-time constants on one array: LLVM sees that
# the three planes do not overlap, so it vectorises the per-step loops without runtime alias checks.
_R, _G, _B = 0, CHUNK, 2 * CHUNK
_UR, _UG, _UB, _U1, _U2, _U3 = (np.uint64(v) for v in (_R, _G, _B, 1, 2, 3))


def _kernel_code_digest() -> str:
    """SHA-256 of the code compiled into the render kernels, as loaded in this process: the bytecode of every
    function (numba dispatchers and intrinsics included) and every numeric constant of filters.py, vecmath.py
    and this module.

    Hashing the loaded code rather than the files matters: a long-running process that imported filters.py
    before it was edited would otherwise compile the old kernels and store them under the new files' key."""
    h = hashlib.sha256()
    for mod in (F, vecmath, sys.modules[__name__]):
        for name, obj in sorted(vars(mod).items()):
            fn = getattr(obj, "py_func", None) or getattr(obj, "_defn", None) or obj
            if inspect.isfunction(fn) and fn.__module__ == mod.__name__:
                h.update(name.encode() + marshal.dumps(fn.__code__))
            elif isinstance(obj, (int, float, np.number)):
                h.update(f"{name}={obj!r}".encode())
    return h.hexdigest()


def _make_steps(sources_digest: str):
    # No fastmath: the pixel kernels numba inlines here round exactly as the torch formulas do (no FMA), which
    # keeps e.g. curve(1.0) == 1.0 where torch has it. vecmath's pow_f32 keeps its own FMA contraction.
    # fastmath=False is set, not left out: numba compiles a callee that leaves it out with its first caller's
    # flags, and caches it so (agent/level.py's kernels, which call this one, contract: measured, 4,304 of
    # 38,400 values of a render then differed by up to 3.6e-7, in that process and every later one).
    @numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
    def _steps(buf, n, ids, consts):
        """Run every step over the planar buffer ``buf`` (float32 ``(3 * CHUNK,)``: R, G, B planes; the
        first ``n`` pixels of each used) in place. One loop per step: the filter is chosen once per chunk,
        so each loop body is one branch-free kernel that LLVM vectorises (8 pixels per AVX2 instruction)."""
        if len(sources_digest) == 0:  # never true: puts the digest into the cache key (see below)
            return
        for s in range(ids.shape[0]):
            fid = ids[s]
            k = consts[s]
            if fid == _EXPOSURE:
                for i in range(n):
                    r, g, b = _R + i, _G + i, _B + i
                    buf[r], buf[g], buf[b] = _exposure_px(buf[r], buf[g], buf[b], k)
            elif fid == _GAMMA:
                for i in range(n):
                    r, g, b = _R + i, _G + i, _B + i
                    buf[r], buf[g], buf[b] = _gamma_px(buf[r], buf[g], buf[b], k)
            elif fid == _WB:
                for i in range(n):
                    r, g, b = _R + i, _G + i, _B + i
                    buf[r], buf[g], buf[b] = _wb_px(buf[r], buf[g], buf[b], k)
            elif fid == _SAT:
                for i in range(n):
                    r, g, b = _R + i, _G + i, _B + i
                    buf[r], buf[g], buf[b] = _saturation_px(buf[r], buf[g], buf[b], k)
            elif fid == _TONE:
                for i in range(n):
                    r, g, b = _R + i, _G + i, _B + i
                    buf[r], buf[g], buf[b] = _tone_px(buf[r], buf[g], buf[b], k)
            elif fid == _COLOR:
                for i in range(n):
                    r, g, b = _R + i, _G + i, _B + i
                    buf[r], buf[g], buf[b] = _color_px(buf[r], buf[g], buf[b], k)
            elif fid == _CONTRAST:
                for i in range(n):
                    r, g, b = _R + i, _G + i, _B + i
                    buf[r], buf[g], buf[b] = _contrast_px(buf[r], buf[g], buf[b], k)
            elif fid == _BW:
                for i in range(n):
                    r, g, b = _R + i, _G + i, _B + i
                    buf[r], buf[g], buf[b] = _bw_px(buf[r], buf[g], buf[b], k)

    return _steps


def _make_render_rows(sources_digest: str):
    # numba's on-disk cache is keyed on this file's timestamp and the function's own bytecode and closure
    # variables, not on the functions it inlines: an edited pixel kernel in filters.py would otherwise keep
    # running from a stale cache. The digest (_kernel_code_digest), a closure variable, puts them in the key.
    @numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
    def _render_rows(src, dst, ids, consts, clip, bad):
        """src, dst: float32 ``(H, W, 3)`` C-contiguous (may be the same array); ids int32 ``(S,)``;
        consts float32 ``(S, MAX_KERNEL_CONSTS)`` (prepared); bad int64 ``(H,)`` receives, per row, the column of
        the first non-finite input value or -1. Rows with a non-finite value are still rendered (the caller
        raises)."""
        if len(sources_digest) == 0:  # never true: references the digest so that it is part of the key
            return
        h, w = src.shape[0], src.shape[1]
        zero = np.float32(0.0)
        one = np.float32(1.0)
        for y in numba.prange(h):
            buf = np.empty(3 * CHUNK, np.float32)
            bad[y] = -1
            for x0 in range(0, w, CHUNK):
                n = min(CHUNK, w - x0)
                row = src[y, x0:x0 + n].reshape(-1)  # (3n,) interleaved RGB
                # Unsigned indices: numba adds a negative-index fix-up to signed ones, which hides the
                # address pattern from LLVM ("cannot identify array bounds") and keeps these loops scalar.
                un = np.uint64(n)
                # The largest exponent field in the chunk, a vectorised integer max-reduction: all ones
                # means an inf or NaN somewhere, found without a compare-and-branch per value.
                expo = np.int32(0)
                for j in range(np.uint64(3) * un):
                    expo = fmax(expo, f32_bits(row[j]) & _EXP_MASK)
                if expo == _EXP_MASK and bad[y] < 0:
                    bad[y] = _first_nonfinite(row, x0)
                for i in range(un):
                    buf[_UR + i] = row[_U3 * i]
                    buf[_UG + i] = row[_U3 * i + _U1]
                    buf[_UB + i] = row[_U3 * i + _U2]
                _steps(buf, n, ids, consts)
                out = dst[y, x0:x0 + n].reshape(-1)
                if clip:
                    for i in range(un):
                        out[_U3 * i] = clamp(buf[_UR + i], zero, one)
                        out[_U3 * i + _U1] = clamp(buf[_UG + i], zero, one)
                        out[_U3 * i + _U2] = clamp(buf[_UB + i], zero, one)
                else:
                    for i in range(un):
                        out[_U3 * i] = buf[_UR + i]
                        out[_U3 * i + _U1] = buf[_UG + i]
                        out[_U3 * i + _U2] = buf[_UB + i]

    return _render_rows


def _make_step_batch(sources_digest: str):
    # fastmath=False set: agent/level.py's contracting kernels call this one (see _make_steps)
    @numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
    def _step_batch(states, ids, consts):
        """states: float32 ``(B, H, W, 3)`` C-contiguous, edited in place, unclipped: image ``b`` through its
        steps ``ids[b]`` ``(T,)`` / ``consts[b]`` ``(T, K)``. Serial (the agent's proxies are 64x64: threads would
        cost more)."""
        if len(sources_digest) == 0:  # never true: references the digest so that it is part of the key
            return
        buf = np.empty(3 * CHUNK, np.float32)
        for b in range(states.shape[0]):
            flat = states[b].reshape(-1)
            npx = flat.shape[0] // 3
            for x0 in range(0, npx, CHUNK):
                n = min(CHUNK, npx - x0)
                un = np.uint64(n)
                row = flat[3 * x0:3 * (x0 + n)]
                for i in range(un):
                    buf[_UR + i] = row[_U3 * i]
                    buf[_UG + i] = row[_U3 * i + _U1]
                    buf[_UB + i] = row[_U3 * i + _U2]
                _steps(buf, n, ids[b], consts[b])
                for i in range(un):
                    row[_U3 * i] = buf[_UR + i]
                    row[_U3 * i + _U1] = buf[_UG + i]
                    row[_U3 * i + _U2] = buf[_UB + i]

    return _step_batch


@numba.njit(cache=True, nogil=True)
def _first_nonfinite(row, x0):
    """Column (offset by ``x0``) of the first pixel of ``row`` (``(3n,)`` interleaved) with an inf/NaN, or -1."""
    for j in range(row.shape[0]):
        if not np.isfinite(row[j]):
            return x0 + j // 3
    return -1


_SOURCES_DIGEST = _kernel_code_digest()
_steps = _make_steps(_SOURCES_DIGEST)  # a module global: _render_rows calls it by name
_render_rows = _make_render_rows(_SOURCES_DIGEST)
_step_batch = _make_step_batch(_SOURCES_DIGEST)
# For compiled code elsewhere that runs programs on small states (agent/level.py's render-and-read kernels): the
# batch kernel, and the digest their cache keys must hold (as _make_render_rows').
step_batch_kernel = _step_batch
KERNEL_DIGEST = _SOURCES_DIGEST


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan_nonfinite(img, bad):
    """Per row of float32 ``(H, W, 3)`` C-contiguous ``img``: the column of the first inf/NaN or -1, into
    ``bad`` ``(H,)``."""
    for y in numba.prange(img.shape[0]):
        bad[y] = _first_nonfinite(img[y].reshape(-1), 0)


@contextlib.contextmanager
def _torch_threads_kept():
    """Around the parallel kernels (it decorates :func:`render`): numba's OpenMP layer may set the calling
    thread's OpenMP thread count when it launches (omp_set_num_threads), and torch reads that same setting as its
    intra-op thread count. Without this, a render after a prediction moved torch from 1 to numba's 2 threads
    (measured), so a process that pins torch to one thread (``retouch``, a daemon worker) ran its later predictions
    on every core."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def prepared_constants(ids: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """``consts float32 (S, MAX_KERNEL_CONSTS)``: for each filter id and packed parameter row, the constants its
    ``pixel`` kernel reads (``Filter.prepare`` of the packed parameters, zero-padded)."""
    consts = np.zeros((len(ids), F.MAX_KERNEL_CONSTS), np.float32)
    for s, (fid, p) in enumerate(zip(ids, packed)):
        f = F.FILTERS[int(fid)]
        k = f.prepare(p[: f.n_packed]) if f.prepare is not None else p[: f.n_packed]
        consts[s, : k.size] = k
    return consts


def kernel_constants(sequence: EditSequence) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int32 (S,), consts float32 (S, MAX_KERNEL_CONSTS))``: each step's filter id and the constants
    its ``pixel`` kernel reads (:func:`prepared_constants`)."""
    ids, params = sequence.packed()
    return ids, prepared_constants(ids, params)


def step_batch(states: np.ndarray, filter_ids: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """One agent step on a batch, in place: image ``b`` of ``states`` through filter ``filter_ids[b]`` with the
    packed parameters ``packed[b]`` (the first ``n_packed`` values used), unclipped, with the same pixel kernels
    as :func:`render` (so the result equals ``render(states[b], one-step sequence, clip=False)``).

    states: float32 ``(B, H, W, 3)`` C-contiguous; filter_ids ``(B,)`` ints; packed ``(B, >= n_packed)``.
    Returns ``states``. Inference uses it instead of the torch filters: for 8 64x64 states with 8 different
    filters 0.11 vs 1.22 ms (docs/training.md)."""
    if states.dtype != np.float32 or states.ndim != 4 or states.shape[3] != 3 or not states.flags.c_contiguous:
        raise ValueError(f"states must be C-contiguous float32 (B, H, W, 3), got {states.dtype} {states.shape}")
    ids = np.asarray(filter_ids, np.int32).reshape(-1)
    packed = np.asarray(packed, np.float32)
    if ids.shape[0] != states.shape[0] or packed.shape[0] != states.shape[0]:
        raise ValueError(f"{states.shape[0]} states, {ids.shape[0]} filter ids, {packed.shape[0]} parameter rows")
    _step_batch(states, ids[:, None], prepared_constants(ids, packed)[:, None])
    return states


def programs_batch(states: np.ndarray, filter_ids: np.ndarray, consts: np.ndarray) -> np.ndarray:
    """Whole programs on a batch, in place: image ``b`` of ``states`` through its steps ``filter_ids[b]`` (int32
    ``(B, T)``) with kernel constants ``consts[b]`` (float32 ``(B, T, MAX_KERNEL_CONSTS)``, each step's
    :func:`prepared_constants`), unclipped; one pass over the pixels (the same kernels as :func:`render` and
    :func:`step_batch`). For running many programs over small states repeatedly (the level rule's search)."""
    if states.dtype != np.float32 or states.ndim != 4 or states.shape[3] != 3 or not states.flags.c_contiguous:
        raise ValueError(f"states must be C-contiguous float32 (B, H, W, 3), got {states.dtype} {states.shape}")
    ids = np.ascontiguousarray(filter_ids, np.int32)
    consts = np.ascontiguousarray(consts, np.float32)
    if ids.ndim != 2 or consts.shape != (*ids.shape, F.MAX_KERNEL_CONSTS) or ids.shape[0] != states.shape[0]:
        raise ValueError(f"{states.shape[0]} states, filter ids {ids.shape}, constants {consts.shape}")
    _step_batch(states, ids, consts)
    return states


def _check_image(image: np.ndarray, what: str = "image") -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, not {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must have shape (H, W, 3) (RGB, channels last), got {image.shape}")
    if image.dtype.kind != "f":
        raise TypeError(f"{what} must hold linear float pixels, got dtype {image.dtype}: decode integer images "
                        "with exposure_engine.imageio first (they are usually sRGB-encoded, not linear)")


def _raise_nonfinite(bad: np.ndarray, y0: int = 0) -> None:
    rows = np.flatnonzero(bad >= 0)
    if rows.size:
        y = int(rows[0])
        raise ValueError(f"image has a non-finite value (inf or NaN, or beyond float32 range) at pixel "
                         f"(row {y0 + y}, column {int(bad[y])}); {rows.size} row(s) affected")


@_torch_threads_kept()
def render(image: np.ndarray, sequence: EditSequence | dict | str, *, clip: bool = True,
           out: np.ndarray | None = None) -> np.ndarray:
    """Apply ``sequence`` to ``image``.

    image: ``(H, W, 3)`` float linear-light RGB (sRGB primaries), any size and strides; float32 C-contiguous
        is read directly, anything else is converted ``ROWS_PER_BLOCK`` rows at a time (no full-size copy).
    sequence: an :class:`EditSequence`, a dict as loaded from JSON, or a path to a JSON file.
    clip: clamp the result to [0, 1], the display range the format promises for the last step's output;
        ``clip=False`` returns the formulas' raw values (what :func:`render_torch` gives).
    out: optional ``(H, W, 3)`` float32 C-contiguous destination; ``out=image`` renders in place.
    Returns ``(H, W, 3)`` float32 display-encoded sRGB (``out`` when given).
    Raises TypeError / ValueError for a non-float image, a wrong shape, a bad ``out`` (wrong shape or dtype,
    read-only, overlapping the image without being it), or an image holding inf/NaN: the message names the
    first such pixel. With ``out=image`` the image is checked before it is overwritten; a separate ``out``
    may have been written when the error is raised.
    """
    _check_image(image)
    ids, consts = kernel_constants(as_sequence(sequence))
    if out is None:
        out = np.empty(image.shape, np.float32)
    else:
        _check_image(out, "out")
        if out.shape != image.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of the image's shape {image.shape}, got "
                             f"{out.dtype} {out.shape}{'' if out.flags.c_contiguous else ' (not C-contiguous)'}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
    h = image.shape[0]
    if image.size == 0:
        return out
    direct = image.dtype == np.float32 and image.flags.c_contiguous
    if np.may_share_memory(image, out):
        # Rows are rendered in parallel, each read before it is written: only the exact same array is safe.
        same = (direct and image.__array_interface__["data"][0] == out.__array_interface__["data"][0])
        if not same:
            raise ValueError("out overlaps the image without being the same array; pass out=image to render "
                             "in place, or a separate array")
        # In place: a non-finite pixel must be reported before the image is overwritten.
        bad = np.empty(h, np.int64)
        _scan_nonfinite(image, bad)
        _raise_nonfinite(bad)
    if direct:
        bad = np.empty(h, np.int64)
        _render_rows(image, out, ids, consts, bool(clip), bad)
        _raise_nonfinite(bad)
        return out
    # Other dtypes or strides: blocks of rows converted into a small float32 C-contiguous buffer.
    for y0 in range(0, h, ROWS_PER_BLOCK):
        y1 = min(y0 + ROWS_PER_BLOCK, h)
        with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf and is reported below
            block = np.ascontiguousarray(image[y0:y1], dtype=np.float32)
        bad = np.empty(y1 - y0, np.int64)
        _render_rows(block, out[y0:y1], ids, consts, bool(clip), bad)
        _raise_nonfinite(bad, y0)
    return out


def render_torch(image: torch.Tensor, sequence: EditSequence | dict | str, *, clip: bool = False) -> torch.Tensor:
    """The same sequence through the differentiable torch filters: ``(B, 3, H, W)`` -> ``(B, 3, H, W)``.

    Used by training-side code and as the reference the fused renderer is tested against.
    """
    ids, params = as_sequence(sequence).packed()
    x = image
    for fid, p in zip(ids, params):
        f = F.FILTERS[int(fid)]
        pp = torch.as_tensor(p[: f.n_packed], dtype=x.dtype, device=x.device).expand(x.shape[0], -1)
        x = f.apply(x, pp)
    return x.clamp(0.0, 1.0) if clip else x


def set_threads(n: int | None) -> None:
    """Limit the renderer's threads; None restores the default (all cores, or ``NUMBA_NUM_THREADS``)."""
    limit = numba.config.NUMBA_NUM_THREADS
    if n is not None and not 1 <= n <= limit:
        raise ValueError(f"threads must be between 1 and {limit} (the cores numba may use), got {n}")
    numba.set_num_threads(n or limit)
