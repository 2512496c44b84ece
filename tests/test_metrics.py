"""Metrics: the paper's histogram intersection (exact procedure), PSNR and CIE76 dE in CIE units."""
from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest

from exposure_engine.evaluation import metrics as M
from exposure_engine.evaluation.colour import hls_to_rgb, lab_to_linear, linear_to_lab, rgb_to_hls, srgb_to_lab


def flat(colour, h=100, w=150) -> np.ndarray:
    return np.full((h, w, 3), colour, np.float32)


def checkerboard(c1, c2, cell=8, size=80) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    mask = ((y // cell + x // cell) % 2 == 0)[..., None]
    return np.where(mask, np.float32(c1), np.float32(c2)).astype(np.float32)


def photo_like(seed: int, h=120, w=180) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([x, y, 0.5 + 0.3 * np.sin(9 * x)], -1) * rng.uniform(0.4, 1.0, 3)
    return np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1).astype(np.float32)


# --- histogram intersection -------------------------------------------------------------------------------------


def test_identical_sets_score_100_percent_on_every_statistic():
    images = [photo_like(i) for i in range(5)]
    s = M.histogram_intersection(images, [im.copy() for im in images], seed=3)
    assert (s.luminance, s.contrast, s.saturation, s.mean) == pytest.approx((100.0,) * 4)


def test_sets_apart_on_every_statistic_score_0():
    # Flat dark grey: luminance 0.1, contrast 0, saturation 0. A red/green checkerboard whose 8-px cells make every
    # 64x64 window exactly half red, half green: luminance 0.47, contrast 2 * 0.2 = 0.4, saturation 1.
    dull = [flat(0.1, 80, 80)] * 3
    loud = [checkerboard((1, 0, 0), (0, 1, 0))] * 2
    stats = M.set_statistics(loud)
    assert stats[:, 0] == pytest.approx(0.47)
    assert stats[:, 1] == pytest.approx(0.4)
    assert stats[:, 2] == pytest.approx(1.0)
    s = M.histogram_intersection(dull, loud)
    assert (s.luminance, s.contrast, s.saturation, s.mean) == (0.0, 0.0, 0.0, 0.0)


def test_hand_computed_case():
    # Flat images have exactly known statistics (contrast 0 everywhere).
    # A: grey 0.2 (lum bin 6, sat 0) and grey 0.8 (lum bin 25, sat 0).
    # B: grey 0.2 (lum bin 6, sat 0) and (0.6, 0.2, 0.2): lum 0.308 (bin 9), HLS S = 0.4 / 0.8 = 0.5 (bin 16).
    # Luminance: A {6: .5, 25: .5} vs B {6: .5, 9: .5} -> 50 %; contrast 100 %; saturation {0: 1} vs {0: .5, 16: .5}
    # -> 50 %; mean 66.7 %.
    a = [flat(0.2), flat(0.8, 90, 60)]
    b = [flat(0.2, 64, 64), flat((0.6, 0.2, 0.2), 200, 120)]
    s = M.histogram_intersection(a, b)
    assert s.luminance == pytest.approx(50.0)
    assert s.contrast == pytest.approx(100.0)
    assert s.saturation == pytest.approx(50.0)
    assert s.mean == pytest.approx(200.0 / 3.0)
    assert s.to_dict()["mean"] == pytest.approx(200.0 / 3.0)


def test_histograms_are_normalised_by_patch_count_so_set_sizes_do_not_matter():
    one = [flat(0.3)]
    many = [flat(0.3, 70, 90)] * 7
    assert M.histogram_intersection(one, many).mean == pytest.approx(100.0)
    h = M.normalised_histogram(np.array([0.0, 0.5, 1.0, 1.0]))
    assert h.shape == (32,) and h.sum() == pytest.approx(1.0)
    assert h[0] == 0.25 and h[16] == 0.25 and h[31] == 0.5  # 1.0 belongs to the last bin


def test_each_image_gives_16_patches_cut_from_80x80_area_resized_square_crops():
    # An 80-px tall image: square crops are 80x80, the INTER_AREA resize keeps them, so every patch is a 64x64
    # window of the image at an offset 0..15 within a crop that starts at 0..(w - 80). Pixels encode coordinates.
    h, w = 80, 200
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([y / 255.0, x / 255.0, np.zeros_like(x)], -1)
    patches = M.sample_patches(img, np.random.default_rng(0))
    assert patches.shape == (16, 64, 64, 3) and patches.dtype == np.float32
    for p in patches:
        y0, x0 = int(round(p[0, 0, 0] * 255)), int(round(p[0, 0, 1] * 255))
        assert 0 <= y0 <= 15 and 0 <= x0 <= w - 80 + 15
        np.testing.assert_allclose(p, img[y0:y0 + 64, x0:x0 + 64], atol=1e-6)
    # Over many draws every offset 0..15 occurs and 16 never does.
    rng = np.random.default_rng(1)
    square = img[:, :80]
    offsets = {int(round(p[0, 0, 0] * 255)) for _ in range(40) for p in M.sample_patches(square, rng)}
    assert offsets == set(range(16))


def test_patches_are_clipped_to_the_display_range_before_statistics():
    hot = flat((2.0, 2.0, 2.0), 80, 80)
    assert M.set_statistics([hot])[:, 0] == pytest.approx(1.0)
    assert M.histogram_intersection([hot], [flat(1.0, 80, 80)]).mean == pytest.approx(100.0)


def test_contrast_is_twice_the_population_std_of_luminance():
    half = np.zeros((1, 64, 64, 3), np.float32)
    half[:, :, :32] = 1.0  # luminance 0 or 1 in equal parts: std 0.5
    assert M.patch_statistics(half)[0] == pytest.approx([0.5, 1.0, 0.0])


def test_seeded_crops_are_reproducible_and_the_seed_matters():
    images = [photo_like(i, 100, 300) for i in range(3)]
    assert np.array_equal(M.set_statistics(images, 7), M.set_statistics(images, 7))
    assert not np.array_equal(M.set_statistics(images, 7), M.set_statistics(images, 8))


def test_small_images_are_upsampled_not_rejected():
    assert M.set_statistics([photo_like(0, 30, 50)]).shape == (16, 3)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="empty"):
        M.histogram_intersection([], [flat(0.5)])
    with pytest.raises(ValueError, match=r"image 1.*\(H, W, 3\)"):
        M.set_statistics([flat(0.5), np.zeros((10, 10), np.float32)])
    with pytest.raises(ValueError, match="uint8"):
        M.set_statistics([np.zeros((10, 10, 3), np.uint8)])
    bad = flat(0.5, 8, 8)
    bad[3, 3, 1] = np.nan
    with pytest.raises(ValueError, match="image 0: has NaN"):
        M.set_statistics([bad])


