"""Camera RAW through rawpy/LibRaw, on DNGs the tests write themselves (tests/imagegen.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from exposure_engine.imageio import ImageReadError, load_photo, load_proxy, load_raw, make_proxy
from exposure_engine.imageio.photo import exif_from_bytes
from imagegen import patches, smooth_image, write_test_dng

COLOURS = [(0.18, 0.18, 0.18), (0.50, 0.20, 0.10), (0.05, 0.40, 0.20), (0.10, 0.15, 0.60),
           (0.70, 0.65, 0.60), (0.02, 0.02, 0.03), (0.30, 0.50, 0.05), (0.85, 0.85, 0.85)]


@pytest.fixture(scope="module")
def chart() -> np.ndarray:
    return patches(COLOURS, patch=32, cols=4)   # 64x128, 8 flat patches


@pytest.fixture(scope="module")
def dng(chart, tmp_path_factory) -> Path:
    return write_test_dng(tmp_path_factory.mktemp("raw") / "chart.dng", chart)


def _patch_means(img: np.ndarray, patch: int) -> np.ndarray:
    """Mean of the central half of each patch (away from demosaicing at the borders)."""
    out = []
    for i in range(len(COLOURS)):
        r, k = divmod(i, 4)
        q = patch // 4
        out.append(img[r * patch + q:(r + 1) * patch - q, k * patch + q:(k + 1) * patch - q].mean((0, 1)))
    return np.array(out)


def test_dng_develops_to_the_encoded_linear_colours(dng, chart):
    photo = load_photo(dng)
    assert photo.kind == "raw" and photo.format == "DNG" and photo.pixels.dtype == np.float32
    assert photo.pixels.shape == chart.shape
    np.testing.assert_allclose(_patch_means(photo.pixels, 32), np.array(COLOURS), rtol=2e-3, atol=2e-4)


def test_camera_white_balance_is_applied(tmp_path, chart):
    # The same scene shot under a strong colour cast (AsShotNeutral far from grey) develops to the same colours.
    warm = write_test_dng(tmp_path / "warm.dng", chart, neutral=(0.9, 1.0, 0.35))
    cool = write_test_dng(tmp_path / "cool.dng", chart, neutral=(0.35, 1.0, 0.9))
    for f in (warm, cool):
        np.testing.assert_allclose(_patch_means(load_raw(f).pixels, 32), np.array(COLOURS), rtol=3e-3, atol=3e-4)


def test_values_are_linear_not_gamma_encoded(tmp_path):
    grey = patches([(0.05,) * 3, (0.10,) * 3, (0.20,) * 3, (0.40,) * 3], patch=32, cols=4)
    photo = load_raw(write_test_dng(tmp_path / "ramp.dng", grey))
    means = photo.pixels[8:24, 16::32].mean(0)[:, 1]
    np.testing.assert_allclose(means[1:] / means[:-1], 2.0, rtol=5e-3)   # doubling light doubles the value


def test_half_size_proxy_agrees_with_the_full_decode(tmp_path):
    # A photo-like scene (smooth at the proxy's scale). LibRaw's half_size bins each RGGB quad without
    # demosaicing, so red and blue are sampled half a pixel apart: small local differences, no bias.
    scene = cv2.GaussianBlur(smooth_image(256, 256), (0, 0), 8)
    dng = write_test_dng(tmp_path / "scene.dng", scene)
    full = make_proxy(load_raw(dng).pixels, 16)
    assert load_raw(dng, half_size=True).pixels.shape == (128, 128, 3)
    fast = load_proxy(dng, size=16)   # the half_size path
    assert np.abs(fast - full).mean() < 0.004 and np.abs(fast - full).max() < 0.03
    assert abs(fast.mean() - full.mean()) < 1e-3
    np.testing.assert_allclose(load_proxy(dng, size=16, exact=True), full, atol=1e-6)


def test_camera_orientation_is_applied_to_full_image_and_proxy(tmp_path, chart):
    upright = load_raw(write_test_dng(tmp_path / "a.dng", chart)).pixels
    turned = write_test_dng(tmp_path / "b.dng", chart, orientation=6)   # camera held 90 degrees clockwise
    photo = load_raw(turned)
    assert photo.orientation == 6 and photo.pixels.shape == (128, 64, 3)
    np.testing.assert_allclose(photo.pixels, np.rot90(upright, -1), atol=1e-6)
    upright_proxy = load_proxy(tmp_path / "a.dng", 16)
    np.testing.assert_allclose(load_proxy(turned, 16), np.rot90(upright_proxy, -1), atol=1e-6)


def test_camera_make_and_model_are_kept_as_exif(dng):
    exif = exif_from_bytes(load_raw(dng).exif)
    assert exif[271] == "ExposureEngine" and exif[272] == "Test Camera" and exif[0x0112] == 1


def test_header_size_is_checked_before_decoding(dng):
    with pytest.raises(ImageReadError, match=r"declares 128x64 .* over the limit"):
        load_raw(dng, max_pixels=1000)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_dng_is_an_error_naming_the_file(dng, tmp_path, cut):
    bad = tmp_path / "cut.dng"
    data = dng.read_bytes()
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ImageReadError) as e:
        load_photo(bad)
    assert str(bad) in str(e.value) and "truncated" in str(e.value)


def test_random_bytes_named_cr2_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "IMG_0001.CR2"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ImageReadError, match="IMG_0001.CR2: not a RAW file"):
        load_photo(bad)


def test_raw_with_an_unknown_extension_is_still_recognised(dng, tmp_path):
    renamed = tmp_path / "chart.bin"
    renamed.write_bytes(dng.read_bytes())
    assert load_photo(renamed).kind == "raw"


CR2 = Path("/work/shared/raw/IMG_5952.CR2")


@pytest.mark.slow
@pytest.mark.skipif(not CR2.exists(), reason="the shared Canon CR2 is only on the project's build machine")
def test_real_canon_cr2_decodes_to_plausible_linear_values():
    t0 = time.perf_counter()
    photo = load_photo(CR2)
    t1 = time.perf_counter()
    proxy = load_proxy(CR2)
    t2 = time.perf_counter()
    assert photo.pixels.shape == (2348, 3522, 3) and photo.kind == "raw"
    lum = photo.pixels @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    assert 0.02 < lum.mean() < 0.3   # a daylight landscape, linear, no auto-brightening (measured 0.07)
    assert photo.pixels.max() <= 1.0 and photo.pixels.min() >= 0.0
    np.testing.assert_allclose(proxy, make_proxy(photo.pixels), atol=0.01)   # measured max 0.006
    exif = exif_from_bytes(photo.exif)
    assert exif[272] == "Canon EOS 30D" and 0x927C not in exif.get_ifd(0x8769)   # MakerNote dropped
    print(f"\nCR2 full decode {t1 - t0:.2f} s, half-size proxy {t2 - t1:.2f} s (cpus={os.cpu_count()})")
