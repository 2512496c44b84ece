"""The level rule (agent/level.py): each prediction's exposure retuned so that the finished photo's level (mean of
log2 brightness and log2 white level) is the mean of the brightness map's reading and the targets' white level."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from exposure_engine import filters as F
from exposure_engine import renderer as R
from exposure_engine.agent import level as L
from exposure_engine.agent.level import (LevelRule, display_level, log2_brightness, log2_contrast, log2_white,
                                         with_gain)
from exposure_engine.agent.policy import ModelError, Policy
from exposure_engine.imageio.transfer import srgb_to_linear
from exposure_engine.renderer import render
from exposure_engine.sequence import EditSequence, Step
from exposure_engine.training import data as D
from exposure_engine.training import recipes
from exposure_engine.training.anchor import BrightnessAnchor, linear_log2_brightness, linear_log2_white
from exposure_engine.training.loop import TrainConfig, train
from test_training import TINY, write_folders  # pytest puts tests/ on sys.path (no __init__.py)


def _rule(white: float = -0.5) -> LevelRule:
    # inputs 3-6 stops under white map to finished photos 1.5-3 stops under (brighter inputs, brighter outputs)
    return LevelRule(BrightnessAnchor.from_values([-6.0, -3.0], [-3.0, -1.5]), white)


def _scenes(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 64, 64, 3)`` linear proxies: smooth gradients with a few bright pixels, 1-3 stops under."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    out = np.empty((n, 64, 64, 3), np.float32)
    for i in range(n):
        base = (0.2 + 0.8 * xx * yy)[..., None] * rng.uniform(0.5, 1.0, 3)
        base[rng.integers(0, 64, 30), rng.integers(0, 64, 30)] = 1.0
        out[i] = base * 2.0 ** -rng.uniform(1, 3)
    return out


def test_the_levels_read_as_the_training_anchor_reads_them():
    # the numpy readings are the torch ones the anchor and white-point anchor use, so a rule fitted from either
    # side means the same thing
    x = _scenes(3) * 4
    chw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    np.testing.assert_allclose(log2_brightness(x), linear_log2_brightness(chw).numpy(), atol=1e-4)
    np.testing.assert_allclose(log2_white(x), linear_log2_white(chw).numpy(), atol=1e-4)
    # a flat grey at linear 0.25 (display 0.537): brightness and white level both -2 stops
    grey = np.full((1, 8, 8, 3), 0.53709, np.float32)
    assert display_level(grey)[0] == pytest.approx(-2.0, abs=1e-3)


def test_renders_are_read_through_the_exact_srgb_curve_clipped_as_a_display_clips():
    # display_luminance is the level rule's compiled copy of imageio.transfer's decoding (plus the luminance
    # weights): every value in and beyond [0, 1], the knee included, within float32 rounding of the float64 curve
    from exposure_engine.agent.level import display_luminance, luminance

    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 1.3, (3, 16, 16, 3)).astype(np.float32)
    x[0, 0, :4] = [[0.04045] * 3, [0.0404] * 3, [0.0405] * 3, [1.0] * 3]
    want = luminance(srgb_to_linear(np.clip(x, 0, 1), np.float64))
    np.testing.assert_allclose(display_luminance(x), want, rtol=1e-6, atol=3e-7)
    assert display_luminance(np.ones((1, 2, 2, 3), np.float32)).max() <= 1.0  # white is white, not 1 + ulp
    assert display_luminance(np.zeros((1, 2, 2, 3), np.float32)).max() == 0.0


def test_the_rule_fits_the_targets_median_white_level_and_round_trips():
    frames = np.stack([np.full((64, 64, 3), v, np.float32) for v in (0.125, 0.25, 0.5)])
    rule = LevelRule.fit(BrightnessAnchor.from_values([-6.0, -3.0], [-3.0, -1.5]), frames)
    assert rule.white_level == pytest.approx(-2.0)  # median of -3, -2, -1
    again = LevelRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    np.testing.assert_allclose(again.targets(_scenes(4)), rule.targets(_scenes(4)), atol=1e-4)
    # the target level of an input: mean of its mapped brightness and the white level
    x = np.full((1, 8, 8, 3), 2.0 ** -4.5, np.float32)  # brightness -4.5: mapped to -2.25
    assert rule.targets(x)[0] == pytest.approx(0.5 * (-2.25 - 2.0), abs=1e-4)


def test_contrast_is_the_spread_of_log2_luminance_and_an_exposure_gain_leaves_it():
    # half the pixels at luminance 0.5, half at 0.125: log2 values 2 stops apart (with the 1e-3 offset), std 1 stop
    two = np.full((1, 8, 8, 3), 0.5, np.float32)
    two[0, 4:] = 0.125
    assert log2_contrast(two)[0] == pytest.approx(0.5 * (np.log2(0.501) - np.log2(0.126)), abs=1e-6)
    x = _scenes(3)
    np.testing.assert_allclose(log2_contrast(x * 0.5), log2_contrast(x), atol=0.03)  # the offset: "all but"


def test_the_contrast_map_is_fitted_from_the_inputs_and_targets_frames_and_round_trips():
    bmap = BrightnessAnchor.from_values([-6.0, -3.0], [-3.0, -1.5])
    inputs, targets = _scenes(5, seed=3), _scenes(4, seed=4) ** 1.5
    rule = LevelRule.fit(bmap, targets, inputs)
    # the quantile map of the inputs' contrast to the targets': the flattest input gets the flattest target's
    assert rule.contrast_map.of_log2(log2_contrast(inputs).min()) == pytest.approx(log2_contrast(targets).min())
    assert rule.contrast_map.of_log2(log2_contrast(inputs).max()) == pytest.approx(log2_contrast(targets).max())
    again = LevelRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    np.testing.assert_allclose(again.mapped_contrast(inputs), rule.mapped_contrast(inputs), atol=1e-4)
    # the mapped reading's share of the contrast asked for: the measured one when fitted; a rule saved before the
    # weight existed keeps the plain mean it was made with (its model predicts as it did)
    assert rule.contrast_weight == again.contrast_weight == L.CONTRAST_WEIGHT == 0.75
    older = {k: v for k, v in rule.to_dict().items() if k != "contrast_weight"}
    assert LevelRule.from_dict(older).contrast_weight == 0.5
    assert LevelRule.from_dict(older).to_dict() == older  # stored as it was: its hash in sequences unchanged
    # without the inputs' frames (and in configs saved before the contrast map): no map, no Contrast step
    plain = LevelRule.fit(bmap, targets)
    assert plain.contrast_map is None and "contrast_map" not in plain.to_dict()
    assert LevelRule.from_dict(plain.to_dict()).contrast_map is None


_MAP = {"input_levels": [0, 1], "target_levels": [0, 1]}


@pytest.mark.parametrize("bad", [{}, {"white_level": 0.0}, {"brightness_map": {"input_levels": [0, 1]},
                                                            "white_level": 0.0},
                                 {"brightness_map": _MAP, "white_level": "nan"},
                                 {"brightness_map": _MAP, "white_level": 0.0, "contrast_map": {"input_levels": [0]}},
                                 {"brightness_map": _MAP, "white_level": 0.0, "contrast_map": "flat"},
                                 {"brightness_map": _MAP, "white_level": 0.0,
                                  "contrast_map": {"input_levels": [0, 1], "target_levels": [0, "inf"]}},
                                 {"brightness_map": _MAP, "white_level": 0.0, "contrast_map": _MAP,
                                  "contrast_weight": 1.5},
                                 {"brightness_map": _MAP, "white_level": 0.0, "contrast_map": _MAP,
                                  "contrast_weight": "nan"}])
def test_a_malformed_rule_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="malformed level rule"):
        LevelRule.from_dict(bad)


PROGRAMS = [  # a display encoding alone; a flattening curve program
    [Step("gamma", {"gamma": 1 / 2.2})],
    [Step("tone_curve", {"slopes": [2, 1, 1, 0.5, 0.5, 1, 1, 1]}), Step("saturation", {"amount": 0.4}),
     Step("gamma", {"gamma": 0.5})],
]


def _batched(program: list, n: int) -> tuple[list, list]:
    """The same program for ``n`` rows, in :meth:`LevelRule.offsets`'s per-step layout ``(ids, packed)``."""
    return ([np.full(n, s.definition.index) for s in program],
            [np.tile(np.asarray(s.packed(), np.float32), (n, 1)) for s in program])


