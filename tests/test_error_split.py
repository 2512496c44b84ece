"""The error-split study (training/error_split.py): its corrections and its end-to-end numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from exposure_engine.cli import main as cli_main
from exposure_engine.evaluation import metrics as M
from exposure_engine.imageio.transfer import linear_to_srgb, srgb_to_linear
from exposure_engine.training import error_split as ES
from test_training import _finished_photos, tiny_recipe_file  # pytest puts tests/ on sys.path


def _truth_and_cast(seed: int):
    rng = np.random.default_rng(seed)
    lin = rng.uniform(0.02, 0.3, (24, 32, 3)).astype(np.float32)  # dim enough that a 3x gain does not clip
    gains = rng.uniform(0.5, 3.0, 3)
    return linear_to_srgb(lin), linear_to_srgb(lin * gains.astype(np.float32))


@pytest.mark.parametrize("seed", range(4))
def test_correcting_both_brightness_and_chroma_undoes_any_global_channel_gain(seed):
    truth, cast = _truth_and_cast(seed)
    g = ES.gains_to(ES.channel_means(srgb_to_linear(cast)),
                    brightness=ES.log2_brightness(ES.channel_means(srgb_to_linear(truth))),
                    chroma=ES.log2_chroma(ES.channel_means(srgb_to_linear(truth))))
    assert M.psnr(ES.apply_gains(cast, g), truth) > 45.0
    assert M.psnr(cast, truth) < 25.0


def test_brightness_correction_keeps_chroma_and_chroma_correction_keeps_brightness():
    truth, cast = _truth_and_cast(7)
    mc, mt = ES.channel_means(srgb_to_linear(cast)), ES.channel_means(srgb_to_linear(truth))
    by_brightness = ES.channel_means(srgb_to_linear(ES.apply_gains(cast, ES.gains_to(mc, brightness=ES.log2_brightness(mt)))))
    assert ES.log2_brightness(by_brightness) == pytest.approx(ES.log2_brightness(mt), abs=0.01)
    np.testing.assert_allclose(ES.log2_chroma(by_brightness), ES.log2_chroma(mc), atol=0.01)
    by_chroma = ES.channel_means(srgb_to_linear(ES.apply_gains(cast, ES.gains_to(mc, chroma=ES.log2_chroma(mt)))))
    np.testing.assert_allclose(ES.log2_chroma(by_chroma), ES.log2_chroma(mt), atol=0.01)
    assert ES.log2_brightness(by_chroma) == pytest.approx(ES.log2_brightness(mc), abs=0.01)
    np.testing.assert_allclose(ES.gains_to(mc), 1.0)  # nothing asked, nothing changed


@pytest.mark.parametrize("seed", range(3))
def test_the_saturation_statistic_ignores_white_balance_and_exposure_and_follows_chroma(seed):
    truth, cast = _truth_and_cast(seed)
    lin, lin_cast = srgb_to_linear(truth), srgb_to_linear(cast)
    assert ES.log2_saturation(lin_cast) == pytest.approx(ES.log2_saturation(lin), abs=0.03)  # gains: clipping aside
    assert ES.log2_saturation(lin * 0.25) == pytest.approx(ES.log2_saturation(lin), abs=1e-9)
    muted = srgb_to_linear(ES.scale_chroma(truth, 0.5))
    assert ES.log2_saturation(muted) < ES.log2_saturation(lin) - 0.3


def test_the_chroma_factor_reaches_the_asked_saturation_and_one_keeps_the_image():
    truth, _ = _truth_and_cast(3)
    own = ES.log2_saturation(srgb_to_linear(truth))
    assert ES.chroma_factor_to(truth, own, side=32) == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(ES.scale_chroma(truth, 1.0), truth, atol=2e-6)
    f = ES.chroma_factor_to(truth, own - 0.5, side=32)
    assert 0 < f < 1
    assert ES.log2_saturation(srgb_to_linear(ES.scale_chroma(truth, f))) == pytest.approx(own - 0.5, abs=0.05)


@pytest.mark.parametrize("seed", range(3))
def test_the_contrast_statistic_ignores_colour_and_brightness_and_follows_the_tone_spread(seed):
    truth, cast = _truth_and_cast(seed)
    lin = srgb_to_linear(truth)
    own = ES.log2_contrast(lin)
    assert ES.log2_contrast(lin * 0.5) == pytest.approx(own, abs=0.05)  # these tones sit far above the offset
    grey = np.repeat((lin @ np.array([0.27, 0.67, 0.06], np.float32))[..., None], 3, 2)
    assert ES.log2_contrast(grey) == pytest.approx(own, abs=1e-6)  # only luminance counts
    assert ES.log2_contrast(srgb_to_linear(ES.scale_contrast(truth, 2.0))) > own + 0.3
    assert ES.log2_contrast(np.full((8, 8, 3), 0.2, np.float32)) == pytest.approx(0.0, abs=1e-9)


def test_the_contrast_factor_reaches_the_asked_contrast_keeps_chroma_and_one_keeps_the_image():
    truth, _ = _truth_and_cast(3)
    lin = srgb_to_linear(truth)
    own = ES.log2_contrast(lin)
    np.testing.assert_allclose(ES.scale_contrast(truth, 1.0), truth, atol=2e-6)
    assert ES.contrast_factor_to(truth, own, side=32) == pytest.approx(1.0, abs=0.02)
    f = ES.contrast_factor_to(truth, own - 0.4, side=32)
    assert 0.25 < f < 1
    flat = srgb_to_linear(ES.scale_contrast(truth, f))
    assert ES.log2_contrast(flat) == pytest.approx(own - 0.4, abs=0.05)
    np.testing.assert_allclose(flat[..., 0] / flat[..., 1], lin[..., 0] / lin[..., 1], rtol=1e-3)  # same hue


def test_the_white_level_is_the_anchors_and_moves_one_stop_per_stop_of_exposure():
    import torch

    from exposure_engine.training.anchor import linear_log2_white

    rng = np.random.default_rng(3)
    lin = rng.uniform(0.0, 0.4, (20, 30, 3)).astype(np.float32)
    torch_level = float(linear_log2_white(torch.from_numpy(lin.transpose(2, 0, 1)[None].copy()))[0])
    assert ES.log2_white(lin) == pytest.approx(torch_level, abs=1e-4)
    assert ES.log2_white(2 * lin) - ES.log2_white(lin) == pytest.approx(1.0, abs=1e-4)  # still under 1: no clip
    assert ES.log2_white(np.ones((4, 4, 3), np.float32) * 3) == pytest.approx(0.0)  # clipped at white


def test_error_split_scores_the_models_own_edit_and_each_predictor_on_the_held_out_draws(tmp_path):
    from exposure_engine.training.holdout import evaluate_holdout

    _finished_photos(tmp_path / "ph", 10)
    assert cli_main(["train", "--split-from", str(tmp_path / "ph"), "--holdout", "2", "--out", str(tmp_path / "v"),
                     "--recipe", str(tiny_recipe_file(tmp_path / "r.json")), "--iterations", "1",
                     "--no-progress"]) == 0
    assert ES.main([str(tmp_path / "v"), str(tmp_path / "ph"), "--draws", "2", "--json", str(tmp_path / "s.json")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    holdout = evaluate_holdout(tmp_path / "v", tmp_path / "ph", draws=2)
    assert res["n_photos"] == 2 and res["draws"] == 2
    assert res["psnr"]["model"] == pytest.approx(holdout["methods"]["model"]["psnr"], abs=0.006)
    # rescaling an output to the brightness and chroma it already has changes nothing
    assert res["brightness_predictors"]["model"]["psnr"] == pytest.approx(res["psnr"]["model"], abs=0.01)
    assert res["chroma_predictors"]["model"]["psnr"] == pytest.approx(res["psnr"]["model"], abs=0.01)
    # the original's own brightness and chroma are the best a global gain can do on these smooth scenes
    assert res["psnr"]["both_corrected"] >= max(res["psnr"]["brightness_corrected"], res["psnr"]["model"]) - 0.5
    assert res["saturation_predictors"]["model"]["psnr"] == pytest.approx(res["psnr"]["model"], abs=1e-6)
    assert res["psnr"]["saturation_corrected"] >= res["psnr"]["model"] - 0.5
    assert res["contrast_predictors"]["model"]["psnr"] == pytest.approx(res["psnr"]["model"], abs=1e-6)
    assert np.isfinite(res["psnr"]["contrast_corrected"])
    assert -1.0 <= res["contrast_paired_affine"]["corr"] <= 1.0
    for group in ("brightness_predictors", "chroma_predictors", "saturation_predictors", "contrast_predictors"):
        assert all(v["error_stops"] >= 0 for v in res[group].values())
    assert -1.0 <= res["paired_affine"]["corr"] <= 1.0
    b = res["brightness_predictors"]
    assert {"white_point", "map_and_white_point", "paired_affine_white"} <= set(b) and res["target_white_level"] <= 0
    # a model trained without --split-from has no held-out photos to study
    cfg = json.loads((tmp_path / "v" / "config.json").read_text())
    del cfg["training"]["split"]
    (tmp_path / "v" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no data split"):
        ES.error_split(tmp_path / "v", tmp_path / "ph")
