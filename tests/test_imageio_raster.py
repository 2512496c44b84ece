"""PNG/JPEG/TIFF decoding: round trips through save_image, pixel layouts, orientation, metadata."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from exposure_engine.imageio import ImageReadError, linear_to_srgb, load_image, load_photo, save_image
from exposure_engine.imageio.photo import exif_from_bytes
from exposure_engine.imageio.transfer import srgb_to_linear_exact
from imagegen import smooth_image


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return smooth_image(48, 64, seed=1)


@pytest.mark.parametrize("name,bits,step", [
    ("a.png", 8, 1 / 255), ("a.png", 16, 1 / 65535), ("a.tif", 8, 1 / 255), ("a.tif", 16, 1 / 65535),
])
def test_lossless_round_trip_gives_linear_values_back_within_quantisation(tmp_path, scene, name, bits, step):
    display = linear_to_srgb(scene)
    save_image(tmp_path / name, display, bits=bits)
    photo = load_photo(tmp_path / name)
    assert photo.bits == bits and photo.pixels.shape == scene.shape and photo.warnings == []
    # half a code value in the encoded domain, at most
    assert np.abs(linear_to_srgb(photo.pixels) - display).max() <= step / 2 + 1e-6
    # and the decode is the exact sRGB curve of the code values stored (read back by an independent decoder)
    codes = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert codes.dtype == (np.uint8 if bits == 8 else np.uint16)
    np.testing.assert_allclose(photo.pixels, srgb_to_linear_exact(codes / (2.0 ** bits - 1)), atol=2e-7)


def test_jpeg_round_trip_is_close(tmp_path, scene):
    display = linear_to_srgb(scene)
    save_image(tmp_path / "a.jpg", display, quality=95)
    back = linear_to_srgb(load_photo(tmp_path / "a.jpg").pixels)
    # JPEG is lossy (this scene carries 1% noise): close per pixel, and no brightness or colour shift overall
    assert np.abs(back - display).mean() < 0.015
    np.testing.assert_allclose(back.mean((0, 1)), display.mean((0, 1)), atol=2e-3)


def test_greyscale_8_and_16_bit_become_three_equal_channels(tmp_path):
    g8 = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(g8, "L").save(tmp_path / "g8.png")
    g16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    tifffile.imwrite(tmp_path / "g16.tif", g16)
    for f, v in ((tmp_path / "g8.png", g8 / 255.0), (tmp_path / "g16.tif", g16 / 65535.0)):
        px = load_image(f)
        assert px.shape == (16, 16, 3)
        np.testing.assert_allclose(px[..., 0], srgb_to_linear_exact(v), atol=1e-7)
        assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()


def test_16bit_grey_png_keeps_16_bits(tmp_path):
    g16 = (np.arange(4096, dtype=np.uint16) * 16 + 7).reshape(64, 64)
    cv2.imwrite(str(tmp_path / "g.png"), g16)
    photo = load_photo(tmp_path / "g.png")
    np.testing.assert_allclose(photo.pixels[..., 1], srgb_to_linear_exact(g16 / 65535.0), atol=1e-7)


def test_alpha_is_dropped_and_said(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    photo = load_photo(tmp_path / "a.png")
    np.testing.assert_allclose(photo.pixels[0, 0], srgb_to_linear_exact(np.array([200, 0, 0]) / 255.0))
    assert any("alpha" in w for w in photo.warnings)


def test_palette_image_is_converted_to_rgb(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4] = (255, 0, 0)
    rgb[4:] = (0, 0, 255)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(tmp_path / "p.png")
    px = load_image(tmp_path / "p.png")
    np.testing.assert_allclose(px[0, 0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(px[7, 7], [0, 0, 1], atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow_exif_transpose(tmp_path, orientation):
    base = np.random.default_rng(orientation).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(base).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
    photo = load_photo(tmp_path / "o.jpg")
    with Image.open(tmp_path / "o.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    got = np.round(linear_to_srgb(photo.pixels) * 255).astype(np.uint8)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert photo.orientation == orientation
    assert exif_from_bytes(photo.exif)[0x0112] == 1   # the pixels are upright now: the copy must say so


def test_exif_survives_load_and_save_with_orientation_reset(tmp_path):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "EOS 30D", 6
    exif.get_ifd(0x8769)[0x829A] = 1 / 250     # ExposureTime
    exif[0x8769] = exif.get_ifd(0x8769)
    Image.fromarray(np.full((4, 6, 3), 90, np.uint8)).save(tmp_path / "in.jpg", exif=exif.tobytes())
    photo = load_photo(tmp_path / "in.jpg")
    assert photo.pixels.shape == (6, 4, 3)   # rotated
    for out in ("out.jpg", "out.png", "out16.png"):
        save_image(tmp_path / out, linear_to_srgb(photo.pixels), exif=photo.exif, bits=16 if "16" in out else None)
        with Image.open(tmp_path / out) as im:
            e = im.getexif()
            assert (e[0x010F], e[0x0110], e[0x0112]) == ("Canon", "EOS 30D", 1)
            assert abs(float(e.get_ifd(0x8769)[0x829A]) - 1 / 250) < 1e-9
            assert im.size == (4, 6)
        assert load_photo(tmp_path / out).pixels.shape == (6, 4, 3)   # not rotated a second time


def test_tiff_output_keeps_camera_make_and_model(tmp_path):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Nikon", "D850"
    save_image(tmp_path / "o.tif", np.zeros((4, 4, 3), np.float32), exif=exif.tobytes())
    with tifffile.TiffFile(tmp_path / "o.tif") as tf:
        tags = tf.pages.first.tags
        assert tags[271].value == "Nikon" and tags[272].value == "D850" and 34675 in tags


def test_input_encoding_must_be_known(tmp_path, scene):
    save_image(tmp_path / "a.png", linear_to_srgb(scene))
    with pytest.raises(ValueError, match="input_encoding"):
        load_photo(tmp_path / "a.png", input_encoding="rec709")


def test_planar_rgb_tiff(tmp_path, scene):
    codes = np.round(linear_to_srgb(scene) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(codes, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_allclose(load_image(tmp_path / "p.tif"), srgb_to_linear_exact(codes / 65535.0), atol=1e-7)


def test_signed_integer_tiff_is_refused_clearly(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((8, 8), np.int16))
    with pytest.raises(ImageReadError, match="s.tif: .*signed integer"):
        load_photo(tmp_path / "s.tif")


def test_16bit_rgba_png_keeps_channel_order_and_drops_alpha(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 65536, (8, 8, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), rgba[..., [2, 1, 0, 3]])   # OpenCV writes BGRA
    photo = load_photo(tmp_path / "a.png")
    assert photo.bits == 16 and any("alpha" in w for w in photo.warnings)
    np.testing.assert_allclose(photo.pixels, srgb_to_linear_exact(rgba[..., :3] / 65535.0), atol=1e-7)


def test_cmyk_jpeg_without_profile_is_converted_with_a_warning(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    photo = load_photo(tmp_path / "c.jpg")
    assert photo.pixels.shape == (16, 16, 3)
    assert any("CMYK" in w and "without colour management" in w for w in photo.warnings)


@pytest.mark.parametrize("name,kwargs", [("a.webp", {"lossless": True}), ("a.bmp", {}),
                                         ("lzw.tif", {"compression": "tiff_lzw"})])
def test_other_lossless_formats_pillow_reads(tmp_path, name, kwargs):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / name, **kwargs)
    np.testing.assert_allclose(load_image(tmp_path / name), srgb_to_linear_exact(rgb / 255.0), atol=1e-7)
