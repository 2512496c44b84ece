"""Unprocessing: finished photos made RAW-like (Brooks et al. 2019) for training inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposure_engine.training.unprocess import (LUM, UnprocessParams, UnprocessRanges, inverse_smoothstep,
                                                linear_stats, linear_to_srgb, random_params, smoothstep,
                                                srgb_to_linear, unprocess)


def photo(seed: int = 0) -> np.ndarray:
    """A bright, saturated 'finished photo' in display-encoded sRGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:60] / 60
    img = np.stack([0.2 + 0.7 * xx, 0.3 + 0.5 * yy, 0.8 - 0.6 * xx], -1) + 0.05 * rng.standard_normal((40, 60, 3))
    return np.clip(img, 0, 1).astype(np.float32)


@given(st.floats(0.0, 1.0))
def test_inverse_smoothstep_inverts_smoothstep(y):
    assert float(smoothstep(inverse_smoothstep(np.float32(y)))) == pytest.approx(y, abs=1e-5)


def test_srgb_transfer_curve_round_trips_and_has_the_standard_knee():
    v = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(v)), v, atol=2e-6)
    assert float(srgb_to_linear(np.float32(0.5))) == pytest.approx(0.21404, abs=1e-5)
    assert float(srgb_to_linear(np.float32(0.04))) == pytest.approx(0.04 / 12.92, rel=1e-6)


def test_neutral_parameters_only_undo_the_transfer_curve():
    img = photo()
    out = unprocess(img, UnprocessParams(ev=0.0, saturation=1.0, gains=(1.0, 1.0, 1.0), tone=False))
    np.testing.assert_allclose(out, srgb_to_linear(img), atol=1e-6)


def test_exposure_scales_linear_values_by_two_to_the_ev():
    img = photo()
    a = unprocess(img, UnprocessParams(ev=0.0, saturation=1.0))
    b = unprocess(img, UnprocessParams(ev=-2.0, saturation=1.0))
    np.testing.assert_allclose(b, a / 4, rtol=1e-5, atol=1e-7)


def test_desaturation_keeps_luminance_and_moves_towards_grey():
    img = photo()
    a = unprocess(img, UnprocessParams(ev=0.0, saturation=1.0))
    b = unprocess(img, UnprocessParams(ev=0.0, saturation=0.5))
    np.testing.assert_allclose(b @ LUM, a @ LUM, atol=1e-5)
    assert linear_stats(b)["saturation"] < linear_stats(a)["saturation"]


def test_random_parameters_stay_in_their_ranges_and_keep_luminance_of_the_gains():
    rng = np.random.default_rng(0)
    r = UnprocessRanges()
    for _ in range(200):
        p = random_params(rng, r)
        assert r.ev[0] <= p.ev <= r.ev[1]
        assert r.saturation[0] <= p.saturation <= r.saturation[1]
        assert float(LUM @ np.array(p.gains)) == pytest.approx(1.0, abs=1e-9)
        for c in (0, 2):  # the cast relative to green
            assert 1 / (1 + r.cast) - 1e-9 <= p.gains[c] / p.gains[1] <= 1 + r.cast + 1e-9


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_unprocessed_images_look_like_a_linear_raw_dark_and_in_range(seed):
    rng = np.random.default_rng(seed)
    img = photo(seed % 7)
    out = unprocess(img, random_params(rng))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1.0
    # darker than the finished photo's own linear light (every random EV is negative)
    assert (out @ LUM).mean() < (srgb_to_linear(img) @ LUM).mean()


def test_linear_stats_report_the_compared_quantities():
    img = np.full((4, 4, 3), [0.1, 0.2, 0.3], np.float32)
    s = linear_stats(img)
    assert s["mean_lum"] == pytest.approx(0.27 * 0.1 + 0.67 * 0.2 + 0.06 * 0.3, rel=1e-5)
    assert s["r_over_g"] == pytest.approx(0.5) and s["b_over_g"] == pytest.approx(1.5)
    assert s["saturation"] == pytest.approx(2 / 3, rel=1e-5)


def test_unprocess_rejects_a_non_rgb_array():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        unprocess(np.zeros((4, 4), np.float32), UnprocessParams())
