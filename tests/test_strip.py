"""Step strips (the paper's Figure 3): one column per state, left to right, with the step's filter, parameters,
icon and the policy's probabilities (the chosen filter highlighted)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from exposure_engine import filters as F
from exposure_engine.sequence import EditSequence, Step
from exposure_engine.strip import CHOSEN, USED, _wrap_label, draw_strip

# Distinct flat colours, one per state, so the test can find each column's proxy in the PNG.
STATE_COLOURS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0)]


@dataclass
class FakePrediction:
    sequence: EditSequence
    probabilities: np.ndarray
    proxies: list


def prediction(names=("exposure", "color_curves", "contrast")) -> FakePrediction:
    steps = [Step.from_packed(F.get(n).index, F.get(n).identity) for n in names]
    probs = np.full((len(names), F.N_FILTERS), 0.05)
    for i, n in enumerate(names):
        probs[i, F.get(n).index] = 1 - 0.05 * (F.N_FILTERS - 1)
    proxies = [np.full((64, 64, 3), c, np.float32) for c in STATE_COLOURS[: len(names) + 1]]
    return FakePrediction(EditSequence(steps), probs, proxies)


def _rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(int)


def _columns_of(img: np.ndarray, colour) -> np.ndarray:
    """x positions where at least 40 pixels of a column have exactly ``colour`` (0-255)."""
    mask = (np.abs(img - np.array(colour)).sum(-1) <= 3)
    return np.nonzero(mask.sum(0) >= 40)[0]


def test_each_state_is_drawn_left_to_right(tmp_path):
    path = draw_strip(prediction(), tmp_path / "s.png")
    img = _rgb(path)
    centres = []
    for c in STATE_COLOURS:
        xs = _columns_of(img, tuple(255 * v for v in c))
        assert xs.size > 50, f"state {c} not drawn"
        centres.append(xs.mean())
    assert centres == sorted(centres)
    # Columns are equally wide: the proxies sit at a constant pitch.
    pitch = np.diff(centres)
    assert pitch.max() - pitch.min() < 0.05 * pitch.mean()


def test_the_chosen_filter_of_every_step_is_highlighted_under_its_column(tmp_path):
    pred = prediction()
    img = _rgb(draw_strip(pred, tmp_path / "s.png"))
    orange = tuple(int(CHOSEN[i:i + 2], 16) for i in (1, 3, 5))
    xs = _columns_of(img, orange)
    proxy_centres = [_columns_of(img, tuple(255 * v for v in c)).mean() for c in STATE_COLOURS]
    # Each step column (not the input's) holds an orange bar; find which column every orange pixel column is in.
    edges = [(a + b) / 2 for a, b in zip(proxy_centres, proxy_centres[1:])]
    owners = set(np.searchsorted(edges, xs))
    assert owners == {1, 2, 3}


def test_filters_used_at_earlier_steps_are_drawn_light(tmp_path):
    """So a reader sees why the tallest bar was not chosen (inference does not reuse a filter)."""
    pred = prediction()
    pred.probabilities = np.full_like(pred.probabilities, 1 / F.N_FILTERS)  # equal bars: areas comparable
    img = _rgb(draw_strip(pred, tmp_path / "s.png"))
    light = tuple(int(USED[i:i + 2], 16) for i in (1, 3, 5))
    proxy_centres = [_columns_of(img, tuple(255 * v for v in c)).mean() for c in STATE_COLOURS]
    edges = [(a + b) / 2 for a, b in zip(proxy_centres, proxy_centres[1:])]
    is_light = np.abs(img - np.array(light)).sum(-1) <= 3
    per_column = [is_light[:, np.searchsorted(edges, np.arange(img.shape[1])) == k].sum() for k in range(4)]
    # Step 1 has nothing used before it, step 2 one used filter, step 3 two: twice the light area
    # (beyond a few anti-aliased text pixels of that grey anywhere).
    assert per_column[2] > 1000
    assert per_column[0] < 0.1 * per_column[2] and per_column[1] < 0.1 * per_column[2]
    assert per_column[3] == pytest.approx(2 * per_column[2], rel=0.15)


def test_a_step_put_in_front_by_the_level_rule_shows_no_policy_decision(tmp_path):
    pred = prediction(("exposure", "gamma", "contrast"))
    first = pred.sequence.steps[0]
    pred.sequence.steps[0] = Step(first.filter, {"ev": 0.4}, {"label": "Exposure +0.40 EV", "level_ev": 0.4})
    pred.probabilities = np.full_like(pred.probabilities, 1 / F.N_FILTERS)
    pred.probabilities[0] = 0.0  # as Policy.predict_batch gives it: the policy did not choose this step
    img = _rgb(draw_strip(pred, tmp_path / "s.png"))
    proxy_centres = [_columns_of(img, tuple(255 * v for v in c)).mean() for c in STATE_COLOURS]
    edges = [(a + b) / 2 for a, b in zip(proxy_centres, proxy_centres[1:])]
    owner = np.searchsorted(edges, np.arange(img.shape[1]))
    orange = tuple(int(CHOSEN[i:i + 2], 16) for i in (1, 3, 5))
    is_orange = np.abs(img - np.array(orange)).sum(-1) <= 3
    bars = img.shape[0] * 2 // 3  # the bar row (the proxies' frames are orange too)
    assert is_orange[bars:, owner == 1].sum() < 20 <= is_orange[bars:, owner == 2].sum()
    # the level's Exposure is not "used earlier" by the policy: only gamma is light under step 3
    light = tuple(int(USED[i:i + 2], 16) for i in (1, 3, 5))
    is_light = np.abs(img - np.array(light)).sum(-1) <= 3
    assert is_light[:, owner == 2].sum() < 100 < is_light[:, owner == 3].sum()


def test_a_contrast_step_appended_by_the_level_rule_shows_no_policy_decision(tmp_path):
    pred = prediction(("gamma", "contrast"))
    pred.sequence.steps[1] = Step("contrast", {"amount": 0.2}, {"label": "Contrast +0.20", "level_contrast": 1.1})
    pred.probabilities = np.full_like(pred.probabilities, 1 / F.N_FILTERS)
    pred.probabilities[1] = 0.0
    img = _rgb(draw_strip(pred, tmp_path / "s.png"))
    proxy_centres = [_columns_of(img, tuple(255 * v for v in c)).mean() for c in STATE_COLOURS[:3]]
    edges = [(a + b) / 2 for a, b in zip(proxy_centres, proxy_centres[1:])]
    owner = np.searchsorted(edges, np.arange(img.shape[1]))
    orange = tuple(int(CHOSEN[i:i + 2], 16) for i in (1, 3, 5))
    is_orange = np.abs(img - np.array(orange)).sum(-1) <= 3
    bars = img.shape[0] * 2 // 3
    assert is_orange[bars:, owner == 2].sum() < 20 <= is_orange[bars:, owner == 1].sum()


def test_the_strip_grows_with_the_number_of_steps(tmp_path):
    short = Image.open(draw_strip(prediction(("gamma",)), tmp_path / "a.png"))
    long = Image.open(draw_strip(prediction(("gamma", "saturation", "tone_curve")), tmp_path / "b.png"))
    assert long.height == short.height and long.width == pytest.approx(short.width * 4 / 2, rel=0.02)


def test_out_of_range_states_show_clipped_and_nan_as_black(tmp_path, recwarn):
    pred = prediction(("exposure",))
    # Unclipped states happen (an exposure step can push values past 1) and must not break the drawing.
    pred.proxies = [np.full((64, 64, 3), (7.0, -1.0, 0.0), np.float32), np.full((64, 64, 3), np.nan, np.float32)]
    img = _rgb(draw_strip(pred, tmp_path / "s.png", title="a title"))
    is_red = np.abs(img - (255, 0, 0)).sum(-1) <= 3
    rows = np.nonzero(is_red.sum(1) > 50)[0]  # the proxies' rows
    is_black = np.abs(img[rows] - (0, 0, 0)).sum(-1) <= 3
    assert is_red.sum() > 10_000 and is_black.sum() > 10_000  # whole areas, not just frames and text
    # The black area is the second column (the input's black frame lines aside).
    assert np.median(np.nonzero(is_black.sum(0) > 50)[0]) > np.nonzero(is_red.sum(0) > 50)[0].max()
    assert not [w for w in recwarn if "Clipping" in str(w.message)]


def test_a_prediction_with_the_wrong_number_of_proxies_is_refused(tmp_path):
    pred = prediction()
    pred.proxies = pred.proxies[:-1]
    with pytest.raises(ValueError, match="needs 4 proxies"):
        draw_strip(pred, tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


def test_long_colour_curve_labels_break_per_channel():
    label = F.COLOR_CURVES.label(list(F.COLOR_CURVES.identity))
    lines = _wrap_label(label, 22).splitlines()
    assert lines[0] == "Color curves"
    assert [next(i for i, l in enumerate(lines) if l.startswith(c + "[")) for c in "RGB"] == sorted(
        next(i for i, l in enumerate(lines) if l.startswith(c + "[")) for c in "RGB")
    assert all(len(l) <= 22 for l in lines)


def test_real_policy_predictions_draw(tmp_path):
    """The Prediction the policy returns is what the strip reads (no adapter in between)."""
    import torch

    from exposure_engine.agent.policy import Policy

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network on a shared machine: one thread is fastest
    try:
        pol = Policy.random(seed=1, widths=(8, 16, 16, 16), head_hidden=16)
        pred = pol.predict(np.full((64, 64, 3), 0.1, np.float32), seed=0)[0]
    finally:
        torch.set_num_threads(before)
    img = _rgb(draw_strip(pred, tmp_path / "s.png"))
    assert img.shape[1] > img.shape[0]
