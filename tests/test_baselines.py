"""Baselines: identity, GIMP's auto white balance + stretch contrast, histogram matching, LibRaw's development."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exposure_engine.evaluation import baselines as B
from exposure_engine.imageio.transfer import linear_to_srgb, srgb_to_linear

from imagegen import write_test_dng

SHARED_CR2 = Path("/work/shared/raw/IMG_5952.CR2")


def gradient(h=64, w=96, lo=0.02, hi=0.6) -> np.ndarray:
    """A smooth linear image (no edges, so demosaicing is exact up to rounding)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([lo + (hi - lo) * x / w, lo + (hi - lo) * y / h,
                     lo + (hi - lo) * (x + y) / (w + h)], -1).astype(np.float32)


def test_every_baseline_maps_linear_to_display_float32_in_range():
    img = gradient() * np.float32(0.3)
    for name, spec in B.BASELINES.items():
        out = spec.make([linear_to_srgb(gradient())])(img)
        assert out.shape == img.shape and out.dtype == np.float32, name
        assert 0.0 <= out.min() and out.max() <= 1.0, name


def test_identity_is_the_srgb_encoding_clipped():
    out = B.identity(np.array([[[0.0, 0.18, 2.0]]], np.float32))
    np.testing.assert_allclose(out[0, 0], [0.0, 0.46135613, 1.0], atol=1e-6)


def test_baselines_refuse_integer_images():
    with pytest.raises(ValueError, match="gimp_auto: expected linear float"):
        B.gimp_auto(np.zeros((4, 4, 3), np.uint8))


# --- GIMP -------------------------------------------------------------------------------------------------------


def test_gimp_levels_stretch_stops_where_the_tail_share_is_closest_to_0_6_percent():
    # Every one of the 256 levels equally often: each bin holds 1/256 = 0.39 %. From the bottom, after bin 0 the
    # share is 0.39 % (0.21 from 0.6 %), after bin 1 0.78 % (0.18 away): bin 1 is closer, so the walk stops at
    # i = 1 and low = (1 + 1) / 255; symmetrically high = (254 - 1) / 255.
    values = np.repeat(np.arange(256) / 255.0, 10)
    low, high = B.gimp_stretch_levels(values)
    assert low == pytest.approx(2 / 255) and high == pytest.approx(253 / 255)


def test_gimp_white_balance_removes_a_per_channel_cast():
    grey = linear_to_srgb(gradient(lo=0.0, hi=1.0)[..., :1].repeat(3, -1))
    cast = grey * np.array([0.6, 0.9, 0.75], np.float32) + np.array([0.1, 0.0, 0.05], np.float32)
    out = B.gimp_white_balance(cast)
    assert np.abs(out[..., 0] - out[..., 1]).mean() < 0.01 and np.abs(out[..., 2] - out[..., 1]).mean() < 0.01
    assert out.min() == 0.0 and out.max() == 1.0


def test_gimp_auto_leaves_a_flat_image_alone():
    out = B.gimp_auto(np.full((8, 8, 3), 0.2, np.float32))
    np.testing.assert_allclose(out, linear_to_srgb(np.full((8, 8, 3), 0.2)), atol=1e-6)


def test_stretch_contrast_keeps_colours_and_stretches_in_linear_light():
    lin = np.array([[[0.2, 0.3, 0.4], [0.6, 0.5, 0.4]]], np.float32)
    out = srgb_to_linear(B.stretch_contrast(linear_to_srgb(lin)))
    np.testing.assert_allclose(out, (lin - 0.2) / 0.4, atol=1e-5)  # one min/max for all channels


# --- histogram matching -----------------------------------------------------------------------------------------


def test_histogram_matching_gives_the_target_distribution_and_keeps_pixel_order():
    rng = np.random.default_rng(0)
    src = rng.random((60, 80, 3)).astype(np.float32) ** 3 * 0.5  # dark linear input
    target = [np.clip(rng.normal(0.6, 0.1, (50, 70, 3)), 0, 1).astype(np.float32) for _ in range(3)]
    out = B.HistogramMatcher().fit(target)(src)
    pooled = np.concatenate([t.reshape(-1, 3) for t in target])
    for c in range(3):
        q = [0.1, 0.5, 0.9]
        np.testing.assert_allclose(np.quantile(out[..., c], q), np.quantile(pooled[:, c], q), atol=0.01)
        order = np.argsort(src[..., c].ravel())
        assert np.all(np.diff(out[..., c].ravel()[order]) >= -1e-6)  # monotone mapping per channel


