"""Colour decoding: the exact sRGB curve and embedded ICC profiles (matrix/TRC maths and littlecms)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from exposure_engine.imageio import icc as icc_mod
from exposure_engine.imageio import linear_to_srgb, load_photo, save_image, srgb_to_linear
from exposure_engine.imageio.transfer import srgb_to_linear_exact
from imagegen import adobe_rgb_icc_profile, linear_srgb_icc_profile, smooth_image


def test_srgb_curve_is_the_exact_piecewise_standard_not_a_power():
    enc = np.array([0.0, 0.04045, 0.5, 1.0])
    # Reference values from IEC 61966-2-1: linear segment below 0.04045, (v+0.055)/1.055)^2.4 above.
    np.testing.assert_allclose(srgb_to_linear(enc), [0.0, 0.04045 / 12.92, 0.21404114, 1.0], rtol=1e-6)
    # code 10 is on the linear segment: a 2.2 power would give 0.0008 instead of 0.0030
    assert abs(srgb_to_linear(np.array([10 / 255]))[0] - (10 / 255) / 12.92) < 1e-9
    v = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(v)), v, atol=2e-6)


def test_srgb_curve_clips_negatives_always_and_light_over_one_only_for_display():
    lin = np.array([-0.5, 0.2, 1.0, 4.0])
    assert linear_to_srgb(lin)[0] == 0.0 and linear_to_srgb(lin)[3] > 1.5   # extended range kept by default
    np.testing.assert_allclose(linear_to_srgb(lin, clip=True)[2:], [1.0, 1.0], atol=1e-7)  # a display clips at white
    assert srgb_to_linear(np.array([-0.1]))[0] == 0.0
    assert srgb_to_linear(np.array([0.5])).dtype == np.float32
    wide = srgb_to_linear(np.array([0.5]), np.float64)   # computed in the type asked for
    assert wide.dtype == np.float64 and wide[0] == ((0.5 + 0.055) / 1.055) ** 2.4


def test_srgb_profile_of_littlecms_parses_as_srgb():
    p = icc_mod.parse_matrix_profile(icc_mod.srgb_profile_bytes())
    assert p.same_as_srgb() and not p.is_linear


def test_adobe_rgb_8bit_png_is_converted_like_littlecms_does(tmp_path):
    rng = np.random.default_rng(1)
    a8 = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    prof = adobe_rgb_icc_profile()
    Image.fromarray(a8).save(tmp_path / "adobe.png", icc_profile=prof)
    photo = load_photo(tmp_path / "adobe.png")
    assert photo.warnings == [] and photo.icc == prof
    ref = np.asarray(ImageCms.profileToProfile(Image.fromarray(a8), ImageCms.ImageCmsProfile(io.BytesIO(prof)),
                                               ImageCms.createProfile("sRGB"), outputMode="RGB"), np.float64)
    ours = linear_to_srgb(photo.pixels) * 255
    in_gamut = ((ref > 0) & (ref < 255)).all(-1)   # littlecms clips out-of-gamut colours to 0/255; we keep them
    assert in_gamut.mean() > 0.3
    # littlecms rounds to 8 bits: within one code value of our float result.
    assert np.abs(ours - ref)[in_gamut].max() < 1.0
    # and the conversion really did something (Adobe red is more saturated than sRGB red)
    assert np.abs(photo.pixels - srgb_to_linear(a8 / 255.0)).max() > 0.05


def test_16bit_image_with_a_profile_decodes_like_its_8bit_twin(tmp_path):
    rng = np.random.default_rng(2)
    a8 = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    prof = adobe_rgb_icc_profile()
    Image.fromarray(a8).save(tmp_path / "a8.png", icc_profile=prof)
    save_image(tmp_path / "a16.png", a8 / 255.0, bits=16, icc=prof)
    p8, p16 = load_photo(tmp_path / "a8.png"), load_photo(tmp_path / "a16.png")
    assert p16.bits == 16 and p16.warnings == []
    np.testing.assert_allclose(p16.pixels, p8.pixels, atol=1e-6)


def test_linear_16bit_tiff_recognised_by_its_gamma_1_profile(tmp_path):
    lin = smooth_image()
    prof = linear_srgb_icc_profile()
    assert icc_mod.parse_matrix_profile(prof).is_linear
    tifffile.imwrite(tmp_path / "lin.tif", np.round(lin * 65535).astype(np.uint16), photometric="rgb",
                     extratags=[(34675, 7, len(prof), prof, True)])
    photo = load_photo(tmp_path / "lin.tif")
    assert photo.bits == 16 and photo.warnings == []
    np.testing.assert_allclose(photo.pixels, lin, atol=2e-5)


def test_linear_16bit_tiff_without_profile_needs_input_encoding_linear(tmp_path):
    lin = smooth_image()
    tifffile.imwrite(tmp_path / "lin.tif", np.round(lin * 65535).astype(np.uint16), photometric="rgb")
    np.testing.assert_allclose(load_photo(tmp_path / "lin.tif", input_encoding="linear").pixels, lin, atol=1e-5)
    # auto: an untagged integer TIFF is sRGB-encoded, so the same numbers decode darker
    auto = load_photo(tmp_path / "lin.tif").pixels
    np.testing.assert_allclose(auto, srgb_to_linear(np.round(lin * 65535) / 65535), atol=1e-6)


def test_float_tiff_is_linear_and_keeps_values_above_one(tmp_path):
    lin = smooth_image() * 2.0   # scene-referred: highlights above 1
    tifffile.imwrite(tmp_path / "f.tif", lin, photometric="rgb")
    photo = load_photo(tmp_path / "f.tif")
    assert photo.bits == 32
    np.testing.assert_array_equal(photo.pixels, lin)


def test_input_encoding_overrides_an_embedded_profile_and_says_so(tmp_path):
    a8 = np.full((4, 4, 3), 128, np.uint8)
    Image.fromarray(a8).save(tmp_path / "a.png", icc_profile=adobe_rgb_icc_profile())
    photo = load_photo(tmp_path / "a.png", input_encoding="srgb")
    np.testing.assert_allclose(photo.pixels, srgb_to_linear_exact(a8 / 255.0))
    assert any("ignored" in w and "Adobe RGB-like" in w for w in photo.warnings)


def test_undecodable_profile_gives_a_warning_not_silence(tmp_path):
    a8 = np.full((4, 4, 3), 200, np.uint8)
    Image.fromarray(a8).save(tmp_path / "bad.png", icc_profile=b"not a profile" * 20)
    photo = load_photo(tmp_path / "bad.png")
    np.testing.assert_allclose(photo.pixels, srgb_to_linear_exact(a8 / 255.0))   # fell back to sRGB
    assert len(photo.warnings) == 1 and "ICC profile" in photo.warnings[0] and "sRGB" in photo.warnings[0]
    with pytest.warns(UserWarning, match="ICC profile"):
        from exposure_engine.imageio import load_image
        load_image(tmp_path / "bad.png")


def test_profiles_the_parser_declines_go_through_littlecms(tmp_path, monkeypatch):
    # Stand-in for a LUT-based profile: make our matrix parser decline, so the real littlecms path converts.
    a8 = np.random.default_rng(3).integers(30, 220, (16, 16, 3), dtype=np.uint8)
    prof = adobe_rgb_icc_profile()
    Image.fromarray(a8).save(tmp_path / "a.png", icc_profile=prof)
    exact = load_photo(tmp_path / "a.png").pixels

    def decline(data):
        raise icc_mod.ICCError("a LUT-based profile")

    monkeypatch.setattr(icc_mod, "parse_matrix_profile", decline)
    via_lcms = load_photo(tmp_path / "a.png")
    assert via_lcms.warnings == []
    np.testing.assert_allclose(linear_to_srgb(via_lcms.pixels), linear_to_srgb(exact), atol=1.01 / 255)


def test_16bit_with_a_profile_littlecms_cannot_handle_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(icc_mod, "parse_matrix_profile",
                        lambda data: (_ for _ in ()).throw(icc_mod.ICCError("a LUT-based profile")))
    save_image(tmp_path / "a16.png", np.full((4, 4, 3), 0.5, np.float32), bits=16, icc=adobe_rgb_icc_profile())
    photo = load_photo(tmp_path / "a16.png")
    assert any("not applied" in w and "8-bit" in w for w in photo.warnings)