@pytest.mark.parametrize("program", PROGRAMS)
def test_the_found_gain_puts_every_output_at_its_level(program):
    rule, x = _rule(), _scenes(6, seed=1)
    seq = EditSequence(program)
    ids, packed = _batched(program, len(x))
    d = rule.offsets(x, ids, packed)
    assert np.all(np.abs(d) < 2.9)  # solved, not stopped at the search bound
    for i in range(len(x)):
        out = render(x[i], EditSequence(with_gain(seq.steps, d[i])[0]))
        assert display_level(out[None])[0] == pytest.approx(rule.targets(x[i:i + 1])[0], abs=0.002)


def _random_programs(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (n, 1 + length), consts (n, 1 + length, K))``: an Exposure step (constant 0, the search's slot) in
    front of random programs of all eight filters with parameters the policy can produce."""
    ids = np.zeros((n, 1 + length), np.int32)
    consts = np.zeros((n, 1 + length, F.MAX_KERNEL_CONSTS), np.float32)
    ids[:, 0] = F.get("exposure").index
    for i in range(n):
        for t in range(1, 1 + length):
            f = F.FILTERS[rng.integers(F.N_FILTERS)]
            packed = f.params_from_raw(torch.as_tensor(rng.uniform(-3, 3, f.n_raw))[None])[0].numpy()
            ids[i, t] = f.index
            consts[i, t] = R.prepared_constants([f.index], packed[None].astype(np.float32))[0]
    return ids, consts


@pytest.mark.parametrize("size", [(64, 64), (31, 45), (1, 1)])  # the proxy; chunks and a partial one; one pixel
def test_the_searches_fused_reads_equal_rendering_then_reading(size):
    # The searches read each candidate without making its image (level._make_search_reads): what they read must be
    # what display_level and log2 contrast read off the render itself.
    rng = np.random.default_rng(3)
    x = np.ascontiguousarray(_scenes(12, seed=3)[:, : size[0], : size[1]])
    ids, consts = _random_programs(len(x), 4, rng)
    rows = np.array([11, 0, 5, 7], np.int64)  # a subset, out of order, as the search's still-active rows
    lead = np.exp2(rng.uniform(-3, 3, len(rows))).astype(np.float32)
    fused = np.empty(len(rows))
    L._render_levels(x, rows, ids, consts, lead, fused)
    c = consts[rows].copy()
    c[:, 0, 0] = lead
    renders = R.programs_batch(x[rows].copy(), ids[rows], c)
    np.testing.assert_allclose(fused, display_level(renders), rtol=0, atol=1e-9)

    final = renders
    delta = np.ascontiguousarray(rng.normal(0, 0.2, final.shape).astype(np.float32))
    amounts = rng.uniform(-1, 1, len(rows)).astype(np.float32)
    src = np.zeros((len(x), *final.shape[1:]), np.float32)
    dsrc = np.zeros_like(src)
    src[rows], dsrc[rows] = final, delta
    contrasts = np.empty(len(rows))
    L._lerp_contrasts(src, dsrc, rows, amounts, np.float32(L.CONTRAST_EPS), contrasts)
    lerped = final + amounts[:, None, None, None] * delta
    np.testing.assert_allclose(contrasts, L._log2_contrast(L.display_luminance(lerped)), rtol=0, atol=1e-9)


def test_a_flat_frames_fused_contrast_is_exactly_zero():
    flat = np.full((1, 64, 64, 3), 0.3, np.float32)
    out = np.empty(1)
    L._lerp_contrasts(flat, np.zeros_like(flat), np.array([0]), np.array([0.7], np.float32),
                      np.float32(L.CONTRAST_EPS), out)
    assert out[0] == 0.0


@pytest.mark.parametrize("n", [1, 2, 3, 200, 4096])
def test_the_white_quantile_is_numpys_linear_quantile_ties_included(n):
    rng = np.random.default_rng(n)
    for v in (rng.random(n, dtype=np.float32), rng.integers(0, 4, n).astype(np.float32)):  # distinct; many ties
        q = L._white_quantile(v, L.WHITE_QUANTILE * (n - 1))
        assert q == pytest.approx(np.quantile(v.astype(np.float64), L.WHITE_QUANTILE), abs=1e-12)


def test_an_output_that_cannot_reach_its_level_gets_the_closest_gain_and_a_black_frame_none():
    far = np.full((1, 16, 16, 3), 2.0 ** -12, np.float32)  # 10 stops too dark for its level: +3, the bound
    black = np.zeros((1, 16, 16, 3), np.float32)  # no gain changes it: none
    assert _rule().offsets(far, [], [])[0] == pytest.approx(3.0, abs=1e-3)
    assert _rule().offsets(black, [], [])[0] == 0.0
    # a flat frame's contrast cannot be moved either: no Contrast step (not one at full strength for nothing)
    grey = np.full((1, 16, 16, 3), 0.1, np.float32)
    ids, packed = _batched([Step("gamma", {"gamma": 1 / 2.2})], 1)
    assert _contrast_rule().retune(grey, ids, packed)[1][0] == 0.0


def test_the_gain_is_folded_into_a_leading_exposure_else_a_new_exposure_step_goes_in_front():
    x = _scenes(1)[0]
    lead = [Step("exposure", {"ev": 0.7}, {"label": "Exposure +0.70 EV", "probabilities": {"exposure": 0.9}}),
            Step("gamma", {"gamma": 0.5})]
    folded, added = with_gain(lead, 0.25)
    assert not added and [s.filter for s in folded] == ["exposure", "gamma"]
    assert folded[0].params["ev"] == pytest.approx(0.95) and folded[0].meta["level_ev"] == 0.25
    assert folded[0].meta["label"] == "Exposure +0.95 EV" and folded[0].meta["probabilities"] == {"exposure": 0.9}
    # the same output as a separate gain in front
    front = [Step("exposure", {"ev": 0.25}), *lead]
    np.testing.assert_allclose(render(x, EditSequence(folded)), render(x, EditSequence(front)), atol=1e-5)
    tail = [Step("gamma", {"gamma": 0.5}), Step("exposure", {"ev": 0.7})]
    ahead, added = with_gain(tail, -0.4)
    assert added and [s.filter for s in ahead] == ["exposure", "gamma", "exposure"]
    assert ahead[0].params == {"ev": -0.4} and ahead[0].meta["level_ev"] == -0.4 and ahead[2:] == tail[1:]


def _contrast_rule(weight: float = 0.5) -> LevelRule:
    # the map reads 0.82 of the inputs' contrast: 0.5 stops for the scenes' 0.61; the programs' own 0.61 (a gamma
    # 1/2.2) and 0.42 (the curve program) make the contrasts asked for 0.46-0.55, all within a Contrast step's reach
    return LevelRule(_rule().brightness_map, -0.5, BrightnessAnchor.from_values([0.0, 3.0], [0.0, 2.46]), weight)


@pytest.mark.parametrize("weight", [0.5, 0.75])
@pytest.mark.parametrize("program", PROGRAMS)
def test_with_a_contrast_map_the_output_meets_its_contrast_and_then_its_level(program, weight):
    rule, x = _contrast_rule(weight), _scenes(6, seed=1)
    seq = EditSequence(program)
    ids, packed = _batched(program, len(x))
    gains, amounts, contrasts = rule.retune(x, ids, packed)
    assert np.all(np.abs(amounts) < 0.99)  # reached, not stopped at the amount's bound
    levelled = rule.offsets(x, ids, packed)  # the policy's own program at its level: the second reading
    for i in range(len(x)):
        own = render(x[i], EditSequence(with_gain(seq.steps, levelled[i])[0]))[None]
        mean = weight * rule.mapped_contrast(x[i:i + 1])[0] + (1 - weight) * log2_contrast(srgb_to_linear(own))[0]
        assert contrasts[i] == pytest.approx(mean, abs=1e-4)
        steps = with_gain(seq.steps, gains[i])[0] + [Step("contrast", {"amount": amounts[i]})]
        out = render(x[i], EditSequence(steps))[None]
        assert display_level(out)[0] == pytest.approx(rule.targets(x[i:i + 1])[0], abs=0.002)  # the level: exact
        # the contrast: as found before the last level round (a gain in front of a curve moves it a little)
        assert log2_contrast(srgb_to_linear(out))[0] == pytest.approx(contrasts[i], abs=0.03)
    assert _rule().retune(x, ids, packed)[1:] == (None, None)  # no map: no Contrast step


def _ruled_policy(seed: int = 5, rule: LevelRule | None = None) -> Policy:
    # seed 5 starts some programs of _scenes(8, 2) with an Exposure step
    pol = Policy.random(seed)
    return Policy(pol.actor, name="ruled", config={**pol.config, "level": (rule or _rule()).to_dict()})


def test_a_contrast_step_follows_the_policys_program_and_render_reproduces_the_output():
    pol = _ruled_policy(rule=_contrast_rule())
    x = _scenes(4, seed=2)
    preds = pol.predict_batch(x, dropout=False)
    own = pol.predict_batch(x, dropout=False, level=False)
    ids = [np.array([F.get(p.sequence.steps[t].filter).index for p in own]) for t in range(5)]
    packed = [np.stack([np.pad(np.asarray(p.sequence.steps[t].packed(), np.float32),
                               (0, F.MAX_PACKED - len(p.sequence.steps[t].packed()))) for p in own]) for t in range(5)]
    _, amounts, want = pol.level_rule.retune(x, ids, packed)
    for i, r in enumerate(preds):
        last = r.sequence.steps[-1]
        assert last.filter == "contrast" and "probabilities" not in last.meta and not r.probabilities[-1].any()
        assert last.params["amount"] == pytest.approx(amounts[i], abs=1e-5)
        assert last.meta["level_contrast"] == pytest.approx(want[i], abs=1e-4)
        n = len(r.sequence.steps)
        assert r.probabilities.shape == (n, F.N_FILTERS) and len(r.proxies) == n + 1
        np.testing.assert_allclose(render(r.proxies[0], r.sequence, clip=False), r.proxies[-1], atol=1e-4)
    one = pol.predict(x[2])[0].sequence
    assert one.labels() == preds[2].sequence.labels()


def test_a_model_with_a_rule_retunes_every_prediction_and_its_states_stay_consistent():
    pol = _ruled_policy()
    x = _scenes(8, seed=2)
    plain = pol.predict_batch(x, dropout=False, level=False)
    ruled = pol.predict_batch(x, dropout=False)
    want = pol.level_rule.targets(x)
    assert {p.sequence.steps[0].filter == "exposure" for p in plain} == {True, False}  # both ways of adding the gain
    for i, (p, r) in enumerate(zip(plain, ruled)):
        # the policy's own steps, unchanged but for the gain
        own = [s for s in r.sequence.steps if "probabilities" in s.meta]
        assert [(s.filter, s.params) for s in own[1:]] == [(s.filter, s.params) for s in p.sequence.steps[1:]]
        gain = next(s.meta["level_ev"] for s in r.sequence.steps if "level_ev" in s.meta)
        n = len(r.sequence.steps)
        assert r.probabilities.shape == (n, F.N_FILTERS) and len(r.proxies) == n + 1
        assert sum("level_ev" in s.meta for s in r.sequence.steps) == 1
        if n > len(p.sequence.steps):  # a new step in front: no probabilities, its state is the gained input
            assert not r.probabilities[0].any() and "probabilities" not in r.sequence.steps[0].meta
        np.testing.assert_allclose(render(r.proxies[0], r.sequence, clip=False), r.proxies[-1], atol=1e-4)
        if abs(gain) < 2.99:  # else the program cannot reach its level within the searched +-3 stops
            assert display_level(r.proxies[-1][None])[0] == pytest.approx(want[i], abs=0.02)
    # a single prediction goes the same way as the batch (up to the batched products' rounding, ~1e-7)
    one, same = pol.predict(x[5])[0].sequence.steps, ruled[5].sequence.steps
    assert [s.filter for s in one] == [s.filter for s in same]
    np.testing.assert_allclose(np.concatenate([s.packed() for s in one]), np.concatenate([s.packed() for s in same]),
                               atol=1e-5)


def test_a_model_without_a_rule_predicts_the_policys_own_program():
    pol = Policy.random(5)
    assert pol.level_rule is None
    x = _scenes(2)
    assert [p.sequence.to_dict()["steps"] for p in pol.predict_batch(x, dropout=False)] == \
        [p.sequence.to_dict()["steps"] for p in _ruled_policy().predict_batch(x, dropout=False, level=False)]


def test_a_sequence_names_the_level_rule_that_decided_it_beside_the_weights():
    plain, ruled, other = Policy.random(5), _ruled_policy(), _ruled_policy(rule=_rule(white=-0.7))
    x = _scenes(1)
    assert plain.predict(x[0])[0].sequence.meta["model"] == {"name": plain.name, "sha256": plain.content_hash}
    named = [p.predict(x[0])[0].sequence.meta["model"] for p in (ruled, other)]
    assert named[0]["sha256"] == named[1]["sha256"] == plain.content_hash      # the same weights ...
    assert named[0]["level_rule"] != named[1]["level_rule"]                    # ... under two rules
    assert named[0]["level_rule"] == ruled.level_rule_hash and len(named[0]["level_rule"]) == 16


def test_the_rule_is_saved_with_the_model_and_a_broken_one_is_a_model_error(tmp_path):
    pol = _ruled_policy()
    pol.save(tmp_path / "m")
    again = Policy.load(tmp_path / "m")
    assert again.level_rule is not None and again.level_rule.white_level == pytest.approx(-0.5)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["level"] = {"white_level": 0.0}
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="config.json: malformed level rule"):
        Policy.load(tmp_path / "m")


def test_training_with_the_rule_saves_it_and_validates_the_policys_own_programs(tmp_path):
    from exposure_engine.training.loop import validation_psnr
    from test_training import _finished_photos

    ins, tgs = write_folders(tmp_path)
    recipe = recipes.get("cpu-fast", **TINY, brightness_anchor=0.5, level_rule=True)
    cfg = TrainConfig(inputs=D.list_images(ins), targets=D.list_images(tgs), out=tmp_path / "m", recipe=recipe,
                      iterations=3, seed=0, checkpoint_every=0, progress=False, snapshots=True,
                      validation=D.validation_pairs(_finished_photos(tmp_path / "ph", 3), seed=0))
    train(cfg)
    targets = D.build_crops(D.list_images(tgs), "target", cache_dir=None, seed=0, progress=False)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["level"]
    assert saved["white_level"] == pytest.approx(float(np.median(log2_white(targets.frames))), abs=1e-4)
    inputs = D.build_crops(D.list_images(ins), "input", cache_dir=None, seed=0, progress=False)
    fitted = LevelRule.fit(BrightnessAnchor.from_dict(saved["brightness_map"]), targets.frames, inputs.frames)
    assert saved["contrast_map"] == fitted.to_dict()["contrast_map"]  # from the inputs' and targets' frames
    # the saved model, its last weights and its snapshots carry the rule: what is evaluated is what users get
    for folder in ("m", "m/last", "m/snapshots/000003"):
        assert Policy.load(tmp_path / folder).level_rule is not None
    # validation scored the policy's own programs (the rule would favour an untrained policy)
    monitor = json.loads((tmp_path / "m" / "history.json").read_text())["monitor"][-1]
    last = Policy.load(tmp_path / "m" / "last")
    last.level_rule = None
    assert monitor["val_psnr"] == pytest.approx(validation_psnr(last, cfg.validation), abs=1e-3)
    with pytest.raises(ValueError, match="level_rule must be true or false"):
        recipes.get("cpu-fast", level_rule=1)


def test_the_whole_frame_proxies_are_the_engines_proxies_and_come_back_from_the_cache(tmp_path):
    from exposure_engine.imageio.proxy import make_proxy

    ins, tgs = write_folders(tmp_path)
    files = D.list_images(tgs)
    fresh = D.build_crops(files, "target", cache_dir=tmp_path / "cache", seed=0, progress=False)
    cached = D.build_crops(files, "target", cache_dir=tmp_path / "cache", seed=0, progress=False)
    assert fresh.frames.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(fresh.frames, cached.frames)
    np.testing.assert_allclose(fresh.frames[0], make_proxy(srgb_to_linear(D.load_target(files[0])), 64), atol=1e-6)
    inputs = D.build_crops(D.list_images(ins), "input", cache_dir=None, seed=0, progress=False)
    np.testing.assert_allclose(inputs.frames[1], make_proxy(D.load_input(D.list_images(ins)[1],
                                                                         unprocess_seed=None), 64), atol=1e-6)


def test_an_older_model_gets_the_rule_from_its_own_brightness_map_and_targets(tmp_path):
    from exposure_engine.training.add_level import main

    _, tgs = write_folders(tmp_path)
    pol = Policy.random(0)
    bmap = BrightnessAnchor.from_values([-6.0, -3.0], [-3.0, -1.5])
    pol.save(tmp_path / "old", extra_config={"training": {"brightness_anchor": bmap.to_dict()}})
    assert main([str(tmp_path / "old"), str(tgs), "--out", str(tmp_path / "new")]) == 0
    frames = np.stack([D.frame_proxy(D.load_target(f), "target") for f in D.list_images(tgs)])
    new = Policy.load(tmp_path / "new").level_rule
    assert new.white_level == pytest.approx(float(np.median(log2_white(frames))), abs=1e-4)
    np.testing.assert_allclose(new.brightness_map.target_levels, bmap.target_levels, atol=1e-4)
    assert Policy.load(tmp_path / "old").level_rule is None  # --out leaves the original alone
    assert new.contrast_map is None  # no record of its inputs: no contrast map
    # a model trained on a split of photos made RAW-like: the contrast map from those inputs, drawn again as its
    # training drew them (the run's seed and unprocessing ranges)
    from exposure_engine.training.unprocess import UnprocessRanges
    from test_training import _finished_photos

    photos = _finished_photos(tmp_path / "ph", 4)
    ranges = UnprocessRanges(ev=(-3.0, -0.5))
    split = {"brightness_anchor": bmap.to_dict(), "unprocess": True, "seed": 3, "unprocess_ranges": ranges.to_dict(),
             "split": {"train_inputs": [f.name for f in photos[:3]], "targets": [photos[3].name]}}
    pol.save(tmp_path / "split", extra_config={"training": split})
    assert main([str(tmp_path / "split"), str(tmp_path / "ph")]) == 0
    frames = np.stack([D.frame_proxy(D.load_input(f, unprocess_seed=3, ranges=ranges), "input") for f in photos[:3]])
    want = LevelRule.fit(bmap, np.stack([D.frame_proxy(D.load_target(photos[3]), "target")]), frames)
    assert Policy.load(tmp_path / "split").level_rule.to_dict() == want.to_dict()
    # a model trained without the anchor has no map to reuse: a clear error, nothing written
    Policy.random(0).save(tmp_path / "plain")
    assert main([str(tmp_path / "plain"), str(tgs)]) == 2
    assert Policy.load(tmp_path / "plain").level_rule is None


def test_runs_are_compared_on_the_same_validation_draws_with_and_without_their_rule(tmp_path):
    from exposure_engine.training.loop import validation_psnr
    from exposure_engine.training.select import main, score
    from test_training import _finished_photos

    files = _finished_photos(tmp_path / "ph", 5)
    files, others = files[:3], files[3:]
    split = {"training": {"split": {"train_inputs": [f.name for f in files], "targets": [f.name for f in others]}}}
    Policy.random(5).save(tmp_path / "a", extra_config=split)
    ruled = _ruled_policy()
    ruled.save(tmp_path / "b", extra_config=split)
    res = score([tmp_path / "a", tmp_path / "b"], tmp_path / "ph", draws=2)
    a, b = res["models"]
    pairs = [D.validation_pairs(files, seed=s) for s in range(2)]
    assert b["per_draw"] == pytest.approx([validation_psnr(Policy.load(tmp_path / "b"), p) for p in pairs], abs=1e-3)
    assert not a["level_rule"] and a["val_psnr"] == a["val_psnr_without_rule"]
    # the rule-less score of b is a's: the same weights, the same draws
    assert b["level_rule"] and b["val_psnr_without_rule"] == pytest.approx(a["val_psnr"], abs=1e-3)
    assert res["ranking"][0] == max(res["models"], key=lambda r: r["val_psnr"])["model"]
    # the target half, made RAW-like the same way
    on_targets = score([tmp_path / "b"], tmp_path / "ph", draws=1, which="targets")["models"][0]
    want = validation_psnr(Policy.load(tmp_path / "b"), D.validation_pairs(others, seed=0))
    assert on_targets["per_draw"] == pytest.approx([want], abs=1e-3)
    Policy.random(6).save(tmp_path / "other", extra_config={"training": {"split": {"train_inputs": ["x.jpg"]}}})
    assert main([str(tmp_path / "a"), str(tmp_path / "other"), str(tmp_path / "ph")]) == 2  # different splits


def test_the_daemon_serves_the_retuned_program_over_its_socket():
    from daemon_support import SMALL_ARCH, make_image, running_server, sequences_close

    from exposure_engine.daemon.client import Client, predict_proxy

    small = Policy.random(5, **SMALL_ARCH)
    ruled = Policy(small.actor, name="ruled", config={**small.config, "level": _rule().to_dict()})
    img = make_image(300, 400)
    with running_server(policies={"default": ruled}) as server, Client(server.endpoint, timeout=20, retries=0) as c:
        [remote] = c.predict(img)
    [local] = ruled.predict(predict_proxy(img)[0])
    assert sequences_close(remote.sequence, local.sequence)
    assert sum("level_ev" in s.meta for s in remote.sequence.steps) == 1
    assert remote.probabilities.shape == (len(remote.sequence.steps), F.N_FILTERS)
