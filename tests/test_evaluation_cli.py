"""`exposure-engine eval` and `exposure-engine bench quality`, run through the real CLI on generated photos."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from exposure_engine.cli import main
from exposure_engine.evaluation import benchmark as BM
from exposure_engine.evaluation import metrics as M
from exposure_engine.evaluation import styles as S
from exposure_engine.sequence import EditSequence

from imagegen import smooth_image


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Float display RGB in [0, 1] -> 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])
    return path


def photo(seed: int, h: int = 72, w: int = 96) -> np.ndarray:
    return np.clip(smooth_image(h, w, seed=seed) ** (1 / 2.2), 0, 1)


def folder(path: Path, images: dict[str, np.ndarray]) -> Path:
    for stem, img in images.items():
        write_png(path / f"{stem}.png", img)
    return path


# --- eval -------------------------------------------------------------------------------------------------------


def test_eval_scores_a_folder_against_itself_at_100_percent(tmp_path, capsys):
    imgs = {f"p{i}": photo(i) for i in range(3)}
    out = folder(tmp_path / "out", imgs)
    tgt = folder(tmp_path / "tgt", imgs)
    rc = main(["eval", "--outputs", str(out), "--targets", str(tgt), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["outputs"] == 3 and r["targets"] == 3 and r["skipped"] == []
    assert r["histogram_intersection"]["mean"] == pytest.approx(100.0)
    assert "| outputs | 100.0 | 100.0 | 100.0 | 100.0 |" in capsys.readouterr().out


def test_eval_pairs_ground_truth_by_file_stem(tmp_path):
    out = folder(tmp_path / "out", {"a": np.full((20, 30, 3), 128 / 255), "b": np.full((20, 30, 3), 128 / 255),
                                    "extra": np.full((20, 30, 3), 0.5)})
    gt = folder(tmp_path / "gt", {"a": np.full((20, 30, 3), 140 / 255), "b": np.full((20, 30, 3), 140 / 255)})
    rc = main(["eval", "--outputs", str(out), "--targets", str(gt), "--ground-truth", str(gt),
               "--json", str(tmp_path / "r.json")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["paired"]["n"] == 2
    assert r["paired"]["psnr"] == pytest.approx(20 * math.log10(255 / 12), abs=1e-3)  # 12 code values apart
    assert r["unmatched_outputs"] == ["extra.png"]


def test_eval_skips_an_unreadable_file_and_says_which(tmp_path, capsys):
    out = folder(tmp_path / "out", {"good": photo(1)})
    (out / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    tgt = folder(tmp_path / "tgt", {"t": photo(2)})
    rc = main(["eval", "--outputs", str(out), "--targets", str(tgt), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["outputs"] == 1 and [Path(s["path"]).name for s in r["skipped"]] == ["broken.png"]
    assert "broken.png" in capsys.readouterr().err


def test_eval_errors_name_the_folder(tmp_path, capsys):
    tgt = folder(tmp_path / "tgt", {"t": photo(2)})
    assert main(["eval", "--outputs", str(tmp_path / "nope"), "--targets", str(tgt)]) == 2
    assert f"outputs folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--outputs", str(tmp_path / "empty"), "--targets", str(tgt)]) == 2
    assert "holds no images" in capsys.readouterr().err
    other = folder(tmp_path / "other", {"zzz": photo(3)})
    assert main(["eval", "--outputs", str(other), "--targets", str(tgt), "--ground-truth", str(tgt)]) == 2
    assert "same file stem" in capsys.readouterr().err


# --- bench quality ----------------------------------------------------------------------------------------------


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    return folder(tmp_path / "photos", {f"img{i:02d}": photo(10 + i) for i in range(10)})


@pytest.mark.slow  # ~20 s on a loaded 2-core machine: two styles, every baseline, an untrained policy
def test_bench_quality_plumbing_with_an_untrained_policy(photo_dir, tmp_path):
    out = tmp_path / "bench"
    rc = main(["bench", "quality", "--photos-dir", str(photo_dir), "--out", str(out), "--test", "2", "--size", "96",
               "--styles", "punchy,teal_orange", "--trainer", "random", "--minutes", "0"])
    assert rc == 0
    r = json.loads((out / "results.json").read_text())
    split = r["split"]
    assert len(split["holdout_inputs"]) == 2 and len(split["targets"]) == 5
    assert not set(split["targets"]) & (set(split["train_inputs"]) | set(split["holdout_inputs"]))
    assert set(r["styles"]) == {"punchy", "teal_orange"}
    assert r["styles"]["punchy"]["expressible"] and not r["styles"]["teal_orange"]["expressible"]
    for name, res in r["styles"].items():
        methods = res["methods"]
        assert list(methods) == ["identity", "gimp_auto", "histogram_match", "libraw_like", "agent",
                                 "exposure_oracle", "unpaired_reference", "ceiling"]
        for m, v in methods.items():
            h = v["histogram"]
            assert all(0.0 <= h[k] <= 100.0 for k in ("luminance", "contrast", "saturation", "mean")), (name, m)
            assert h["mean"] == pytest.approx((h["luminance"] + h["contrast"] + h["saturation"]) / 3)
            assert (v["paired"] is None) == (m == "ceiling")
        # The agent's edits are kept as white-box sequences, one per test input.
        seqs = sorted((out / name / "sequences").glob("*.json"))
        assert [p.stem for p in seqs] == sorted(split["holdout_inputs"])
        assert all(len(EditSequence.load(p).steps) == 5 for p in seqs)
        sheet = cv2.imread(res["contact_sheet"])
        # Columns: input (= identity), gimp_auto, histogram_match, libraw_like, agent, ground truth; rows: 2 tests.
        assert sheet.shape[1] == 6 * 192 + 7 * 4
        assert sheet.shape[0] == 22 + 2 * 144 + 3 * 4  # title strip, two 96x72 photos shown 192 wide
    md = (out / "results.md").read_text()
    assert "## Punchy (punchy: expressible by the 8 filters)" in md and "| ceiling |" in md
    assert "## Teal & orange (teal_orange: not exactly expressible by the 8 filters)" in md


def _run_noir_with_a_recording_trainer(photo_dir: Path, tmp_path: Path, **cfg_fields):
    """run_style for noir with a trainer that records the job it gets; returns (job, loaded photos, result)."""
    cfg = BM.BenchConfig(photos_dir=photo_dir, out_dir=tmp_path / "b", styles=["noir"], n_test=2, size=96, seed=4,
                         **cfg_fields)
    parts = BM.split(sorted(photo_dir.glob("*.png")), cfg.seed, cfg.n_test)
    loaded = {k: BM.load_photos(v, cfg.size)[0] for k, v in parts.items()}
    seen = {}

    def trainer(job: BM.TrainingJob):
        seen["job"] = job
        from exposure_engine.agent.policy import Policy

        return Policy.random(seed=1), {"trainer": "test"}

    res = BM.run_style(S.get("noir"), loaded["train_inputs"], loaded["holdout_inputs"], loaded["targets"], cfg,
                       trainer, log=lambda s: None)
    return seen["job"], loaded, res


def test_trainer_gets_raw_like_inputs_and_styled_disjoint_targets(photo_dir, tmp_path):
    job, loaded, res = _run_noir_with_a_recording_trainer(photo_dir, tmp_path, minutes=0.25)
    style = S.get("noir")
    assert job.minutes == 0.25 and job.style == "noir" and len(job.inputs) == len(loaded["train_inputs"])
    for t, p in zip(job.targets, loaded["targets"]):
        np.testing.assert_array_equal(t, style.apply(BM.clean_linear(p.display)))
    for x, p in zip(job.inputs, loaded["train_inputs"]):
        clean = BM.clean_linear(p.display)
        assert x.mean() < 0.75 * clean.mean()  # darkened by 0.5..2.5 EV: RAW-like, not the clean photo
    assert res["training"]["trainer"] == "test"


def test_validation_pairs_are_training_inputs_beside_the_styles_own_render_of_them(photo_dir, tmp_path):
    job, loaded, _ = _run_noir_with_a_recording_trainer(photo_dir, tmp_path, minutes=0.0, validate=2)
    style = S.get("noir")
    pairs = job.validation
    from exposure_engine.imageio.proxy import make_proxy

    assert len(pairs) == 2 and pairs.names == [p.stem for p in loaded["train_inputs"][:2]]
    np.testing.assert_allclose(pairs.inputs[1], make_proxy(job.inputs[1], 64))  # the trainer's own input
    truth = style.apply(BM.clean_linear(loaded["train_inputs"][1].display))
    np.testing.assert_allclose(pairs.references[1], cv2.resize(np.clip(truth, 0, 1), (64, 64),
                                                               interpolation=cv2.INTER_AREA), atol=1e-6)
    assert np.ptp(pairs.references[1], axis=-1).max() < 1e-5  # noir's ground truth is grey


def test_a_training_seed_changes_the_run_not_the_data(photo_dir, tmp_path):
    job, _, _ = _run_noir_with_a_recording_trainer(photo_dir, tmp_path / "a", minutes=0.0, validate=2)
    other, _, _ = _run_noir_with_a_recording_trainer(photo_dir, tmp_path / "b", minutes=0.0, validate=2,
                                                     train_seed=7)
    assert job.seed == 4 and other.seed == 7  # --seed by default, --train-seed when given
    for x, y in zip(job.inputs + job.targets, other.inputs + other.targets):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(job.validation.inputs, other.validation.inputs)
    np.testing.assert_array_equal(job.validation.references, other.validation.references)


def _random_models(root: Path, seeds) -> list[Path]:
    from exposure_engine.agent.policy import Policy

    return [Policy.random(seed=k).save(root / f"seed-{k}" / "noir" / "model") for k in seeds]


def test_best_trainer_picks_the_candidate_with_the_best_validation_psnr(photo_dir, tmp_path):
    from exposure_engine.agent.policy import Policy
    from exposure_engine.training.loop import validation_psnr

    folders = _random_models(tmp_path / "runs", range(4))
    job, _, _ = _run_noir_with_a_recording_trainer(photo_dir, tmp_path / "rec", minutes=0.0, validate=3)
    scores = {str(f): validation_psnr(Policy.load(f), job.validation) for f in folders}
    assert len(set(scores.values())) == 4  # distinct candidates, so the choice means something
    policy, info = BM.best_trainer(str(tmp_path / "runs" / "seed-*" / "{style}" / "model"))(job)
    assert info["model"] == max(scores, key=scores.get)
    assert info["candidates"] == {f: round(v, 3) for f, v in scores.items()}
    assert policy.content_hash == Policy.load(info["model"]).content_hash


def test_best_trainer_needs_validation_pairs_and_a_match(photo_dir, tmp_path):
    _random_models(tmp_path / "runs", [0])
    job, _, _ = _run_noir_with_a_recording_trainer(photo_dir, tmp_path / "rec", minutes=0.0)
    with pytest.raises(BM.EvalInputError, match="--validate"):
        BM.best_trainer(str(tmp_path / "runs" / "*" / "{style}" / "model"))(job)
    job, _, _ = _run_noir_with_a_recording_trainer(photo_dir, tmp_path / "rec2", minutes=0.0, validate=2)
    with pytest.raises(BM.EvalInputError, match="no model folder matches for style 'noir'"):
        BM.make_trainer(f"best:{tmp_path / 'elsewhere' / '{style}'}")(job)  # the --trainer spelling


def test_best_targets_trainer_picks_the_candidate_that_best_develops_the_targets_and_needs_no_pairs(
        photo_dir, tmp_path):
    from exposure_engine.agent.policy import Policy
    from exposure_engine.training.loop import validation_psnr
    from exposure_engine.training.select import DRAWS, draws_of_images

    folders = _random_models(tmp_path / "runs", range(3))
    job, _, _ = _run_noir_with_a_recording_trainer(photo_dir, tmp_path / "rec", minutes=0.0)  # no --validate
    assert job.validation is None
    pairs = draws_of_images(job.targets, [f"{i:04d}.png" for i in range(len(job.targets))], DRAWS)
    scores = {str(f): np.mean([validation_psnr(Policy.load(f), p) for p in pairs]) for f in folders}
    assert len(set(np.round(list(scores.values()), 3))) == 3
    policy, info = BM.make_trainer(f"best-targets:{tmp_path / 'runs' / 'seed-*' / '{style}' / 'model'}")(job)
    assert info["by"] == "targets" and info["model"] == max(scores, key=scores.get)
    assert info["candidates"] == {f: round(v, 3) for f, v in scores.items()}
    assert policy.content_hash == Policy.load(info["model"]).content_hash
    with pytest.raises(BM.EvalInputError, match="best-targets:.*no model folder matches"):
        BM.make_trainer(f"best-targets:{tmp_path / 'elsewhere' / '{style}'}")(job)


@pytest.mark.slow  # a tiny training run inside the bench
def test_bench_with_validation_scores_the_selected_and_the_last_weights(photo_dir, tmp_path):
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"base": "cpu-fast", "widths": [4, 8, 8, 8], "proxy": 16, "head_hidden": 16,
                                "batch": 4, "critic_steps": 1, "critic_steps_boost": 1, "monitor_every": 2,
                                "iterations": 4, "threads": 1}))
    out = tmp_path / "bench"
    assert main(["bench", "quality", "--photos-dir", str(photo_dir), "--out", str(out), "--test", "2", "--size",
                 "96", "--styles", "punchy", "--trainer", f"loop:{tiny}", "--minutes", "5", "--validate", "3"]) == 0
    res = json.loads((out / "results.json").read_text())["styles"]["punchy"]
    assert {"agent", "agent_last_weights"} <= set(res["methods"])
    assert res["training"]["selected_iteration"] in (2, 4)
    assert res["training"]["last_model"].endswith("last")


def test_folds_partition_the_input_half_and_the_last_fold_is_the_ordinary_split(photo_dir):
    paths = sorted(photo_dir.glob("*.png"))
    plain = BM.split(paths, 3, 1)
    inputs = plain["train_inputs"] + plain["holdout_inputs"]
    folds = [BM.fold_split(paths, 3, 3, k) for k in range(3)]
    held = [f["holdout_inputs"] for f in folds]
    assert sorted(p for h in held for p in h) == sorted(inputs)  # every input tested once, no more
    assert sorted(len(h) for h in held) == [1, 2, 2]  # sizes within one of each other
    for f in folds:
        assert f["targets"] == plain["targets"]
        assert f["train_inputs"] == [p for p in inputs if p not in f["holdout_inputs"]]  # the others, in order
    assert BM.fold_split(paths, 3, 3, 2) == BM.split(paths, 3, len(held[2]))
    with pytest.raises(BM.EvalInputError, match="--folds 6: needs 2 <= folds <= the 5 inputs"):
        BM.fold_split(paths, 3, 6, 0)
    with pytest.raises(BM.EvalInputError, match="folds are numbered 0..2"):
        BM.fold_split(paths, 3, 3, 3)


def test_a_cross_validated_bench_trains_one_policy_per_fold_and_scores_every_input(photo_dir, tmp_path):
    from exposure_engine.agent.policy import Policy

    jobs = []

    def trainer(job: BM.TrainingJob):
        jobs.append(job)
        return Policy.random(seed=job.fold), {"trainer": "test", "fold": job.fold}

    cfg = BM.BenchConfig(photos_dir=photo_dir, out_dir=tmp_path / "cv", styles=["noir"], size=96, seed=4, folds=2)
    paths = sorted(photo_dir.glob("*.png"))
    folds = [BM.fold_split(paths, 4, 2, k) for k in range(2)]
    res = BM.run_folds(S.get("noir"), [tuple(BM.load_photos(f[part], 96)[0] for part in ("train_inputs",
                                                                                          "holdout_inputs"))
                                       for f in folds], BM.load_photos(folds[0]["targets"], 96)[0], cfg, trainer,
                       log=lambda s: None)
    assert [j.fold for j in jobs] == [0, 1]
    for job, f in zip(jobs, folds):
        assert job.out_dir == tmp_path / "cv" / "noir" / f"fold-{job.fold}" / "model"
        assert len(job.inputs) == len(f["train_inputs"])  # never the fold's own test inputs
    assert res["training"] == {"folds": [{"trainer": "test", "fold": k, "seconds": res["training"]["folds"][k]
                                          ["seconds"]} for k in range(2)]}
    stems = [p.stem for f in folds for p in f["holdout_inputs"]]
    assert sorted(p.stem for p in (tmp_path / "cv" / "noir" / "sequences").glob("*.json")) == sorted(stems)
    # Pooled: each method is scored once on all folds' test renders; the ceiling is every input's ground truth.
    style = S.get("noir")
    truths = [style.apply(BM.clean_linear(p.display)) for f in folds
              for p in BM.load_photos(f["holdout_inputs"], 96)[0]]
    targets = [style.apply(BM.clean_linear(p.display)) for p in BM.load_photos(folds[0]["targets"], 96)[0]]
    expected = M.intersection_from_statistics(M.set_statistics(truths, 4), M.set_statistics(targets, 4)).mean
    assert res["methods"]["ceiling"]["histogram"]["mean"] == pytest.approx(expected)
    assert len(res["methods"]["exposure_oracle"]["rules"]) == 2
    # Each fold's test inputs are rendered by that fold's policy, so the pooled agent is fold 0's then fold 1's.
    per_fold = []
    for k, f in enumerate(folds):
        test = BM.load_photos(f["holdout_inputs"], 96)[0]
        per_fold += BM.agent_renders(Policy.random(seed=k), [x for x, _ in BM.draws(test, 4, test=True)])[0]
    assert res["methods"]["agent"]["paired"]["psnr"] == pytest.approx(M.paired_metrics(per_fold, truths).psnr)


@pytest.mark.slow  # ~20 s: two folds of a style, every baseline, untrained policies
def test_bench_quality_with_folds_then_one_fold_alone_through_the_cli(photo_dir, tmp_path, capsys):
    out = tmp_path / "cv"
    args = ["bench", "quality", "--photos-dir", str(photo_dir), "--size", "96", "--styles", "punchy",
            "--trainer", "random", "--minutes", "0", "--folds", "2"]
    assert main(args + ["--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    folds = r["split"]["folds"]
    assert len(folds) == 2 and sorted(r["split"]["holdout_inputs"]) == sorted(folds[0] + folds[1])
    assert len(r["split"]["holdout_inputs"]) == 5  # the whole input half of 10 photos is tested
    assert [t["trainer"] for t in r["styles"]["punchy"]["training"]["folds"]] == ["random", "random"]
    assert len(list((out / "punchy" / "sequences").glob("*.json"))) == 5
    md = capsys.readouterr().out
    assert "2-fold cross-validation of 5 inputs (folds of 2, 3" in md and "Training, fold 1:" in md
    # One fold alone is an ordinary bench on that fold's inputs.
    assert main(args + ["--fold", "1", "--out", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert one["split"]["holdout_inputs"] == folds[1] and "folds" not in one["split"]
    assert "; fold 1 of 2" in capsys.readouterr().out


def test_model_paths_name_the_fold_and_a_fold_needs_folds(photo_dir, tmp_path):
    from exposure_engine.agent.policy import Policy

    for k in range(2):
        Policy.random(seed=k).save(tmp_path / "runs" / f"fold-{k}" / "noir" / "model")
    job, _, _ = _run_noir_with_a_recording_trainer(photo_dir, tmp_path / "rec", minutes=0.0)
    spec = f"model:{tmp_path / 'runs' / 'fold-{fold}' / '{style}' / 'model'}"
    with pytest.raises(BM.EvalInputError, match="give --folds"):
        BM.make_trainer(spec)(job)
    job.fold = 1
    policy, info = BM.make_trainer(spec)(job)
    assert info["model"] == str(tmp_path / "runs" / "fold-1" / "noir" / "model")
    saved = [Policy.load(tmp_path / "runs" / f"fold-{k}" / "noir" / "model").content_hash for k in range(2)]
    assert policy.content_hash == saved[1] != saved[0]


def test_bench_quality_refuses_contradictory_fold_options(photo_dir, tmp_path, capsys):
    base = ["bench", "quality", "--photos-dir", str(photo_dir), "--out", str(tmp_path / "o"), "--trainer", "none"]
    assert main(base + ["--folds", "3", "--test", "2"]) == 2
    assert "--test and --folds exclude each other" in capsys.readouterr().err
    assert main(base + ["--fold", "1"]) == 2
    assert "--fold needs --folds K" in capsys.readouterr().err
    assert main(base + ["--folds", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(base + ["--folds", "3", "--fold", "3"]) == 2
    assert "folds are numbered 0..2" in capsys.readouterr().err


def test_the_ceiling_is_perfect_when_test_and_target_photos_coincide(tmp_path):
    # With the style's own renders of the *same* photos as targets, the ceiling must be exactly 100 %.
    photos = [BM.Photo(f"p{i}", photo(i)) for i in range(3)]
    cfg = BM.BenchConfig(photos_dir=tmp_path, out_dir=tmp_path / "b", n_test=3, size=96)
    res = BM.run_style(S.get("faded_matte"), [], photos, photos, cfg, None, log=lambda s: None)
    assert res["methods"]["ceiling"]["histogram"]["mean"] == pytest.approx(100.0)
    assert "agent" not in res["methods"]


def test_exposure_oracle_finds_the_gain_that_undoes_a_constant_exposure():
    # Every input 1.5 stops darker, photos of different brightness: only "+1.5 stops for every photo" (b = 0)
    # restores them all, and the oracle's render is then the style's own render.
    style = S.get("punchy")
    cleans = [photo(i) * s for i, s in enumerate((0.3, 0.6, 1.0, 0.45))]
    lums = [BM.mean_luminance(c * 2.0 ** -1.5) for c in cleans]
    rule = BM.fit_exposure_rule(style, cleans, [-1.5] * 4, lums)
    assert rule == (1.5, 0.0)
    for c, lum in zip(cleans, lums):
        np.testing.assert_allclose(BM.exposure_oracle(style, c, -1.5, lum, rule), style.apply(c), atol=1e-5)


def test_exposure_oracle_normalises_brightness_when_the_photos_are_equally_bright():
    # Equally bright photos darkened by different amounts: full normalisation (b = -1) to their brightness is exact.
    style = S.get("noir")
    base = photo(2)
    target_lum = BM.mean_luminance(base)
    cleans = [base, base[::-1], base[:, ::-1], base[::-1, ::-1]]  # different pictures, the same mean luminance
    evs = [-0.5, -1.0, -2.0, -2.5]
    lums = [BM.mean_luminance(c * np.float32(2.0 ** ev)) for c, ev in zip(cleans, evs)]
    a, b = BM.fit_exposure_rule(style, cleans, evs, lums)
    assert b == -1.0 and a == pytest.approx(np.log2(target_lum), abs=0.051)


def test_oracle_study_reproduces_the_bench_on_the_same_split(photo_dir, tmp_path):
    # The per-image study must score the same test inputs with the same rule as bench quality: its means are the
    # bench's agent and exposure-oracle PSNRs (a random policy, saved, is the bench's "random" trainer).
    from exposure_engine.agent.policy import Policy
    from exposure_engine.evaluation import oracle

    out = tmp_path / "bench"
    assert main(["bench", "quality", "--photos-dir", str(photo_dir), "--out", str(out), "--test", "3", "--size",
                 "96", "--styles", "punchy", "--trainer", "random", "--minutes", "0"]) == 0
    bench = json.loads((out / "results.json").read_text())["styles"]["punchy"]["methods"]
    Policy.random(seed=0).save(tmp_path / "random")
    res = oracle.study(photo_dir, "punchy", str(tmp_path / "random"), n_test=3, size=96, seed=0)
    assert [r["photo"] for r in res["rows"]] == json.loads((out / "results.json").read_text())["split"]["holdout_inputs"]
    assert res["rule"] == bench["exposure_oracle"]["rule"]
    assert res["summary"]["oracle_psnr"] == pytest.approx(bench["exposure_oracle"]["paired"]["psnr"], abs=1e-6)
    assert res["summary"]["agent_psnr"] == pytest.approx(bench["agent"]["paired"]["psnr"], abs=1e-6)
    assert res["summary"]["unpaired_reference_psnr"] == pytest.approx(bench["unpaired_reference"]["paired"]["psnr"],
                                                                      abs=1e-6)
    assert all(math.isfinite(r["agent_brightness_error"]) for r in res["rows"])
    new_columns = ("unpaired_reference_psnr", "agent_brightness_fixed_psnr", "agent_gains_fixed_psnr",
                   "agent_map_brightness_psnr", "agent_reference_colour_psnr")
    assert all(math.isfinite(r[k]) for r in res["rows"] for k in new_columns)
    resp = res["summary"]["brightness_response"]
    assert resp["truth"]["corr"] == pytest.approx(1.0) and set(resp) == {"agent", "oracle", "truth"}
    assert all(r["agent_brightness_error"] == pytest.approx(r["agent_log2_brightness"] - r["truth_log2_brightness"])
               for r in res["rows"])
    # a model trained with the brightness anchor: the map in its config is reported beside the agent (here one
    # that anchors every input one stop above its own brightness)
    Policy.random(seed=0).save(tmp_path / "anchored", extra_config={"training": {"brightness_anchor": {
        "input_levels": [-30.0, 0.0], "target_levels": [-29.0, 1.0]}}})
    res = oracle.study(photo_dir, "punchy", str(tmp_path / "anchored"), n_test=3, size=96, seed=0)
    rows, s = res["rows"], res["summary"]
    assert all(r["anchor_log2_brightness"] == pytest.approx(r["input_log2_brightness"] + 1.0) for r in rows)
    assert s["brightness_response"]["anchor"]["slope"] == pytest.approx(1.0)
    assert s["mean_abs_agent_from_anchor"] == pytest.approx(
        np.mean([abs(r["agent_log2_brightness"] - r["input_log2_brightness"] - 1.0) for r in rows]))


def test_oracle_study_fits_the_agents_program_and_a_given_one_to_the_truth_and_to_the_unpaired_reference(photo_dir,
                                                                                                        tmp_path):
    from exposure_engine import filters as F
    from exposure_engine.agent.policy import Policy
    from exposure_engine.evaluation import oracle

    Policy.random(seed=0).save(tmp_path / "random")
    own = ["exposure", "white_balance", "gamma", "contrast", "saturation"]  # punchy's filters, after the input's
    res = oracle.study(photo_dir, "punchy", str(tmp_path / "random"), n_test=1, size=64, seed=0, program_fit=True,
                       program=own)
    s = res["summary"]
    for r in res["rows"]:
        # the style's own program fitted with pairs gets close to the truth, whatever the random agent chose;
        # fitted to the unpaired reference it can do no better than the reference does against the truth
        assert r["program_fit_psnr"] > max(30.0, r["agent_psnr"])
        assert r["program_reference_fit_psnr"] < r["program_fit_psnr"]
        assert math.isfinite(r["agent_program_fit_psnr"]) and math.isfinite(r["agent_program_reference_fit_psnr"])
        # refitted from its own parameters, each of the agent's steps reports how its parameters moved
        assert len(r["agent_refit_moves"]) == len(r["steps"]) and math.isfinite(r["agent_refit_psnr"])
        assert all(len(m) == F.get(name).n_packed for name, m in r["agent_refit_moves"].items())
    assert s["program_reference_fit_psnr"] == pytest.approx(s["unpaired_reference_psnr"], abs=1.5)
    moves = s["agent_refit_moves"]
    assert sum(m["photos"] for m in moves.values()) == sum(len(r["agent_refit_moves"]) for r in res["rows"])


def test_unpaired_reference_renders_at_the_asked_brightness():
    # render_at_brightness is the reference's exposure: one gain found by bisection, so the style's render lands on
    # the asked log2 brightness, and a photo that already has it comes back as the style's own render.
    style = S.get("punchy")
    photo = np.random.default_rng(0).uniform(0.0, 0.3, (16, 16, 3)).astype(np.float32)
    for target in (-4.0, -2.5, -1.2):
        assert BM.display_log2_brightness(BM.render_at_brightness(style, photo, target)) == pytest.approx(target,
                                                                                                         abs=1e-3)
    own = BM.display_log2_brightness(style.apply(photo))
    np.testing.assert_allclose(BM.render_at_brightness(style, photo, own), style.apply(photo), atol=2e-3)


def test_unpaired_reference_is_the_truth_when_the_input_has_no_colour_error_and_the_map_is_right():
    # Neutral amounts leave the clean photo; a map that sends this input's brightness to the truth's brightness
    # then leaves nothing to differ. A cast in the amounts stays in the reference (it cannot be undone unpaired).
    from exposure_engine.training.anchor import BrightnessAnchor

    style = S.get("punchy")
    display = np.random.default_rng(2).uniform(0.05, 0.95, (16, 16, 3)).astype(np.float32)
    truth = style.apply(BM.clean_linear(display))
    lum, want = 2.0 ** -3.3, BM.display_log2_brightness(truth)
    bmap = BrightnessAnchor([-4.3, -2.3], [want - 1.0, want + 1.0])
    neutral = {"saturation": 1.0, "gains": [1.0, 1.0, 1.0], "ev": -1.7}
    np.testing.assert_allclose(BM.unpaired_reference(style, display, neutral, lum, bmap), truth, atol=3e-3)
    cast = BM.unpaired_reference(style, display, {**neutral, "gains": [1.2, 0.95, 0.8]}, lum, bmap)
    assert BM.display_log2_brightness(cast) == pytest.approx(want, abs=1e-3)
    assert cast[..., 0].mean() > truth[..., 0].mean() and cast[..., 2].mean() < truth[..., 2].mean()


def test_corrected_removes_exactly_the_brightness_or_the_mean_colour_error():
    from exposure_engine.evaluation import metrics as M
    from exposure_engine.evaluation.oracle import corrected
    from exposure_engine.imageio.transfer import linear_to_srgb, srgb_to_linear

    rng = np.random.default_rng(1)
    truth_lin = rng.uniform(0.02, 0.5, (12, 12, 3)).astype(np.float32)
    truth = linear_to_srgb(truth_lin)
    cast = linear_to_srgb(truth_lin * np.array([1.3, 0.9, 0.7], np.float32))  # brightness and colour off
    fixed = corrected(cast, truth, per_channel=False)
    assert BM.display_log2_brightness(fixed) == pytest.approx(BM.display_log2_brightness(truth), abs=1e-3)
    assert M.psnr(fixed, truth) < 40  # the colour error is still there
    np.testing.assert_allclose(corrected(cast, truth, per_channel=True), truth, atol=2e-3)  # a pure per-channel gain
    np.testing.assert_allclose(srgb_to_linear(corrected(truth, truth, per_channel=True)), truth_lin, atol=1e-4)


def test_brightness_response_tells_following_from_flattening_and_inverting():
    from exposure_engine.evaluation.oracle import brightness_response

    inputs = np.array([-6.0, -5.0, -4.0, -3.0])
    truths = 0.5 * inputs - 1.0  # half a stop out per stop in
    same = brightness_response(inputs, truths, truths)
    assert same["slope"] == pytest.approx(0.5) and same["corr"] == pytest.approx(1.0)
    assert same["spread"] == pytest.approx(truths.std())
    flat = brightness_response(inputs, np.full(4, -2.0), truths)  # every output equally bright
    assert flat["slope"] == pytest.approx(0.0, abs=1e-12) and flat["spread"] == 0.0 and math.isnan(flat["corr"])
    inverted = brightness_response(inputs, truths[::-1].copy(), truths)  # brighter inputs come out darker
    assert inverted["slope"] == pytest.approx(-0.5) and inverted["corr"] == pytest.approx(-1.0)


def test_bench_quality_refuses_too_few_photos_and_unknown_styles(tmp_path, capsys):
    few = folder(tmp_path / "few", {"a": photo(1), "b": photo(2), "c": photo(3)})
    assert main(["bench", "quality", "--photos-dir", str(few), "--out", str(tmp_path / "o")]) == 2
    assert "at least 4 photos" in capsys.readouterr().err
    assert main(["bench", "quality", "--photos-dir", str(few), "--out", str(tmp_path / "o"),
                 "--styles", "sepia"]) == 2
    assert "unknown style(s) sepia" in capsys.readouterr().err


@pytest.mark.slow  # runs the real training loop (data cache, networks, a model folder) for a few seconds
def test_the_training_loop_plugs_into_the_bench(photo_dir, tmp_path):
    cfg = BM.BenchConfig(photos_dir=photo_dir, out_dir=tmp_path / "b", styles=["punchy"], n_test=2, size=96,
                         minutes=0.05, trainer="loop")
    res = BM.run(cfg, log=lambda s: None)["styles"]["punchy"]
    assert res["training"]["trainer"] == "loop" and res["training"]["recipe"] == "cpu-fast"
    assert res["training"]["stopped_by"] in ("minutes", "iterations")
    assert (tmp_path / "b" / "punchy" / "model").is_dir()  # the trained model folder, loadable by Policy.load
    assert len(list((tmp_path / "b" / "punchy" / "sequences").glob("*.json"))) == 2


@pytest.mark.slow
def test_bench_training_resumes_from_its_checkpoint_and_models_are_found_per_style(photo_dir, tmp_path, capfd):
    from dataclasses import replace

    cfg = BM.BenchConfig(photos_dir=photo_dir, out_dir=tmp_path / "b", styles=["punchy"], n_test=2, size=96,
                         minutes=0.05, trainer="loop")
    first = BM.run(cfg, log=lambda s: None)["styles"]["punchy"]["training"]["iterations"]
    capfd.readouterr()
    again = BM.run(replace(cfg, resume=True), log=lambda s: None)["styles"]["punchy"]["training"]
    assert f"at iteration {first}" in capfd.readouterr().err  # continued, not restarted
    assert again["iterations"] > first
    # {style} in a model path: each style's own model, here the one just trained
    res = BM.run(replace(cfg, trainer=f"model:{tmp_path / 'b' / '{style}' / 'model'}",
                         out_dir=tmp_path / "rescored"), log=lambda s: None)["styles"]["punchy"]
    assert res["training"]["model"] == str(tmp_path / "b" / "punchy" / "model")
    assert res["methods"]["agent"] == BM.run(replace(cfg, trainer=f"model:{tmp_path / 'b' / 'punchy' / 'model'}",
                                                     out_dir=tmp_path / "direct"),
                                             log=lambda s: None)["styles"]["punchy"]["methods"]["agent"]


def test_unknown_recipe_is_refused_before_any_work(photo_dir, tmp_path, capsys):
    assert main(["bench", "quality", "--photos-dir", str(photo_dir), "--out", str(tmp_path / "o"),
                 "--trainer", "loop:turbo"]) == 2
    assert "unknown recipe 'turbo'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_with_gains_moves_an_output_to_a_brightness_or_to_another_images_mean_colour_and_nothing_else():
    from exposure_engine.evaluation.oracle import with_gains
    from exposure_engine.imageio.transfer import linear_to_srgb, srgb_to_linear
    from exposure_engine.training import error_split as E

    rng = np.random.default_rng(3)
    lin = rng.uniform(0.02, 0.4, (12, 12, 3)).astype(np.float32)
    out = linear_to_srgb(lin)
    brighter = with_gains(out, brightness=BM.display_log2_brightness(out) + 0.5)
    assert BM.display_log2_brightness(brighter) == pytest.approx(BM.display_log2_brightness(out) + 0.5, abs=1e-3)
    np.testing.assert_allclose(srgb_to_linear(brighter), lin * 2 ** 0.5, rtol=2e-3, atol=1e-5)  # one gain for all
    like = linear_to_srgb(lin[::-1] * np.array([1.4, 1.0, 0.6], np.float32))  # other pixels, a warm cast
    warm = with_gains(out, like=like)
    chroma = lambda im: E.log2_chroma(E.channel_means(srgb_to_linear(im)))  # noqa: E731
    np.testing.assert_allclose(chroma(warm), chroma(like), atol=1e-3)
    assert BM.display_log2_brightness(warm) == pytest.approx(BM.display_log2_brightness(out), abs=1e-3)


def test_fit_program_recovers_a_program_from_its_render_and_a_program_missing_a_step_fits_worse():
    from exposure_engine.evaluation.oracle import fit_program
    from exposure_engine.renderer import render

    rng = np.random.default_rng(4)
    lin = np.ascontiguousarray(rng.uniform(0.005, 0.2, (40, 56, 3)), np.float32)
    seq = {"format": "exposure-edit-sequence", "version": 1,
           "steps": [{"filter": "exposure", "params": {"ev": 1.8}}, {"filter": "gamma", "params": {"gamma": 0.5}},
                     {"filter": "saturation", "params": {"amount": 0.4}}]}
    target = render(lin, seq)
    fitted, params = fit_program(lin, target, ["exposure", "gamma", "saturation"], work_size=64, steps=400)
    assert fitted.shape == target.shape and fitted.dtype == np.float32
    assert M.psnr(fitted, target) > 40.0  # the program itself: the fit finds its parameters
    np.testing.assert_allclose(np.concatenate(params), [1.8, 0.5, 0.4], atol=2e-3)
    assert M.psnr(fit_program(lin, target, ["exposure", "saturation"], work_size=64, steps=400)[0], target) < 30.0
    # from given parameters: a start already at the answer stays there; a wrong one is pulled to it
    for init in ([[1.8], [0.5], [0.4]], [[0.5], [1.5], [0.9]]):
        _, params = fit_program(lin, target, ["exposure", "gamma", "saturation"], init=init, work_size=64,
                                steps=600)
        np.testing.assert_allclose(np.concatenate(params), [1.8, 0.5, 0.4], atol=2e-3)
