"""The eight filters: formulas, parameter mappings, gradients and invariants (filters.py is the spec)."""
from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from exposure_engine import filters as F
from exposure_engine.sequence import schema

torch.manual_seed(0)


def rand_img(b=2, h=5, w=7, lo=0.0, hi=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, h, w, generator=g, dtype=dtype) * (hi - lo) + lo)


def packed(f: F.Filter, raw: torch.Tensor) -> torch.Tensor:
    return f.params_from_raw(raw)


def test_registry_order_names_and_sizes_match_the_paper():
    assert [f.name for f in F.FILTERS] == ["exposure", "gamma", "white_balance", "saturation", "tone_curve",
                                           "color_curves", "contrast", "black_and_white"]
    assert [f.index for f in F.FILTERS] == list(range(8))
    assert [f.n_raw for f in F.FILTERS] == [1, 1, 3, 1, 8, 24, 1, 1]
    assert F.MAX_PACKED == max(f.n_packed for f in F.FILTERS)


def test_schema_names_exactly_the_registered_filters():
    enum = schema()["$defs"]["step"]["properties"]["filter"]["enum"]
    assert enum == [f.name for f in F.FILTERS]


# --- parameter mappings ---------------------------------------------------------------------------------------

RAW = torch.linspace(-6, 6, 49, dtype=torch.float64)


def test_exposure_mapping_is_3_5_tanh():
    ev = F.EXPOSURE.params_from_raw(RAW[:, None])
    assert torch.allclose(ev[:, 0], 3.5 * torch.tanh(RAW))
    assert ev.abs().max() <= 3.5


def test_gamma_mapping_spans_one_third_to_three_and_is_one_at_zero():
    g = F.GAMMA.params_from_raw(RAW[:, None])[:, 0]
    assert g.min() >= 1 / 3 - 1e-12 and g.max() <= 3 + 1e-12
    assert F.GAMMA.params_from_raw(torch.zeros(1, 1, dtype=torch.float64)).item() == pytest.approx(1.0)


def test_white_balance_fixes_red_and_normalises_luminance_of_gains():
    raw = torch.randn(64, 3, dtype=torch.float64) * 3
    gains = F.WHITE_BALANCE.params_from_raw(raw)
    lum = F.LUM_R * gains[:, 0] + F.LUM_G * gains[:, 1] + F.LUM_B * gains[:, 2]
    assert torch.allclose(lum, torch.ones_like(lum), atol=2e-5)  # 1 / (1e-5 + lum) normalisation
    # before normalisation R = 1 and G, B in [exp(-0.5), exp(0.5)]: ratios to R carry that range
    assert ((gains[:, 1] / gains[:, 0]) >= math.exp(-0.5) - 1e-9).all()
    assert ((gains[:, 2] / gains[:, 0]) <= math.exp(0.5) + 1e-9).all()
    # the red raw output has no effect
    raw2 = raw.clone()
    raw2[:, 0] += 5
    assert torch.equal(F.WHITE_BALANCE.params_from_raw(raw2), gains)


def test_curve_slope_ranges_and_identity_at_zero():
    t = F.TONE_CURVE.params_from_raw(torch.randn(16, 8, dtype=torch.float64) * 4)
    assert t.min() >= 0.5 and t.max() <= 2.0
    assert torch.allclose(F.TONE_CURVE.params_from_raw(torch.zeros(1, 8)), torch.full((1, 8), 1.25))
    c = F.COLOR_CURVES.params_from_raw(torch.randn(16, 24, dtype=torch.float64) * 4)
    assert c.min() >= 0.9 and c.max() <= 1.1


def test_scalar_mappings():
    assert torch.allclose(F.SATURATION.params_from_raw(RAW[:, None])[:, 0], torch.sigmoid(RAW))
    assert torch.allclose(F.BLACK_AND_WHITE.params_from_raw(RAW[:, None])[:, 0], torch.sigmoid(RAW))
    assert torch.allclose(F.CONTRAST.params_from_raw(RAW[:, None])[:, 0], torch.tanh(RAW))


# --- formulas against independent, literal implementations ---------------------------------------------------

def _np(img):
    return img.permute(0, 2, 3, 1).reshape(-1, 3).numpy()


def test_saturation_matches_textbook_hsv_round_trip():
    img = rand_img(1, 9, 9, 0, 1.4, seed=3)
    img[0, :, 0, 0] = 0.5  # an exact grey: hue 0, so the paper's filter tints it red (as colorsys does)
    img[0, :, 0, 1] = 0.0  # black
    img[0, :, 0, 2] = 1.0  # white: v = 1 gives s' = s, unchanged
    p = torch.tensor([[0.7]], dtype=torch.float64)
    got = _np(F.SATURATION.apply(img, p))
    for src, out in zip(_np(img), got):
        x = np.minimum(src, 1.0)
        h, s, v = colorsys.rgb_to_hsv(*x)
        s2 = s + (1 - s) * (0.5 - abs(0.5 - v)) * 0.8
        enh = np.array(colorsys.hsv_to_rgb(h, s2, v))
        np.testing.assert_allclose(out, x + 0.7 * (enh - x), atol=1e-12)


