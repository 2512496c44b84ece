"""The full-resolution renderer: it computes what the torch training filters compute, for every filter and any
sequence, handles any array it is given, and rejects what it cannot render with a message that says why.

Agreement is measured as |fused - torch| <= 1e-5 * max(1, |torch|): 1e-5 absolute on display-range values, and
the same relative bound where a sequence (clip=False) leaves values far above 1, where float32 itself only
resolves about 1e-7 relative. For random sequences the bound is widened by torch float32's own error against
float64 at that pixel: contrast's 0.5 - 0.5 cos(pi L) cancels near black (one float32 ulp of the cosine is a
relative error of ~1e-7 / L), and a strong exposure step after it can amplify that beyond 1e-5; no float32
implementation can then be closer to torch float32 than torch float32 is to the exact result.
"""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exposure_engine import filters as F
from exposure_engine.benchmarks.render import COSTLY_SEQUENCE, numpy_render
from exposure_engine.sequence import EditSequence, Step

R = importlib.import_module("exposure_engine.renderer")
V = importlib.import_module("exposure_engine.vecmath")

TOL = 1e-5


def _special_image(rng: np.random.Generator, h: int = 24, w: int = 41) -> np.ndarray:
    """``(h, w, 3)`` float32 in [0, 2] with the values where formulas have kinks or special cases: exact 0,
    exact greys, values at every curve knot i/8, exactly 1, just around 1, the gamma floor, and noise."""
    img = rng.random((h, w, 3), dtype=np.float32) * np.float32(2.0)
    knots = np.arange(9, dtype=np.float32) / 8
    specials = np.concatenate([knots, [0.0, 1.0, 2.0, 0.001, 0.0005, 1e-7, np.nextafter(1, 0), np.nextafter(1, 2),
                                       0.5, 1.5]]).astype(np.float32)
    img[0, : specials.size] = specials[:, None]  # greys at the special values
    img[1, : specials.size, 0] = specials  # one channel special, the others random
    img[2, : specials.size, 1] = specials
    img[3, : specials.size] = 0.0
    img[3, : specials.size, 2] = specials  # pure blue ramp: saturated colours, lum small
    img[4] = 0.0  # a black row
    img[5, :, :] = img[5, :, :1]  # a row of random greys
    return img


def _torch(img: np.ndarray, seq: EditSequence, clip: bool = False) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    return R.render_torch(t, seq, clip=clip)[0].permute(1, 2, 0).numpy()


def _assert_agrees(got: np.ndarray, ref: np.ndarray, what: str = "", slack: np.ndarray | float = 0.0) -> None:
    """|got - ref| <= TOL * max(1, |ref|) + slack, elementwise."""
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.all(np.isfinite(ref)), "reference produced non-finite values: the test case is out of scope"
    err = np.maximum(np.abs(got.astype(np.float64) - ref) - slack, 0) / np.maximum(1.0, np.abs(ref.astype(np.float64)))
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= TOL, (f"{what}: error {err.max():.3g} at {worst}: fused {got[worst]} vs torch {ref[worst]}")


def _policy_step(f: F.Filter, raw: np.ndarray) -> Step:
    """A step with parameters the policy can produce: the filter's own mapping of raw network outputs."""
    packed = f.params_from_raw(torch.as_tensor(raw, dtype=torch.float64)[None])[0].tolist()
    return Step.from_packed(f.index, packed)


# ---------------------------------------------------------------------------------------------------------------
# Every filter is dispatched, alone it matches torch


def test_every_registered_filter_is_dispatched_by_the_kernel():
    assert R.DISPATCHED == {f.index for f in F.FILTERS}


@pytest.mark.parametrize("f", F.FILTERS, ids=lambda f: f.name)
@pytest.mark.parametrize("raw_scale", [0.0, 0.7, 3.0, 30.0], ids=lambda s: f"raw*{s}")
def test_each_filter_alone_matches_torch(f: F.Filter, raw_scale: float):
    rng = np.random.default_rng(f.index * 100 + int(raw_scale * 10))
    img = _special_image(rng)
    seq = EditSequence([_policy_step(f, rng.standard_normal(f.n_raw) * raw_scale)])
    _assert_agrees(R.render(img, seq, clip=False), _torch(img, seq), f.name)
    # clip=True is the same values clamped to the display range
    np.testing.assert_array_equal(R.render(img, seq, clip=True), np.clip(R.render(img, seq, clip=False), 0, 1))


