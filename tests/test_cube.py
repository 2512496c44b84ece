""".cube 3D LUTs of edit sequences: layout, round trip, and accuracy against the direct renderer."""
from __future__ import annotations

import numpy as np
import pytest

from exposure_engine.exporters import cube
from exposure_engine.imageio.transfer import linear_to_srgb, srgb_to_linear
from exposure_engine.renderer import render

MIXED = {"format": "exposure-edit-sequence", "version": 1, "steps": [
    {"filter": "exposure", "params": {"ev": 0.6}},
    {"filter": "white_balance", "params": {"gains": [1.1, 1.0, 0.85]}},
    {"filter": "gamma", "params": {"gamma": 0.5}},
    {"filter": "tone_curve", "params": {"slopes": [0.6, 1.5, 2, 1.2, 1, 0.8, 0.7, 0.6]}},
    {"filter": "contrast", "params": {"amount": 0.3}}]}
IDENTITY = {"format": "exposure-edit-sequence", "version": 1, "steps": []}


def lab(enc: np.ndarray) -> np.ndarray:
    lin = srgb_to_linear(np.clip(enc, 0, 1), np.float64)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def test_file_lists_red_fastest_with_size_and_domain_headers():
    lut = cube.sequence_lut(IDENTITY, 3)
    text = cube.write_cube(lut, "t").decode()
    assert "LUT_3D_SIZE 3" in text and "DOMAIN_MIN 0.0 0.0 0.0" in text and "DOMAIN_MAX 1.0 1.0 1.0" in text
    rows = [line for line in text.splitlines() if line[:1].isdigit()]
    assert len(rows) == 27
    # identity sequence: output = the linear value (it is taken as display-encoded), input is sRGB-encoded
    half = float(srgb_to_linear(np.array(0.5), np.float64))
    assert [float(v) for v in rows[1].split()] == pytest.approx([half, 0, 0], abs=1e-6)   # r moves first
    assert [float(v) for v in rows[3].split()] == pytest.approx([0, half, 0], abs=1e-6)   # then g
    assert [float(v) for v in rows[9].split()] == pytest.approx([0, 0, half], abs=1e-6)   # then b


def test_lattice_samples_the_sequence_at_srgb_encoded_inputs():
    lut = cube.sequence_lut(MIXED, 5)
    nodes = cube.lattice(5)
    expected = render(srgb_to_linear(nodes).reshape(-1, 5, 3), MIXED).reshape(5, 5, 5, 3)
    np.testing.assert_allclose(lut, expected, atol=1e-6)


def test_read_back_equals_what_was_written():
    lut = cube.sequence_lut(MIXED, 9)
    np.testing.assert_allclose(cube.read_cube(cube.write_cube(lut)), lut, atol=1e-6)


def test_tetrahedral_interpolation_reproduces_affine_maps_exactly():
    m = np.array([[0.8, 0.1, 0.05], [0.1, 0.7, 0.1], [0.0, 0.2, 0.6]])
    lut = (cube.lattice(4) @ m.T + 0.05).astype(np.float32)
    x = np.random.default_rng(0).random((500, 3))
    np.testing.assert_allclose(cube.apply_lut(lut, x), x @ m.T + 0.05, atol=1e-6)


def test_default_33_point_lut_is_within_a_fraction_of_a_delta_e_of_the_renderer():
    # measured: mean 0.10, p99 0.68 on 20k random colours (17 points: 0.36 / 1.8; 65 points: 0.03 / 0.32)
    enc = np.random.default_rng(1).random((5000, 3))
    ref = render(srgb_to_linear(enc)[None], MIXED)[0]
    got = cube.apply_lut(cube.sequence_lut(MIXED), enc)
    d = np.linalg.norm(lab(got) - lab(ref), axis=-1)
    assert d.mean() < 0.2 and np.percentile(d, 99) < 1.0


def test_srgb_encoding_round_trips():
    x = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x, np.float64), np.float64), x, atol=1e-12)


def test_malformed_cubes_are_refused_with_the_line():
    with pytest.raises(ValueError, match="LUT_3D_SIZE"):
        cube.read_cube("0 0 0\n")
    with pytest.raises(ValueError, match="8 rows"):
        cube.read_cube("LUT_3D_SIZE 3\n" + "0 0 0\n" * 8)
    with pytest.raises(ValueError, match="line 2: expected 3 numbers"):
        cube.read_cube("LUT_3D_SIZE 2\n0 0\n")
    with pytest.raises(ValueError, match="unsupported keyword 'LUT_1D_SIZE'"):
        cube.read_cube("LUT_1D_SIZE 2\n")


def test_size_limits_are_darktables():
    with pytest.raises(ValueError, match="2..256"):
        cube.sequence_lut(MIXED, 257)
