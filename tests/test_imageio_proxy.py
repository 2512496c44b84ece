"""Proxies: 64x64 (or larger) area averages of linear light; fast paths agree with the full decode."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from exposure_engine.imageio import linear_to_srgb, load_image, load_proxy, make_proxy, save_image
from exposure_engine.imageio import raster
from imagegen import smooth_image


def test_make_proxy_is_an_area_average_of_linear_values():
    img = np.zeros((128, 256, 3), np.float32)
    img[:, :128] = 1.0   # left half white, right half black
    p = make_proxy(img, 4)
    assert p.shape == (4, 4, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p[:, :2], 1.0)
    np.testing.assert_allclose(p[:, 2:], 0.0)
    checker = np.indices((64, 64)).sum(0) % 2
    # the mean of black and white *light* is 0.5 linear (0.735 encoded), not mid-grey in code values
    np.testing.assert_allclose(make_proxy(np.repeat(checker[..., None], 3, -1).astype(np.float32), 8), 0.5)


def test_make_proxy_squashes_the_whole_frame_and_supports_larger_sizes():
    img = smooth_image(90, 160)
    for size in (64, 256):
        p = make_proxy(img, size)
        assert p.shape == (size, size, 3)
        assert abs(float(p.mean()) - float(img.mean())) < 2e-3


def test_make_proxy_rejects_bad_input():
    with pytest.raises(ValueError):
        make_proxy(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError):
        make_proxy(np.zeros((8, 8, 3), np.float32), 0)


def test_load_proxy_exact_equals_make_proxy_of_the_full_decode(tmp_path):
    save_image(tmp_path / "a.png", linear_to_srgb(smooth_image(200, 300)))
    np.testing.assert_array_equal(load_proxy(tmp_path / "a.png", exact=True),
                                  make_proxy(load_image(tmp_path / "a.png")))


def test_large_jpeg_proxy_uses_dct_scaling_and_agrees_with_full_decode(tmp_path, monkeypatch):
    scene = cv2.resize(smooth_image(300, 400, seed=3), (2400, 1800), interpolation=cv2.INTER_CUBIC)
    save_image(tmp_path / "big.jpg", linear_to_srgb(np.clip(scene, 0, 1)), quality=92)
    seen = []
    original = raster._pillow_pixels

    def spy(im, *args, **kwargs):
        out = original(im, *args, **kwargs)
        seen.append(out[0].shape)
        return out

    monkeypatch.setattr(raster, "_pillow_pixels", spy)
    fast = load_proxy(tmp_path / "big.jpg", 64)
    assert seen[-1][:2] == (450, 600)   # decoded at 1/4 scale (>= 4 x 64 on the short side), not 1800x2400
    full = make_proxy(load_image(tmp_path / "big.jpg"), 64)
    # gamma-domain averaging inside the decoder, at a 4x finer scale than a proxy pixel: small differences
    assert np.abs(fast - full).max() < 0.02 and np.abs(fast - full).mean() < 0.002


def test_large_png_proxy_uses_reduce_and_agrees_with_full_decode(tmp_path):
    scene = cv2.resize(smooth_image(300, 400, seed=4), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    save_image(tmp_path / "big.png", linear_to_srgb(np.clip(scene, 0, 1)))
    fast = load_proxy(tmp_path / "big.png", 64)
    full = make_proxy(load_image(tmp_path / "big.png"), 64)
    # gamma-domain averaging inside the decoder, at a 4x finer scale than a proxy pixel: small differences
    assert np.abs(fast - full).max() < 0.02 and np.abs(fast - full).mean() < 0.002


def test_proxy_of_a_rotated_jpeg_is_upright(tmp_path):
    base = np.zeros((64, 128, 3), np.uint8)
    base[:, :64] = 255   # left half white in storage order
    exif = Image.Exif()
    exif[0x0112] = 6     # displayed rotated 90 degrees clockwise: white ends up on top
    Image.fromarray(base).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    p = load_proxy(tmp_path / "r.jpg", 8)
    assert p[:3].mean() > 0.95 and p[5:].mean() < 0.05