@pytest.mark.parametrize("f", F.FILTERS, ids=lambda f: f.name)
def test_each_filter_changes_the_image_when_not_identity(f: F.Filter):
    # Guards against a dispatch that silently skips a step (the output would equal the input).
    img = _special_image(np.random.default_rng(1))
    seq = EditSequence([_policy_step(f, np.full(f.n_raw, 1.3) * np.linspace(0.5, 1.5, f.n_raw))])
    assert np.abs(R.render(img, seq, clip=False) - img).max() > 1e-3


@pytest.mark.parametrize("params", [
    ("exposure", {"ev": 20.0}), ("exposure", {"ev": -20.0}),
    ("gamma", {"gamma": 0.01}), ("gamma", {"gamma": 8.0}),
    ("white_balance", {"gains": [0.05, 1.0, 20.0]}),
    ("tone_curve", {"slopes": [0, 0, 0, 5, 0, 0, 0, 0]}),  # a step: all the rise in one segment
    ("tone_curve", {"slopes": [1000, 0.001, 1, 1, 1, 1, 1, 1]}),
    ("color_curves", {"slopes": [[0, 0, 0, 0, 0, 0, 0, 1], [1] * 8, [3, 0, 0, 0, 0, 0, 0, 0]]}),
    ("contrast", {"amount": -1.0}), ("contrast", {"amount": 1.0}),
    ("saturation", {"amount": 1.0}), ("black_and_white", {"amount": 1.0}),
], ids=lambda p: f"{p[0]}-{list(p[1].values())[0]}")
def test_extreme_parameters_beyond_the_policy_range_match_torch(params):
    img = _special_image(np.random.default_rng(7))
    seq = EditSequence([Step(params[0], params[1])])
    _assert_agrees(R.render(img, seq, clip=False), _torch(img, seq), params[0])


# ---------------------------------------------------------------------------------------------------------------
# Random sequences of all eight filters

_raw = st.floats(-4.0, 4.0, allow_nan=False, width=32)


@st.composite
def _policy_sequences(draw) -> EditSequence:
    steps = []
    for _ in range(draw(st.integers(1, 8))):
        f = F.FILTERS[draw(st.integers(0, F.N_FILTERS - 1))]
        steps.append(_policy_step(f, np.array(draw(st.lists(_raw, min_size=f.n_raw, max_size=f.n_raw)))))
    return EditSequence(steps)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=_policy_sequences(), seed=st.integers(0, 2**16))
def test_random_sequences_match_torch(seq: EditSequence, seed: int):
    img = _special_image(np.random.default_rng(seed), h=8, w=23)
    ref = _torch(img, seq)
    # How much float32 rounding this sequence amplifies at each pixel (a contrast step on dark values followed by
    # +9 EV turns one rounding of ~6e-8 into ~1e-5): torch's float32 error on the image and on the image nudged
    # by one ulp either way, whichever is largest. Any formula difference is orders of magnitude above it.
    noise = [np.abs(_torch(x, seq).astype(np.float64) - _torch(x.astype(np.float64), seq))
             for x in (img, np.nextafter(img, np.float32(np.inf)), np.nextafter(img, np.float32(-np.inf)))]
    slack = 2.0 * np.maximum.reduce(noise)
    _assert_agrees(R.render(img, seq, clip=False), ref, " > ".join(seq.labels()), slack)
    _assert_agrees(R.render(img, seq, clip=True), np.clip(ref, 0, 1), "clip=True", slack)


# ---------------------------------------------------------------------------------------------------------------
# Clipping, out=, in place, layouts and dtypes


def _bright_sequence() -> EditSequence:
    return EditSequence([Step("exposure", {"ev": 1.5}), Step("contrast", {"amount": 0.5})])


def test_clip_true_clamps_to_the_display_range_and_clip_false_does_not():
    img = _special_image(np.random.default_rng(2))
    raw = R.render(img, _bright_sequence(), clip=False)
    assert raw.max() > 1.5  # exposure +1.5 EV of values up to 2 leaves the display range
    clipped = R.render(img, _bright_sequence())
    assert clipped.min() >= 0.0 and clipped.max() == 1.0
    np.testing.assert_array_equal(clipped, np.clip(raw, 0.0, 1.0))


def test_empty_sequence_is_identity_then_clip():
    img = _special_image(np.random.default_rng(3))
    np.testing.assert_array_equal(R.render(img, EditSequence([]), clip=False), img)
    np.testing.assert_array_equal(R.render(img, EditSequence([])), np.clip(img, 0, 1))


def test_out_receives_the_result_and_is_returned():
    img = _special_image(np.random.default_rng(4))
    out = np.full_like(img, -7.0)
    got = R.render(img, _bright_sequence(), out=out)
    assert got is out
    np.testing.assert_array_equal(out, R.render(img, _bright_sequence()))


