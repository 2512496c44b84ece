"""save_image: formats and bit depths by extension, sRGB profile, atomic writes, clear errors."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from exposure_engine.imageio import ImageWriteError, load_photo, output_format, save_image
from exposure_engine.imageio.icc import srgb_profile_bytes

RAMP = np.linspace(0, 1, 4 * 8 * 3, dtype=np.float32).reshape(4, 8, 3)


@pytest.mark.parametrize("name,bits,dtype", [
    ("o.jpg", None, np.uint8), ("o.jpeg", 8, np.uint8), ("o.png", None, np.uint8), ("o.png", 16, np.uint16),
    ("o.tif", None, np.uint16), ("o.tiff", 8, np.uint8), ("O.TIF", 16, np.uint16),
])
def test_extension_and_bits_choose_the_stored_sample_type(tmp_path, name, bits, dtype):
    save_image(tmp_path / name, RAMP, bits=bits)
    stored = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == dtype and stored.shape == (4, 8, 3)
    if not name.endswith(("jpg", "jpeg")):   # lossless: exact rounding of value * max
        top = np.iinfo(dtype).max
        np.testing.assert_array_equal(stored[..., ::-1], np.floor(RAMP.astype(np.float64) * top + 0.5))


@pytest.mark.parametrize("name,bits", [("o.jpg", None), ("o.png", 8), ("o.png", 16), ("o.tif", 16)])
def test_srgb_profile_is_embedded(tmp_path, name, bits):
    save_image(tmp_path / name, RAMP, bits=bits)
    photo = load_photo(tmp_path / name)
    assert photo.icc == srgb_profile_bytes()
    desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(photo.icc)))
    assert "sRGB" in desc


def test_the_same_pixels_written_a_second_apart_give_the_same_file(tmp_path):
    # littlecms stamps the current time into a profile it builds: files (and the training crops seeded by a
    # file's hash) then depended on the second they were written.
    import struct
    import time

    from exposure_engine.imageio import icc

    save_image(tmp_path / "a.png", RAMP, bits=16)
    icc.srgb_profile_bytes.cache_clear()  # built again, by littlecms, a second later
    time.sleep(1.1)
    save_image(tmp_path / "b.png", RAMP, bits=16)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert struct.unpack(">6H", srgb_profile_bytes()[24:36]) == icc.PROFILE_DATE
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(srgb_profile_bytes())))


def test_values_outside_the_display_range_are_clipped(tmp_path):
    img = np.array([[[-0.5, 0.5, 2.0]]], np.float32)
    save_image(tmp_path / "o.png", img)
    assert tuple(np.asarray(Image.open(tmp_path / "o.png"))[0, 0]) == (0, 128, 255)


def test_jpeg_quality_is_used(tmp_path):
    noise = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    save_image(tmp_path / "lo.jpg", noise, quality=20)
    save_image(tmp_path / "hi.jpg", noise, quality=98)
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size / 2


@pytest.mark.parametrize("name,bits,words", [
    ("o.jpg", 16, "JPEG cannot be written with 16 bits"), ("o.webp", None, "unsupported output extension"),
    ("noext", None, "unsupported output extension"), ("o.png", 12, "allowed: 8, 16"),
])
def test_impossible_format_requests_are_refused_before_writing(tmp_path, name, bits, words):
    with pytest.raises(ImageWriteError, match=words):
        save_image(tmp_path / name, RAMP, bits=bits)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ImageWriteError):
        output_format(tmp_path / name, bits)


def test_bad_pixel_arrays_are_refused(tmp_path):
    for bad, words in ((np.zeros((4, 4), np.float32), "expected"), (np.zeros((4, 4, 3), np.uint8), "float"),
                       (np.full((4, 4, 3), np.nan, np.float32), "NaN")):
        with pytest.raises(ImageWriteError, match=words):
            save_image(tmp_path / "o.png", bad)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImageWriteError, match="does not exist"):
        save_image(tmp_path / "no" / "o.png", RAMP)


def test_a_failed_write_leaves_the_previous_file_intact_and_no_debris(tmp_path, monkeypatch):
    target = tmp_path / "o.png"
    target.write_bytes(b"previous result")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("exposure_engine.imageio.write.os.replace", disk_full)
    with pytest.raises(ImageWriteError, match="o.png: cannot write .No space left on device"):
        save_image(target, RAMP)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]   # the temporary file was removed


def test_written_files_get_ordinary_permissions(tmp_path):
    save_image(tmp_path / "o.png", RAMP)
    assert (tmp_path / "o.png").stat().st_mode & 0o644 == 0o644


def test_oversized_exif_loses_the_maker_note_for_jpeg(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x8769] = {0x927C: b"\1" * 70000, 0x829A: 0.004}   # a 70 kB MakerNote
    notes = save_image(tmp_path / "o.jpg", RAMP, exif=exif.tobytes())
    assert any("MakerNote dropped" in n for n in notes)
    with Image.open(tmp_path / "o.jpg") as im:
        e = im.getexif()
        assert e[0x010F] == "Canon" and 0x927C not in e.get_ifd(0x8769) and 0x829A in e.get_ifd(0x8769)


def test_16bit_tiff_is_readable_by_an_independent_decoder(tmp_path):
    save_image(tmp_path / "o.tif", RAMP)
    with tifffile.TiffFile(tmp_path / "o.tif") as tf:
        a = tf.asarray()
        assert a.dtype == np.uint16 and tf.pages.first.photometric == 2
    np.testing.assert_array_equal(a, np.floor(RAMP.astype(np.float64) * 65535 + 0.5))