# --- colour -----------------------------------------------------------------------------------------------------


def test_hls_saturation_matches_colorsys():
    rgb = np.random.default_rng(0).random((500, 3))
    rgb[:20] = rgb[:20, :1]  # some greys
    rgb[20] = (1, 1, 1)
    expected = [colorsys.rgb_to_hls(*p)[2] for p in rgb]
    np.testing.assert_allclose(M.hls_saturation(rgb), expected, atol=1e-12)


def test_full_hls_round_trip_matches_colorsys():
    rgb = np.random.default_rng(1).random((300, 3))
    h, l, s = rgb_to_hls(rgb)
    ref = np.array([colorsys.rgb_to_hls(*p) for p in rgb])
    np.testing.assert_allclose(np.stack([h, l, s], 1), ref, atol=1e-12)
    back = np.array([colorsys.hls_to_rgb(*p) for p in ref])
    np.testing.assert_allclose(hls_to_rgb(h, l, s), back, atol=1e-12)


def test_lab_in_cie_units_for_known_colours():
    lab = srgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5]]))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(lab[2], [53.2408, 80.0925, 67.2032], atol=0.01)  # sRGB red, D65
    np.testing.assert_allclose(lab[3], [53.3890, 0.0, 0.0], atol=0.01)  # sRGB mid grey


def test_lab_round_trip():
    lin = np.random.default_rng(2).random((200, 3))
    np.testing.assert_allclose(lab_to_linear(linear_to_lab(lin)), lin, atol=1e-9)


# --- paired metrics ---------------------------------------------------------------------------------------------


def test_delta_e_white_vs_black_is_100_and_is_a_pixel_mean():
    assert M.delta_e76(flat(1.0, 8, 8), flat(0.0, 8, 8)) == pytest.approx(100.0)
    half = flat(0.0, 8, 8)
    half[:, :4] = 1.0
    assert M.delta_e76(half, flat(0.0, 8, 8)) == pytest.approx(50.0)
    red_vs_black = math.sqrt(53.2408 ** 2 + 80.0925 ** 2 + 67.2032 ** 2)
    assert M.delta_e76(flat((1, 0, 0), 4, 4), flat(0.0, 4, 4)) == pytest.approx(red_vs_black, abs=0.02)


def test_psnr_of_a_known_mse():
    assert M.psnr(flat(0.5, 10, 10), flat(0.6, 10, 10)) == pytest.approx(20.0)  # MSE 0.01
    assert M.psnr(flat(0.5, 10, 10), flat(0.5, 10, 10)) == math.inf
    assert M.psnr(flat(1.7, 10, 10), flat(1.0, 10, 10)) == math.inf  # both clip to white


def test_paired_metrics_average_over_pairs():
    outs = [flat(0.5, 10, 10), flat(0.5, 6, 4)]
    refs = [flat(0.6, 10, 10), flat(0.51, 6, 4)]  # MSE 1e-2 and 1e-4: 20 and 40 dB
    s = M.paired_metrics(outs, refs)
    assert s.psnr == pytest.approx(30.0) and s.n == 2
    assert s.delta_e == pytest.approx((M.delta_e76(outs[0], refs[0]) + M.delta_e76(outs[1], refs[1])) / 2)


def test_paired_metrics_reject_mismatched_pairs_by_name():
    with pytest.raises(ValueError, match=r"pair 0: output is 10x10 but the reference is 12x10"):
        M.paired_metrics([flat(0.5, 10, 10)], [flat(0.5, 10, 12)])
    with pytest.raises(ValueError, match="as many outputs"):
        M.paired_metrics([flat(0.5)], [])


def test_bootstrap_spread_is_zero_for_sets_of_identical_images_and_positive_otherwise():
    same = M.set_statistics([flat(0.3, 64, 64)] * 4)
    other = M.set_statistics([flat(0.6, 64, 64)] * 5)
    assert M.bootstrap_spread(same, other)["mean"] == pytest.approx(0.0, abs=1e-9)
    varied = M.set_statistics([photo_like(i) for i in range(6)])
    sd = M.bootstrap_spread(varied, M.set_statistics([photo_like(10 + i) for i in range(6)]), n_boot=50)
    assert set(sd) == {"luminance", "contrast", "saturation", "mean"} and sd["mean"] > 0.0


def test_per_image_histograms_pool_to_the_set_histogram():
    stats = M.set_statistics([photo_like(i) for i in range(4)])
    pooled = M._image_histograms(stats).sum(axis=0)
    for k in range(3):
        np.testing.assert_allclose(pooled[k] / pooled[k].sum(), M.normalised_histogram(stats[:, k]))