def test_contrast_matches_formula():
    img = rand_img(1, 6, 6, 0, 1.5, seed=4)
    p = torch.tensor([[-0.6]], dtype=torch.float64)
    out = _np(F.CONTRAST.apply(img, p))
    for src, o in zip(_np(img), out):
        L = min(max(0.27 * src[0] + 0.67 * src[1] + 0.06 * src[2], 0), 1)
        enh = src / (L + 1e-6) * (0.5 - 0.5 * math.cos(math.pi * L))
        np.testing.assert_allclose(o, (1 + 0.6) * src - 0.6 * enh, atol=1e-12)


def test_tone_curve_matches_the_papers_prefix_sum_points():
    # points (k/L, T_k/T_L): the curve passes through them and is linear in between
    t = torch.tensor([[0.5, 2.0, 1.0, 0.7, 1.5, 1.9, 0.6, 1.2]], dtype=torch.float64)
    T = torch.cumsum(t[0], 0)
    xs = torch.linspace(0, 1, 9, dtype=torch.float64)
    out = F.TONE_CURVE.apply(xs.reshape(1, 1, 1, -1).expand(1, 3, 1, -1), t)[0, 0, 0]
    assert out[0] == 0
    assert torch.allclose(out[1:], T / T[-1])
    mid = F.TONE_CURVE.apply(torch.full((1, 3, 1, 1), 1.5 / 8, dtype=torch.float64), t)[0, 0, 0, 0]
    assert mid == pytest.approx((T[0] + 0.5 * t[0, 1]) / T[-1])


def test_color_curves_act_per_channel():
    slopes = torch.ones(1, 24, dtype=torch.float64)
    slopes[0, 8:16] = torch.tensor([1.1, 1.1, 1.1, 1.1, 0.9, 0.9, 0.9, 0.9])
    img = rand_img(1, 4, 4, seed=5)
    out = F.COLOR_CURVES.apply(img, slopes)
    assert torch.allclose(out[:, 0], img[:, 0]) and torch.allclose(out[:, 2], img[:, 2])
    assert (out[:, 1] >= img[:, 1] - 1e-12).all()  # steeper shadows lift the green curve


def test_black_and_white_full_gives_paper_luminance_grey():
    img = rand_img(seed=6)
    out = F.BLACK_AND_WHITE.apply(img, torch.ones(2, 1, dtype=torch.float64))
    L = 0.27 * img[:, 0] + 0.67 * img[:, 1] + 0.06 * img[:, 2]
    for c in range(3):
        assert torch.allclose(out[:, c], L)


def test_gamma_floors_at_0_001_and_exposure_doubles_per_ev():
    img = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    assert torch.allclose(F.GAMMA.apply(img, torch.tensor([[2.0]], dtype=torch.float64)), torch.full_like(img, 1e-6))
    img = rand_img(seed=7)
    assert torch.allclose(F.EXPOSURE.apply(img, torch.tensor([[1.0], [-2.0]], dtype=torch.float64)),
                          img * torch.tensor([2.0, 0.25], dtype=torch.float64).reshape(2, 1, 1, 1))


# --- identity and invariants -----------------------------------------------------------------------------------

@pytest.mark.parametrize("f", F.FILTERS, ids=lambda f: f.name)
def test_identity_parameters_give_identity_where_the_formula_allows(f):
    # In [0.001, 1): gamma's floor and the clipping filters (saturation, curves) leave such values alone.
    img = rand_img(2, 6, 6, 0.001, 0.999, seed=8)
    p = torch.tensor([f.identity] * 2, dtype=torch.float64)
    assert torch.allclose(f.apply(img, p), img, atol=1e-12 if f is not F.CONTRAST else 0)


@settings(max_examples=60, deadline=None)
@given(slopes=st.lists(st.floats(0.0, 5.0), min_size=8, max_size=8).filter(lambda s: sum(s) > 1e-3))
def test_curves_are_monotone_and_map_0_1_onto_0_1(slopes):
    t = torch.tensor([slopes], dtype=torch.float64)
    xs = torch.linspace(-0.5, 1.5, 401, dtype=torch.float64).reshape(1, 1, 1, -1).expand(1, 3, 1, -1)
    ys = F.TONE_CURVE.apply(xs, t)[0, 0, 0]
    assert (torch.diff(ys) >= -1e-12).all()
    assert ys[0] == 0 and ys[-1] == pytest.approx(1.0)
    assert ys.min() >= 0 and ys.max() <= 1 + 1e-12