def test_histogram_matching_to_itself_is_nearly_the_identity():
    img = gradient(lo=0.0, hi=1.0)
    display = linear_to_srgb(img)
    out = B.HistogramMatcher().fit([display])(img)
    # Within the matcher's quantisation: one of its 4096 bins.
    assert np.abs(out - display).max() <= 1.0 / B.MATCH_BINS


def test_histogram_matching_needs_targets():
    with pytest.raises(RuntimeError, match="fit"):
        B.HistogramMatcher()(gradient())
    with pytest.raises(ValueError, match="empty"):
        B.HistogramMatcher().fit([])


# --- LibRaw -----------------------------------------------------------------------------------------------------


def test_libraw_gamma_family_reproduces_srgb_and_bt709():
    x = np.linspace(0, 1, 1001)
    # With sRGB's parameters the continuous-slope solution is the sRGB curve to within 1e-4.
    assert np.abs(B.libraw_gamma(x, B.SRGB_GAMMA) - linear_to_srgb(x)).max() < 1e-4
    bt709 = np.where(x < 0.018, 4.5 * x, 1.099 * x ** 0.45 - 0.099)
    assert np.abs(B.libraw_gamma(x, (1 / 0.45, 4.5)) - bt709).max() < 1e-3
    assert B.libraw_gamma(np.array([0.0, 1.0])) == pytest.approx([0.0, 1.0], abs=1e-6)


def test_libraw_auto_bright_white_is_the_99th_percentile_of_the_brightest_channel():
    ramp = np.linspace(0, 1, 100_001, dtype=np.float32)
    img = np.stack([ramp * 0.2, ramp * 0.5, ramp * 0.3], -1)[None]
    # 99th percentile of G, rounded down to LibRaw's histogram bin edge (8 / 65535).
    assert B.libraw_auto_bright_white(img) == pytest.approx(0.5 * 0.99, abs=8 / 65535)
    smooth = B.libraw_like(img, bits=0)
    assert smooth[0, 99_001, 1] == pytest.approx(1.0)  # the white point maps to 1
    # 1 % of the brightest channel clips (plus the 8/65535 the bin edge rounding adds: 0.024 % of this ramp).
    assert np.mean(smooth[0, :, 1] >= 1.0) == pytest.approx(0.01, abs=3e-4)
    out = B.libraw_like(img)  # 8 bits, truncated as LibRaw's curve >> 8
    np.testing.assert_allclose(out, np.minimum(np.floor(smooth * 256.0), 255) / 255, atol=1e-6)


def test_libraw_like_matches_libraw_itself_on_a_raw_file(tmp_path):
    # Feed our re-implementation the linear image LibRaw itself demosaiced (camera WB, no auto-bright, gamma 1):
    # LibRaw's default development (auto-bright, gamma, 8 bits) of the same file must then agree exactly.
    import rawpy

    dng = write_test_dng(tmp_path / "grad.dng", gradient(lo=0.05, hi=0.55))
    with rawpy.imread(str(dng)) as raw:
        linear = raw.postprocess(use_camera_wb=True, no_auto_bright=True, gamma=(1, 1), output_bps=16)
    ours = B.libraw_like(linear.astype(np.float32) / 65535)
    np.testing.assert_array_equal(B.libraw_default(dng), ours)
    # The same with the sRGB curve instead of LibRaw's default BT.709-shaped one.
    np.testing.assert_array_equal(B.libraw_default(dng, gamma=B.SRGB_GAMMA),
                                  B.libraw_like(linear.astype(np.float32) / 65535, gamma=B.SRGB_GAMMA))


def test_libraw_default_names_a_file_it_cannot_develop(tmp_path):
    bad = tmp_path / "notraw.cr2"
    bad.write_bytes(b"this is not a raw file")
    with pytest.raises(ValueError, match=r"notraw\.cr2: LibRaw cannot develop"):
        B.libraw_default(bad)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CR2.exists(), reason="needs the shared Canon CR2 (a developer machine's /work/shared)")
def test_libraw_default_on_a_real_canon_raw_is_bright_and_neutral():
    out = B.libraw_default(SHARED_CR2)
    assert out.ndim == 3 and out.shape[2] == 3 and max(out.shape[:2]) >= 3500  # full size, not a half-size proxy
    lum = out @ np.array([0.27, 0.67, 0.06])
    assert 0.25 < lum.mean() < 0.75  # auto-bright lifts a linear RAW (mean ~0.05) to a viewable image
    assert np.mean(out >= 1.0) < 0.02  # and clips only about the top 1 %
