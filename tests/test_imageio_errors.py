"""Bad input: every failure is one ImageReadError naming the file and the reason, never a library traceback."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

from exposure_engine.imageio import (DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, ImageReadError, linear_to_srgb, load_photo,
                                     load_proxy, save_image)
from imagegen import png_header_claiming, smooth_image, write_test_dng


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("good")
    display = linear_to_srgb(smooth_image(48, 64))
    files = {}
    for name, bits in (("a.jpg", 8), ("a.png", 8), ("a16.png", 16), ("a.tif", 16)):
        save_image(d / name, display, bits=bits)
        files[name] = d / name
    files["a.dng"] = write_test_dng(d / "a.dng", smooth_image(48, 64))
    return files


def _assert_read_error(path, *words):
    with pytest.raises(ImageReadError) as e:
        load_photo(path)
    assert e.value.path == str(path) and str(e.value).startswith(f"{path}: ")
    for w in words:
        assert w in e.value.reason, e.value.reason
    assert isinstance(e.value, ValueError)
    return e.value


@pytest.mark.parametrize("name", ["a.jpg", "a.png", "a16.png", "a.tif", "a.dng"])
def test_truncated_files(good_files, tmp_path, name):
    data = good_files[name].read_bytes()
    bad = tmp_path / f"cut_{name}"
    bad.write_bytes(data[: len(data) * 2 // 3])
    _assert_read_error(bad)


@pytest.mark.parametrize("name", ["photo.jpg", "photo.png", "photo.tif", "IMG_1234.CR2", "IMG_1234.NEF", "noext"])
def test_random_bytes_with_an_image_name(tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(np.random.default_rng(7).bytes(20000))
    err = _assert_read_error(bad)
    assert "not" in err.reason   # "not an image file" / "not a RAW file LibRaw can read"


def test_corrupt_jpeg_body(good_files, tmp_path):
    data = bytearray(good_files["a.jpg"].read_bytes())
    data[600:] = np.random.default_rng(1).bytes(len(data) - 600)   # keep the header, scramble the scan
    bad = tmp_path / "scrambled.jpg"
    bad.write_bytes(bytes(data))
    try:
        photo = load_photo(bad)   # libjpeg may decode garbage into pixels; if so it must still be a clean array
        assert photo.pixels.shape == (48, 64, 3) and np.isfinite(photo.pixels).all()
    except ImageReadError as e:
        assert e.path == str(bad)


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    _assert_read_error(tmp_path / "empty.jpg", "empty")


def test_directory(tmp_path):
    (tmp_path / "folder.png").mkdir()
    _assert_read_error(tmp_path / "folder.png", "directory")


def test_missing_file(tmp_path):
    _assert_read_error(tmp_path / "nope.png", "no such file")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file(good_files, tmp_path):
    f = tmp_path / "locked.png"
    f.write_bytes(good_files["a.png"].read_bytes())
    f.chmod(0)
    _assert_read_error(f, "permission")


def test_png_header_claiming_100000_squared_pixels_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_claiming(100000, 100000))
    err = _assert_read_error(bomb, "100000x100000", "over the limit")
    assert f"{DEFAULT_MAX_PIXELS / 1e6:.0f} MP" in err.reason
    with pytest.raises(ImageReadError, match="over the limit"):
        load_proxy(bomb)


def test_pixel_limit_is_configurable(good_files, monkeypatch):
    with pytest.raises(ImageReadError, match="64x48 = 0 MP, over the limit of 0 MP"):
        load_photo(good_files["a.png"], max_pixels=1000)
    assert load_photo(good_files["a.png"], max_pixels=64 * 48).pixels.shape == (48, 64, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    for name in ("a.png", "a.jpg", "a.tif", "a.dng"):
        with pytest.raises(ImageReadError, match="over the limit"):
            load_photo(good_files[name])


def test_pixel_limit_above_pillows_own_default_is_honoured(tmp_path, monkeypatch):
    # Pillow refuses > 179 MP by default; our limit (300 MP) must be the one that decides. A 1x200M PNG of one
    # row would take 600 MB to decode, so check the header path only: with a 150 MP limit this 160 MP header
    # is refused by our check with our message, and with the default it gets past the header to the data.
    big = tmp_path / "big.png"
    big.write_bytes(png_header_claiming(16000, 10000))
    with pytest.raises(ImageReadError, match="over the limit of 150 MP"):
        load_photo(big, max_pixels=150_000_000)
    with pytest.raises(ImageReadError) as e:
        load_photo(big)
    assert "limit" not in e.value.reason and "bomb" not in e.value.reason   # fails on the tiny data instead


def test_malformed_exif_costs_the_metadata_not_the_pixels(tmp_path):
    Image.fromarray(np.full((4, 4, 3), 100, np.uint8)).save(tmp_path / "x.jpg", exif=b"Exif\0\0MM\0*\0\0\0\x08\xff\xff")
    photo = load_photo(tmp_path / "x.jpg")
    assert photo.pixels.shape == (4, 4, 3)
    assert any("EXIF" in w for w in photo.warnings)