@settings(max_examples=60, deadline=None)
@given(ev=st.floats(-3.5, 3.5), seed=st.integers(0, 10_000))
def test_exposure_round_trips_where_nothing_clips(ev, seed):
    img = rand_img(1, 4, 4, seed=seed)
    up = F.EXPOSURE.apply(img, torch.tensor([[ev]], dtype=torch.float64))
    back = F.EXPOSURE.apply(up, torch.tensor([[-ev]], dtype=torch.float64))
    assert torch.allclose(back, img, rtol=1e-12, atol=0)


@settings(max_examples=40, deadline=None)
@given(amount=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_saturation_keeps_hue_value_and_never_desaturates(amount, seed):
    img = rand_img(1, 4, 4, 0, 1, seed=seed)
    out = F.SATURATION.apply(img, torch.tensor([[amount]], dtype=torch.float64))
    v0, _, s0 = F.rgb_to_hsv_sv(img)
    v1, _, s1 = F.rgb_to_hsv_sv(out)
    assert torch.allclose(v0, v1, atol=1e-12)
    assert (s1 >= s0 - 1e-12).all()


@settings(max_examples=40, deadline=None)
@given(amount=st.floats(-1, 1), seed=st.integers(0, 10_000))
def test_contrast_keeps_pixels_non_negative_and_mid_grey_fixed(amount, seed):
    img = rand_img(1, 4, 4, 0, 1.2, seed=seed)
    img[0, :, 0, 0] = 0.5  # lum 0.5 -> cl 0.5: unchanged for any amount
    out = F.CONTRAST.apply(img, torch.tensor([[amount]], dtype=torch.float64))
    assert (out >= 0).all()
    assert torch.allclose(out[0, :, 0, 0], img[0, :, 0, 0], atol=1e-5)


def test_apply_packed_matches_per_row_apply():
    img = rand_img(8, 4, 4, 0, 1.2, seed=9)
    ids = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    raw = torch.randn(8, F.MAX_PACKED, dtype=torch.float64)
    pk = torch.zeros(8, F.MAX_PACKED, dtype=torch.float64)
    for i, f in enumerate(F.FILTERS):
        pk[i, : f.n_packed] = f.params_from_raw(raw[i : i + 1, : f.n_raw])
    out = F.apply_packed(img, ids, pk)
    for i, f in enumerate(F.FILTERS):
        assert torch.allclose(out[i], f.apply(img[i : i + 1], pk[i : i + 1, : f.n_packed])[0])


# --- gradients (float64 gradcheck: w.r.t. the image and the raw network outputs) --------------------------------

@pytest.mark.parametrize("f", F.FILTERS, ids=lambda f: f.name)
def test_gradcheck_image_and_raw_parameters(f):
    # Values kept off the kinks (clip edges, curve knots, gamma floor, HSV max/min ties) where gradients are
    # one-sided; gradcheck's finite differences need a neighbourhood of smoothness.
    g = torch.Generator().manual_seed(f.index)
    img = (torch.rand(2, 3, 3, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1)
    img = img + torch.arange(3, dtype=torch.float64).reshape(1, 3, 1, 1) * 1e-3  # avoid channel ties
    knots = torch.round(img * 8) / 8
    img = torch.where((img - knots).abs() < 1e-3, img + 3e-3, img).requires_grad_(True)
    raw = (torch.randn(2, f.n_raw, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)

    def fn(x, r):
        return f.apply(x, f.params_from_raw(r))

    assert torch.autograd.gradcheck(fn, (img, raw), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("f", F.FILTERS, ids=lambda f: f.name)
def test_gradients_are_finite_at_kinks_and_edges(f):
    # Exact zeros, greys, curve knots and values above 1: training must never see NaN gradients there.
    vals = torch.tensor([0.0, 0.125, 0.5, 1.0, 1.7], dtype=torch.float64)
    img = torch.stack(torch.meshgrid(vals, vals, vals, indexing="ij")).reshape(1, 3, 5, 25).clone().requires_grad_(True)
    raw = torch.zeros(1, f.n_raw, dtype=torch.float64, requires_grad=True)
    f.apply(img, f.params_from_raw(raw)).sum().backward()
    assert torch.isfinite(img.grad).all() and torch.isfinite(raw.grad).all()


# --- JSON, labels, icons -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("f", F.FILTERS, ids=lambda f: f.name)
def test_json_round_trip_label_and_icon(f):
    p = [float(v) for v in f.params_from_raw(torch.randn(1, f.n_raw, dtype=torch.float64))[0]]
    assert f.from_json(f.to_json(p)) == pytest.approx(p)
    assert f.label(p).startswith(f.title)
    icon = f.draw(p, 48)
    assert icon.shape == (48, 48, 3) and icon.dtype == np.uint8
    assert icon.std() > 0  # something was drawn


def test_labels_read_like_the_paper():
    assert F.EXPOSURE.label([1.21]) == "Exposure +1.21 EV"
    assert F.CONTRAST.label([0.57]) == "Contrast +0.57"
    assert F.SATURATION.label([1.0]) == "Saturation +100%"