def test_in_place_render_equals_out_of_place():
    img = _special_image(np.random.default_rng(5), h=37, w=2 * R.CHUNK + 5)  # rows span several chunks
    expected = R.render(img, COSTLY_SEQUENCE)
    assert R.render(img, COSTLY_SEQUENCE, out=img) is img
    np.testing.assert_array_equal(img, expected)


def test_widths_around_the_chunk_size_are_rendered_completely():
    seq = EditSequence.from_dict(COSTLY_SEQUENCE)
    for w in (1, R.CHUNK - 1, R.CHUNK, R.CHUNK + 1, 3 * R.CHUNK + 7):
        img = np.random.default_rng(w).random((3, w, 3), dtype=np.float32) * np.float32(2.0)
        _assert_agrees(R.render(img, seq, clip=False), _torch(img, seq), f"width {w}")


def test_non_contiguous_and_float64_inputs_give_the_float32_result():
    rng = np.random.default_rng(6)
    img = _special_image(rng, h=150, w=60)  # more rows than ROWS_PER_BLOCK: the blocked path loops
    expected = R.render(img, COSTLY_SEQUENCE)
    big = np.zeros((300, 60, 4), np.float32)
    big[::2, :, :3] = img
    strided = big[::2, :, :3]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(R.render(strided, COSTLY_SEQUENCE), expected)
    np.testing.assert_array_equal(R.render(img.astype(np.float64), COSTLY_SEQUENCE), expected)
    np.testing.assert_array_equal(R.render(np.asfortranarray(img), COSTLY_SEQUENCE), expected)
    assert R.render(img.astype(np.float64), COSTLY_SEQUENCE).dtype == np.float32
    np.testing.assert_array_equal(strided, big[::2, :, :3])  # the input is not modified


def test_empty_image_gives_an_empty_result():
    assert R.render(np.zeros((0, 5, 3), np.float32), COSTLY_SEQUENCE).shape == (0, 5, 3)


def test_sequence_may_be_a_dict_or_a_json_path(tmp_path):
    img = _special_image(np.random.default_rng(8))
    path = tmp_path / "seq.json"
    EditSequence.from_dict(COSTLY_SEQUENCE).save(path)
    expected = R.render(img, EditSequence.from_dict(COSTLY_SEQUENCE))
    np.testing.assert_array_equal(R.render(img, COSTLY_SEQUENCE), expected)
    np.testing.assert_array_equal(R.render(img, str(path)), expected)


