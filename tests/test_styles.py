"""Hidden artist styles: deterministic programs, some reachable by the eight filters, some not."""
from __future__ import annotations

import numpy as np
import pytest

from exposure_engine.evaluation import styles as S
from exposure_engine.imageio.transfer import linear_to_srgb
from exposure_engine.evaluation.colour import lab_to_linear, linear_to_lab, rgb_to_hls, srgb_to_lab
from exposure_engine.renderer import render

from imagegen import smooth_image


@pytest.mark.parametrize("name", list(S.STYLES))
def test_every_style_is_a_deterministic_linear_to_display_program(name):
    style = S.get(name)
    img = smooth_image(48, 64, seed=2)
    a, b = style.apply(img), style.apply(img.copy())
    assert a.shape == img.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, b)
    assert not np.allclose(a, np.clip(img, 0, 1), atol=0.02)  # it does something


def test_there_are_styles_of_both_kinds():
    kinds = {s.expressible for s in S.STYLES.values()}
    assert kinds == {True, False} and len(S.STYLES) >= 3


@pytest.mark.parametrize("style", [s for s in S.STYLES.values() if s.expressible], ids=lambda s: s.name)
def test_expressible_styles_are_short_edit_sequences_the_renderer_reproduces(style):
    # At most 3 steps: a 5-step agent keeps 2 steps to undo the input's exposure and white balance first.
    assert 1 <= len(style.sequence.steps) <= 3
    img = smooth_image(40, 40, seed=5)
    np.testing.assert_array_equal(style.apply(img), render(img, style.sequence))


def lightness_ramp() -> np.ndarray:
    """Linear greys at L* = 0, 1, ..., 100: ``(1, 101, 3)``."""
    L = np.linspace(0, 100, 101)
    lab = np.stack([L, np.zeros_like(L), np.zeros_like(L)], -1)
    return np.clip(lab_to_linear(lab), 0, 1).astype(np.float32)[None]


def test_teal_orange_tints_grey_shadows_teal_and_grey_highlights_orange():
    lab = srgb_to_lab(S.get("teal_orange").apply(lightness_ramp())[0])
    shadows, highlights = lab[10:31], lab[75:91]  # input L* 10..30 and 75..90
    assert np.all(shadows[:, 1] < -1) and np.all(shadows[:, 2] < -2)  # a* < 0, b* < 0: blue-green
    assert np.all(highlights[:, 1] > 1) and np.all(highlights[:, 2] > 2)  # a* > 0, b* > 0: orange
    # Per-channel curves can tint greys too, but not this much this deep: the colour curves' slopes stay within
    # +-10 % and the curves are pinned at 0, so at L* ~12 their strongest split tint is ~5 units of chroma.
    deep = lab[10:16]
    assert np.all(np.hypot(deep[:, 1], deep[:, 2]) > 10)


def test_teal_orange_compresses_lightness_into_a_film_range():
    lab = srgb_to_lab(S.get("teal_orange").apply(lightness_ramp())[0])
    assert 2 < lab[0, 0] < 6 and 94 < lab[-1, 0] < 98  # toe at L* ~4, shoulder at L* ~96
    assert np.all(np.diff(lab[:, 0]) >= 0)  # monotone


def test_faded_matte_lifts_blacks_and_desaturates_blues_more_than_reds():
    style = S.get("faded_matte")
    black = style.apply(np.zeros((2, 2, 3), np.float32))
    assert black.min() > 0.1  # a matte black
    # Two colours of equal HLS saturation and lightness: blue loses more saturation than red.
    colours = np.array([[[0.6, 0.05, 0.05], [0.05, 0.05, 0.6]]], np.float32)
    _, _, s_in = rgb_to_hls(linear_to_srgb(colours, np.float64, clip=True))
    _, _, s_out = rgb_to_hls(style.apply(colours))
    ratio = s_out / s_in
    assert ratio[0, 1] < 0.8 * ratio[0, 0]


def test_styles_are_distinguishable_from_one_another():
    img = smooth_image(64, 96, seed=3)
    outs = {n: srgb_to_lab(s.apply(img)) for n, s in S.STYLES.items()}
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.linalg.norm(outs[a] - outs[b], axis=-1).mean() > 3, (a, b)


def test_unknown_style_names_the_known_ones():
    with pytest.raises(KeyError, match="known: punchy"):
        S.get("sepia")


def test_lab_of_the_linear_input_is_what_the_lab_styles_start_from():
    # linear_to_lab(1, 1, 1) is the D65 white: L* 100, neutral. Guards the split toning against a wrong white.
    np.testing.assert_allclose(linear_to_lab(np.ones(3)), [100, 0, 0], atol=1e-9)


def test_original_style_gives_back_the_photo_from_its_clean_linear_version():
    from exposure_engine.evaluation.benchmark import clean_linear

    photo = np.clip(smooth_image(32, 48, seed=4) ** (1 / 2.2), 0, 1).astype(np.float32)
    np.testing.assert_allclose(S.get("original").apply(clean_linear(photo)), photo, atol=2e-4)
