"""Unprocessing: finished photos made RAW-like (Brooks et al. 2019) for training inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposure_engine.imageio.transfer import srgb_to_linear
from exposure_engine.training.unprocess import (LUM, Jitter, UnprocessParams, UnprocessRanges, inverse_smoothstep,
                                                linear_stats, random_params, smoothstep, unprocess)


def photo(seed: int = 0) -> np.ndarray:
    """A bright, saturated 'finished photo' in display-encoded sRGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:60] / 60
    img = np.stack([0.2 + 0.7 * xx, 0.3 + 0.5 * yy, 0.8 - 0.6 * xx], -1) + 0.05 * rng.standard_normal((40, 60, 3))
    return np.clip(img, 0, 1).astype(np.float32)


@given(st.floats(0.0, 1.0))
def test_inverse_smoothstep_inverts_smoothstep(y):
    assert float(smoothstep(inverse_smoothstep(np.float32(y)))) == pytest.approx(y, abs=1e-5)


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


# --- jitter: a fresh look on every training sample ----------------------------------------------------------


def linear_batch(n: int = 64) -> "torch.Tensor":
    import torch

    rng = np.random.default_rng(1)
    return torch.from_numpy(np.stack([unprocess(photo(i % 7), random_params(rng)).transpose(2, 0, 1)
                                      for i in range(n)]))


def _lum(x):
    return np.einsum("bchw,c->b", x.numpy(), LUM) / (x.shape[2] * x.shape[3])


def test_jitter_exposure_alone_scales_each_image_by_its_own_power_of_two_within_the_range():
    x = linear_batch() * 0.45  # at most 0.45 / sqrt(2) bright: two times brighter is still below 1, no clipping
    y = Jitter(ev=1.0)(x, np.random.default_rng(0))
    stops = np.log2(y.numpy().reshape(len(x), -1).sum(1) / x.numpy().reshape(len(x), -1).sum(1))
    np.testing.assert_allclose(y.numpy(), x.numpy() * 2.0 ** stops[:, None, None, None], rtol=1e-4, atol=1e-7)
    assert stops.min() >= -1 - 1e-5 and stops.max() <= 1 + 1e-5 and stops.std() > 0.3


def test_jitter_saturation_keeps_luminance_cast_keeps_greys_luminance_and_grey_stays_grey():
    import torch

    x = linear_batch()
    lum = torch.einsum("bchw,c->bhw", x, torch.from_numpy(LUM))[:, None]
    x = lum + 0.3 * (x - lum)  # muted colours: even x1.5 chroma stays >= 0, so nothing is clipped
    y = Jitter(saturation=0.5)(x, np.random.default_rng(0))
    np.testing.assert_allclose(_lum(y), _lum(x), rtol=1e-5)
    chroma = lambda im: (im - im.mean(1, keepdim=True)).abs().mean((1, 2, 3)).numpy()
    factor = chroma(y) / chroma(x)
    assert factor.min() >= 0.5 - 1e-4 and factor.max() <= 1.5 + 1e-4 and factor.std() > 0.1
    grey = torch.full((8, 3, 4, 4), 0.2)
    cast = Jitter(cast=0.3)(grey, np.random.default_rng(0))
    np.testing.assert_allclose(_lum(cast), 0.2, rtol=1e-5)  # gains of unit luminance
    rb = cast[:, 0, 0, 0] / cast[:, 2, 0, 0]
    assert float(rb.std()) > 0.05 and float(rb.max()) <= 1.3 ** 2 + 1e-4  # R/B differs image to image
    np.testing.assert_allclose(Jitter(saturation=0.5)(grey, np.random.default_rng(0)).numpy(), 0.2, atol=1e-6)


def test_jitter_clips_like_a_sensor_and_off_means_no_change():
    import torch

    x = torch.full((4, 3, 4, 4), 0.9)
    y = Jitter(ev=2.0)(x, np.random.default_rng(3))
    assert float(y.max()) <= 1.0 and float(y.min()) >= 0.0
    assert not Jitter() and Jitter(ev=0.5)
    with pytest.raises(ValueError, match="input_jitter"):
        Jitter(saturation=1.0)
    with pytest.raises(ValueError, match="input_jitter"):
        Jitter(ev=-0.5)