# ---------------------------------------------------------------------------------------------------------------
# Rejected input


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, bool])
def test_integer_images_are_rejected_with_a_hint(dtype):
    with pytest.raises(TypeError, match=r"linear float.*imageio"):
        R.render(np.zeros((4, 4, 3), dtype), COSTLY_SEQUENCE)


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4), (4, 4, 1), (3, 4, 4), (2, 4, 4, 3)])
def test_wrong_shapes_are_rejected_naming_the_shape(shape):
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*" + r"\(" + ", ".join(map(str, shape))):
        R.render(np.zeros(shape, np.float32), COSTLY_SEQUENCE)


def test_non_arrays_are_rejected():
    with pytest.raises(TypeError, match="numpy array"):
        R.render([[[0.0, 0.0, 0.0]]], COSTLY_SEQUENCE)


@pytest.mark.parametrize("bad_out, why", [
    (np.zeros((4, 5, 3), np.float32), "shape"),
    (np.zeros((4, 4, 3), np.float64), "float32"),
    (np.zeros((4, 8, 3), np.float32)[:, ::2], "C-contiguous"),
])
def test_bad_out_arrays_are_rejected(bad_out, why):
    with pytest.raises(ValueError, match=why):
        R.render(np.zeros((4, 4, 3), np.float32), COSTLY_SEQUENCE, out=bad_out)


def test_out_overlapping_the_image_without_being_it_is_rejected():
    buf = np.zeros((5, 4, 3), np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        R.render(buf[:4], COSTLY_SEQUENCE, out=buf[1:])  # shifted by one row
    with pytest.raises(ValueError, match="overlaps"):
        R.render(buf[::-1][:4], COSTLY_SEQUENCE, out=buf[:4])  # rows reversed (the strided-input path)


def test_read_only_out_is_rejected():
    out = np.zeros((4, 4, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        R.render(np.zeros((4, 4, 3), np.float32), COSTLY_SEQUENCE, out=out)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("layout", ["contiguous", "float64", "in place"])
def test_non_finite_pixels_are_reported_by_position(value, layout):
    img = np.full((40, 3000, 3), 0.5, np.float32)
    img[23, 2100, 1] = value
    src = img.astype(np.float64) if layout == "float64" else img
    kwargs = {"out": img} if layout == "in place" else {}
    with pytest.raises(ValueError, match=r"non-finite.*row 23, column 2100"):
        R.render(src, COSTLY_SEQUENCE, **kwargs)
    if layout == "in place":
        assert img[0, 0, 0] == np.float32(0.5)  # checked before anything was overwritten


def test_float64_beyond_float32_range_is_reported_not_rendered_as_inf():
    img = np.full((2, 3, 3), 0.5)
    img[1, 2, 0] = 1e300
    with pytest.raises(ValueError, match=r"row 1, column 2"):
        R.render(img, COSTLY_SEQUENCE)


def test_invalid_sequences_are_rejected_by_field():
    from exposure_engine.sequence import SequenceError

    bad = {"format": "exposure-edit-sequence", "version": 1, "steps": [{"filter": "gamma", "params": {"gamma": -1}}]}
    with pytest.raises(SequenceError, match=r"steps\[0\]\.params\.gamma"):
        R.render(np.zeros((2, 2, 3), np.float32), bad)


# ---------------------------------------------------------------------------------------------------------------
# The benchmark's numpy reference computes the same thing (so the benchmark compares like with like)


def test_numpy_reference_matches_torch_for_every_filter_and_the_benchmark_sequence():
    img = _special_image(np.random.default_rng(9))
    seqs = [EditSequence([_policy_step(f, np.linspace(-1.5, 1.5, f.n_raw))]) for f in F.FILTERS]
    seqs.append(EditSequence.from_dict(COSTLY_SEQUENCE))
    for seq in seqs:
        ref = _torch(img, seq)
        _assert_agrees(numpy_render(img, seq, clip=False), ref, "numpy " + seq.labels()[0])
        _assert_agrees(R.render(img, seq, clip=False), ref, "fused " + seq.labels()[0])


# ---------------------------------------------------------------------------------------------------------------
# The vectorisable maths the kernels use, against float64


def test_pow_f32_is_within_3e7_relative_of_float64_over_the_gamma_range():
    import numba

    @numba.njit
    def pw(x, e, out):
        for i in range(x.shape[0]):
            out[i] = V.pow_f32(x[i], e)

    x = np.concatenate([np.geomspace(0.001, 1e4, 200_001), np.arange(1, 9) / 8, [2.0]]).astype(np.float32)
    out = np.empty_like(x)
    for e in (1 / 3, 0.45, 1.0, 2.2, 3.0):
        pw(x, np.float32(e), out)
        ref = x.astype(np.float64) ** np.float64(np.float32(e))
        finite = ref < 3e38
        assert np.max(np.abs(out[finite] - ref[finite]) / ref[finite]) < 3e-7, e
        assert np.all(np.isinf(out[~finite]))
    pw(np.array([np.inf, 1.0], np.float32), np.float32(0.5), out[:2])
    assert out[0] == np.inf and out[1] == 1.0


def test_log2_f32_is_within_2e7_of_float64_from_tiny_to_huge():
    import numba

    @numba.njit
    def lg(x, out):
        for i in range(x.shape[0]):
            out[i] = V.log2_f32(x[i])

    x = np.concatenate([np.geomspace(1.2e-38, 3e38, 400_001), np.arange(1, 17) / 8]).astype(np.float32)
    out = np.empty(len(x), np.float64)
    lg(x, out)
    assert np.max(np.abs(out - np.log2(x.astype(np.float64)))) < 2e-7
    lg(np.array([1.0, 2.0, 0.5], np.float32), out[:3])
    assert list(out[:3]) == [0.0, 1.0, -1.0]  # exact at powers of two


def test_cos_pi_rounds_like_a_correct_cosine_near_0_and_1_and_is_within_2e7_elsewhere():
    import numba

    @numba.njit
    def cp(x, out):
        for i in range(x.shape[0]):
            out[i] = V.cos_pi(x[i])

    # Dense near 0 and 1, where contrast's 0.5 - 0.5 cos(pi L) cancels and the rounding of cos decides.
    x = np.unique(np.concatenate([np.linspace(0, 1, 200_001), np.geomspace(1e-7, 0.01, 20_001),
                                  1 - np.geomspace(1e-7, 0.01, 20_001)]).astype(np.float32))
    out = np.empty_like(x)
    cp(x, out)
    exact = np.cos(np.pi * x.astype(np.float64))
    assert np.max(np.abs(out - exact)) < 2e-7
    ends = (x < 0.1) | (x > 0.9)
    nearest = exact.astype(np.float32)  # correctly rounded float32
    ulps = np.abs(out[ends].view(np.int32).astype(np.int64) - nearest[ends].view(np.int32).astype(np.int64))
    assert ulps.max() <= 1 and np.mean(ulps == 0) > 0.95
    assert out[0] == 1.0 and out[-1] == -1.0


# ---------------------------------------------------------------------------------------------------------------
# The benchmark's own measuring


def test_peak_memory_sees_an_allocation_made_and_freed_inside():
    # In a fresh process, as the benchmark measures each implementation: in a long test session the allocator
    # may hand back pages that are still resident from earlier tests, and RSS would not move.
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from exposure_engine.benchmarks.render import PeakMemory\n"
            "with PeakMemory() as mem:\n"
            "    a = np.ones(40 * 2**20 // 8)  # 40 MiB, touched\n"
            "    del a\n"
            "print(mem.extra_bytes)\n")
    extra = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 38 * 2**20 <= extra < 80 * 2**20, extra


@pytest.mark.slow
def test_bench_render_command_reports_both_implementations_as_json(tmp_path):
    import json

    from exposure_engine.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "render", "--size", "96x64", "--repeat", "2", "--threads", "1", "--breakdown",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    by = {r["impl"]: r for r in doc["results"]}
    assert set(by) == {"fused", "numpy"}
    for r in by.values():
        assert r["width"] == 96 and r["height"] == 64 and len(r["times_s"]) == 2 and len(r["cpu_s"]) == 2
        assert r["median_s"] > 0 and r["mp_per_s"] > 0 and r["peak_extra_bytes"] >= 0
        assert r["input_bytes"] == 96 * 64 * 3 * 4
    assert by["fused"]["threads"] == 1 and by["numpy"]["threads"] is None and doc["machine"]["cores"] >= 1
    assert set(by["fused"]["breakdown"]["filter_cpu_s"]) == {f.name for f in F.FILTERS}


def test_bench_render_rejects_more_threads_than_numba_may_use():
    import numba

    from exposure_engine.cli import main

    with pytest.raises(SystemExit):  # argparse: not a positive integer
        main(["bench", "render", "--threads", "0"])
    assert main(["bench", "render", "--threads", str(numba.config.NUMBA_NUM_THREADS + 1)]) == 2


@pytest.mark.parametrize("in_place", [False, True])
def test_a_render_leaves_torchs_thread_count_alone(in_place):
    # numba's OpenMP layer sets the calling thread's OpenMP thread count (once per process, after a prediction
    # here), and torch reads the same setting: a process that pins torch to one thread (retouch, a daemon worker)
    # ran its later predictions on every core. A fresh interpreter, because it happens once per process.
    import subprocess
    import sys

    script = f"""
import numpy as np, torch
from exposure_engine.agent.policy import Policy
from exposure_engine.renderer import render
from exposure_engine.benchmarks.render import COSTLY_SEQUENCE
torch.set_num_threads(1)
Policy.random(seed=0).predict_batch(np.full((2, 64, 64, 3), 0.1, np.float32), dropout=False)  # as a monitor does
img = np.random.default_rng(0).random((96, 64, 3), dtype=np.float32)
render(img, COSTLY_SEQUENCE, out=img if {in_place} else None)
render(img[:, ::2], COSTLY_SEQUENCE)  # strided: the row-block path
print(torch.get_num_threads())
"""
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}  # more than torch's one, even on a one-core machine
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1"]


@pytest.mark.slow
def test_the_renders_rounding_does_not_depend_on_which_kernel_compiled_its_step_loop_first(tmp_path):
    # numba compiles a callee that sets no fastmath with its first caller's flags and caches it so: the level
    # rule's kernels (fastmath "contract") calling the step loop first made every later render of the process, and
    # of every process using that cache, round with FMAs (3.6e-7 off). A fresh cache, the level rule first.
    import subprocess
    import sys

    script = f"""
import numpy as np
from exposure_engine import renderer as R
from exposure_engine.agent import level as L
from exposure_engine.benchmarks.render import COSTLY_SEQUENCE
img = np.random.default_rng(0).random((64, 200, 3), dtype=np.float32)
ids, consts = R.kernel_constants(R.as_sequence(COSTLY_SEQUENCE))
L._render_levels(img[None], np.array([0]), ids[None], consts[None], np.ones(1, np.float32), np.empty(1))
np.save({str(tmp_path / 'after_level.npy')!r}, R.render(img, COSTLY_SEQUENCE, clip=False))
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=600)
    img = np.random.default_rng(0).random((64, 200, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.load(tmp_path / "after_level.npy"), R.render(img, COSTLY_SEQUENCE, clip=False))
