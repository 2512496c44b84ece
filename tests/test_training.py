"""Training: data and cache, replay memory, the two updates, the loop end to end, resume after kill -9, and
two processes through torchrun. Everything runs a tiny architecture on synthetic photos written by the tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from exposure_engine import filters as F
from exposure_engine.agent.networks import Actor, Arch, Discriminator, Value
from exposure_engine.agent.policy import Policy
from exposure_engine.cli import main as cli_main
from exposure_engine.imageio.transfer import srgb_to_linear
from exposure_engine.training import data as D
from exposure_engine.training import recipes
from exposure_engine.training.loop import TrainConfig, agent_step, critic_loss, train
from exposure_engine.training.replay import ImagePool, StatePool
from exposure_engine.training.report import proxy_histogram_intersection, write_report

TINY = dict(widths=(4, 8, 8, 8), proxy=16, head_hidden=16, batch=4, critic_steps=1, critic_steps_boost=2,
            boost_first=1, boost_every=1000, pool_size=8, fake_pool_size=8, threads=1, monitor_every=3)
TINY_RECIPE = recipes.get("cpu-fast", **TINY)
# the paper's reward, for the tests that check it term by term (cpu-fast adds the brightness anchor: test_anchor.py)
PAPER_REWARD = recipes.get("cpu-fast", **TINY, brightness_anchor=0.0)
REPO = Path(__file__).resolve().parents[1]


def _scene(seed: int, h: int = 60, w: int = 90) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 7.0 + seed)], -1)
    return np.clip(base * rng.uniform(0.5, 1.0, 3) + 0.03 * rng.standard_normal((h, w, 3)), 0, 1)


def write_folders(root: Path, n_inputs: int = 3, n_targets: int = 3) -> tuple[Path, Path]:
    """Inputs as linear 16-bit TIFFs (dark), targets as bright 8-bit PNGs."""
    ins, tgs = root / "inputs", root / "targets"
    ins.mkdir(parents=True)
    tgs.mkdir(parents=True)
    for i in range(n_inputs):
        tifffile.imwrite(ins / f"in{i}.tif", np.round(_scene(i) * 0.15 * 65535).astype(np.uint16))
    for i in range(n_targets):
        cv2.imwrite(str(tgs / f"t{i}.png"), np.round(_scene(100 + i)[..., ::-1] * 255).astype(np.uint8))
    return ins, tgs


def tiny_recipe_file(path: Path, **extra) -> Path:
    d = {"base": "cpu-fast", **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}, **extra}
    path.write_text(json.dumps(d))
    return path


def _env() -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- recipes ---------------------------------------------------------------------------------------------------


def test_paper_recipe_holds_the_reference_hyper_parameters():
    p = recipes.get("paper")
    assert (p.widths, p.proxy, p.batch, p.iterations, p.critic_steps, p.critic_steps_boost) == \
        ((32, 64, 128, 256), 64, 64, 20_000, 5, 100)
    assert (p.lr_d, p.actor_lr_ratio, p.value_lr_ratio, p.betas, p.gp_weight) == (5e-5, 0.3, 10.0, (0.5, 0.9), 10.0)
    assert (p.reward_scale, p.entropy_weight, p.reuse_penalty, p.n_steps, p.dropout) == (0.05, 0.05, 1.0, 5, 0.5)


def test_recipe_file_overrides_a_base_and_rejects_unknown_fields(tmp_path):
    r = recipes.get(str(tiny_recipe_file(tmp_path / "tiny.json")))
    assert r.widths == (4, 8, 8, 8) and r.lr_d == recipes.CPU_FAST.lr_d and r.name == "tiny"
    (tmp_path / "bad.json").write_text('{"batchsize": 3}')
    with pytest.raises(KeyError, match="batchsize"):
        recipes.get(str(tmp_path / "bad.json"))
    with pytest.raises(KeyError, match="unknown recipe"):
        recipes.get("fastest")


# --- data ------------------------------------------------------------------------------------------------------


def test_crops_are_cached_by_file_hash_and_reused(tmp_path, monkeypatch):
    ins, tgs = write_folders(tmp_path)
    files = D.list_images(ins)
    a = D.build_crops(files, "input", cache_dir=tmp_path / "cache", seed=0, progress=False)
    assert a.crops.shape == (3 * 4, 80, 80, 3) and a.crops.dtype == np.float32
    assert len(list((tmp_path / "cache").glob("input-*.npz"))) == 3

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(D, "load_input", no_decoding)
    b = D.build_crops(files, "input", cache_dir=tmp_path / "cache", seed=0, progress=False)
    np.testing.assert_array_equal(a.crops, b.crops)


def test_linear_tiff_inputs_are_read_as_linear_and_targets_stay_display_encoded(tmp_path):
    ins, tgs = write_folders(tmp_path, 1, 1)
    lin = D.load_input(ins / "in0.tif", unprocess_seed=None)
    np.testing.assert_allclose(lin, _scene(0) * 0.15, atol=1 / 65535)
    tgt = D.load_target(tgs / "t0.png")
    np.testing.assert_allclose(tgt, _scene(100), atol=1 / 255)


def test_raw_inputs_are_developed_linearly_by_libraw(tmp_path):
    from imagegen import write_test_dng

    scene = (_scene(3, 64, 96) * 0.3).astype(np.float32)
    write_test_dng(tmp_path / "x.dng", scene)
    lin = D.load_input(tmp_path / "x.dng", unprocess_seed=None)
    assert lin.shape == (32, 48, 3)  # half size
    # linear development: the mean level of each channel comes back (demosaicing and WB differences aside)
    np.testing.assert_allclose(lin.reshape(-1, 3).mean(0), scene.reshape(-1, 3).mean(0), rtol=0.08)


def test_a_photo_input_needs_unprocess_and_a_broken_file_is_skipped_with_its_reason(tmp_path):
    ins, tgs = write_folders(tmp_path, 1, 2)
    with pytest.raises(D.DataError, match=r"t0\.png.*--unprocess"):
        D.load_input(tgs / "t0.png", unprocess_seed=None)
    unproc = D.load_input(tgs / "t0.png", unprocess_seed=1)
    assert unproc.mean() < srgb_to_linear(D.load_target(tgs / "t0.png")).mean()
    (tgs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = D.build_crops(D.list_images(tgs), "target", cache_dir=None, seed=0, progress=False)
    assert len(ds.files) == 2 and len(ds.skipped) == 1 and "broken.png" in ds.skipped[0]
    (tgs / "t0.png").unlink()
    (tgs / "t1.png").unlink()
    with pytest.raises(D.DataError, match="no usable target"):
        D.build_crops(D.list_images(tgs), "target", cache_dir=None, seed=0, progress=False)


def test_split_is_seeded_disjoint_and_holds_out_evaluation_inputs():
    files = [Path(f"p{i:03d}.jpg") for i in range(50)]
    a, b = D.split_photos(files, 0, 5), D.split_photos(files, 0, 5)
    assert a == b
    assert len(a["holdout_inputs"]) == 5 and len(a["train_inputs"]) == 20 and len(a["targets"]) == 25
    groups = [set(v) for v in a.values()]
    assert sum(len(g) for g in groups) == 50 and len(set().union(*groups)) == 50
    assert D.split_photos(files, 1, 5) != a


def test_proxy_sampler_returns_64x64_windows_of_the_crops_possibly_flipped():
    rng = np.random.default_rng(0)
    crops = rng.random((2, 80, 80, 3)).astype(np.float32)
    s = D.ProxySampler(crops, 64, rng)
    batch = s.sample(16)
    assert batch.shape == (16, 3, 64, 64)
    src = torch.from_numpy(crops.transpose(0, 3, 1, 2))
    for img in batch:
        found = any(torch.equal(img, w) or torch.equal(img.flip(-1), w)
                    for c in src for y in range(17) for x in range(17) for w in [c[:, y:y + 64, x:x + 64]])
        assert found


def test_input_jitter_recipe_field_reaches_the_input_sampler_and_is_validated(tmp_path):
    (tmp_path / "j.json").write_text('{"input_jitter": [0.5, 0.1, 0.2]}')
    r = recipes.get(str(tmp_path / "j.json"))
    assert r.input_jitter == (0.5, 0.1, 0.2) and recipes.Recipe.from_dict(r.to_dict()) == r
    assert not recipes.get("cpu-fast").jitter and not recipes.get("paper").jitter  # both recipes: off
    with pytest.raises(ValueError, match="input_jitter"):
        replace(r, input_jitter=(0.5, 0.1))
    with pytest.raises(ValueError, match="input_jitter"):
        replace(r, input_jitter=(0.5, 0.1, 1.5))
    crops = np.full((2, 80, 80, 3), 0.1, np.float32)
    plain = D.ProxySampler(crops, 64, np.random.default_rng(0)).sample(8)
    jittered = D.ProxySampler(crops, 64, np.random.default_rng(0), augment=r.jitter).sample(8)
    assert torch.equal(plain, torch.full_like(plain, 0.1))
    means = jittered.mean((1, 2, 3))
    assert means.std() > 0.005 and not torch.allclose(jittered[:, 0], jittered[:, 2])


# --- replay memory --------------------------------------------------------------------------------------------


def test_state_pool_replaces_finished_states_with_fresh_inputs():
    rng = np.random.default_rng(0)
    fresh = lambda n: torch.full((n, 3, 4, 4), 0.1)
    pool = StatePool(6, fresh, n_steps=5, rng=rng)
    idx, img, step, used = pool.sample(3)
    assert (step == 0).all() and (used == 0).all()
    new_step = torch.tensor([1, 5, 5])
    new_used = torch.zeros(3, 8)
    new_used[:, 2] = 1
    finished = pool.put_back(idx, torch.full((3, 3, 4, 4), 0.7), new_step, new_used)
    assert finished.shape == (2, 3, 4, 4) and torch.allclose(finished, torch.tensor(0.7))
    assert pool.step[idx[0]] == 1 and pool.used[idx[0], 2] == 1 and torch.allclose(pool.images[idx[0]], torch.tensor(0.7))
    for i in idx[1:]:  # finished: a fresh state again
        assert pool.step[i] == 0 and pool.used[i].sum() == 0 and torch.allclose(pool.images[i], torch.tensor(0.1))


def test_image_pool_keeps_the_most_recent_images():
    pool = ImagePool(3, np.random.default_rng(0))
    with pytest.raises(RuntimeError):
        pool.sample(1)
    pool.add(torch.arange(5.0).reshape(5, 1, 1, 1))
    assert len(pool) == 3
    assert set(pool.sample(50).flatten().tolist()) == {2.0, 3.0, 4.0}


# --- the updates ----------------------------------------------------------------------------------------------


def test_critic_learns_to_score_targets_above_fakes():
    torch.manual_seed(0)
    arch = Arch.from_dict(recipes.get("cpu-fast", **TINY).arch_dict())
    disc = Discriminator(arch)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))
    real = torch.rand(8, 3, 32, 32) * 0.3 + 0.6  # bright (the networks accept any square size)
    fake = torch.rand(8, 3, 32, 32) * 0.1  # dark
    for _ in range(25):
        loss, logs = critic_loss(disc, real, fake, 10.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert logs["wasserstein"] > 0 and float(disc(real).mean()) > float(disc(fake).mean())


def _zero_critic(arch: Arch) -> Discriminator:
    d = Discriminator(arch)
    for p in d.parameters():
        torch.nn.init.zeros_(p)
    return d


def test_reusing_a_filter_costs_one_in_reward():
    torch.manual_seed(0)
    arch = Arch.from_dict(PAPER_REWARD.arch_dict())
    actor, value, disc = Actor(arch), Value(arch), _zero_critic(arch)  # D constant: no critic reward
    img = torch.rand(16, 3, 64, 64) * 0.2
    step = torch.full((16,), 2, dtype=torch.long)
    _, _, _, _, fresh = agent_step(actor, value, disc, img, step, torch.zeros(16, 8), PAPER_REWARD, 0.5)
    _, _, _, _, reused = agent_step(actor, value, disc, img, step, torch.ones(16, 8), PAPER_REWARD, 0.5)
    assert fresh["reuse"] == 0 and reused["reuse"] == 1
    # entropy penalty <= 0.5 * 0.05 * ln 8 ~ 0.052; no over-exposure on a dark image
    assert -0.06 < fresh["reward"] <= 0 and -1.06 < reused["reward"] <= -1.0


def test_agent_step_trains_actor_and_value_but_never_the_critic():
    torch.manual_seed(1)
    arch = Arch.from_dict(PAPER_REWARD.arch_dict())
    actor, value, disc = Actor(arch), Value(arch), Discriminator(arch)
    img = torch.rand(8, 3, 64, 64) * 0.2
    loss, new_img, new_step, new_used, logs = agent_step(actor, value, disc, img, torch.zeros(8, dtype=torch.long),
                                                         torch.zeros(8, 8), PAPER_REWARD, 0.0)
    loss.backward()
    assert all(p.grad is None for p in disc.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.heads.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.select.parameters())
    assert all(p.grad is not None for p in value.parameters())
    assert (new_step == 1).all() and (new_used.sum(1) == 1).all() and not new_img.requires_grad
    assert sum(logs["usage"]) == 8


def test_from_greedy_from_on_training_applies_the_likeliest_unused_filter_as_inference_does():

    torch.manual_seed(2)
    arch = Arch.from_dict(PAPER_REWARD.arch_dict())
    actor, value, disc = Actor(arch), Value(arch), _zero_critic(arch)
    actor.eval()  # no dropout: the same pi1 in every call here
    img, step = torch.rand(32, 3, 64, 64) * 0.2, torch.full((32,), 1, dtype=torch.long)
    used = torch.zeros(32, 8)
    used[:, 0] = 1.0  # exposure already applied
    with torch.no_grad():
        probs, _ = actor(img, step, used)
    expect = (probs * (1.0 - used)).argmax(1)
    greedy = replace(PAPER_REWARD, greedy_from=0.8)
    for progress, must_match in ((0.8, True), (0.95, True), (0.5, False)):
        _, _, _, new_used, _ = agent_step(actor, value, disc, img, step, used, greedy, progress)
        chosen = (new_used - used).argmax(1)
        assert torch.equal(chosen, expect) == must_match  # a draw from 8 filters on 32 rows: never all the argmax
    with pytest.raises(ValueError, match="greedy_from"):
        replace(PAPER_REWARD, greedy_from=1.5)


def test_expected_choice_gradient_scores_each_filter_as_if_it_had_been_chosen():
    """choice_gradient="expected": Q(s, a) of every filter, each computed as the sampled path would if a were drawn."""
    from exposure_engine.agent.networks import apply_chosen
    from exposure_engine.training.loop import expected_q

    torch.manual_seed(2)
    arch = Arch.from_dict(PAPER_REWARD.arch_dict())
    actor, value, disc = Actor(arch), Value(arch), Discriminator(arch)
    img = torch.rand(6, 3, 64, 64) * 1.3  # some pixels over 1: the over-exposure term counts
    used = (torch.rand(6, 8) < 0.3).float()
    for step_no in (1, PAPER_REWARD.n_steps - 1):  # a middle step (V(s') counts) and the last (V(s') = 0)
        step = torch.full((6,), step_no, dtype=torch.long)
        with torch.no_grad():
            _, packed_all = actor(img, step, used)
            d_in = disc(img)
            q = expected_q(disc, value, img, d_in, used, step + 1, step + 1 >= PAPER_REWARD.n_steps, packed_all,
                           PAPER_REWARD)
            for a in range(8):
                ch = torch.full((6,), a, dtype=torch.long)
                out = apply_chosen(img, ch, packed_all[:, a])
                u = used.clone()
                u[:, a] = 1.0
                v_next = value(out, step + 1, u) * (step_no + 1 < PAPER_REWARD.n_steps)
                r = (0.05 * (disc(out) - d_in) - torch.clamp(out - 1, min=0).pow(2).flatten(1).mean(1)
                     - used[:, a])
                torch.testing.assert_close(q[:, a], r + v_next, rtol=1e-4, atol=1e-5)


def test_expected_choice_gradient_raises_the_expected_q_with_no_sampling_noise():
    """One exact expected-gradient step on pi1 raises sum_a pi1(a) Q(s, a) by the same amount whichever filters
    were sampled (REINFORCE's step would depend on the sample)."""
    from exposure_engine.training.loop import expected_q

    arch = Arch.from_dict(PAPER_REWARD.arch_dict())

    class GreyCritic(torch.nn.Module):  # D = -(colourfulness): filters differ clearly in what they gain
        def forward(self, x):
            return -20.0 * (x - x.mean(1, keepdim=True)).abs().flatten(1).mean(1)

    disc = GreyCritic()
    img = torch.rand(16, 3, 64, 64) * 0.5
    step, used = torch.zeros(16, dtype=torch.long), torch.zeros(16, 8)
    recipe = recipes.get("cpu-fast", **TINY, choice_gradient="expected", entropy_weight=0.0,
                         brightness_anchor=0.0)
    gains = []
    for sample_seed in range(3):
        torch.manual_seed(0)
        actor, value = Actor(arch).eval(), Value(arch)  # no dropout: the sampled filters are all that differ
        with torch.no_grad():
            probs, packed_all = actor(img, step, used)
            q = expected_q(disc, value, img, disc(img), used, step + 1, step + 1 >= recipe.n_steps, packed_all,
                           recipe)
            before = float((probs * q).sum(1).mean())
        opt = torch.optim.SGD(actor.select.parameters(), lr=0.05)  # pi1's head only: pi2 stays put
        torch.manual_seed(100 + sample_seed)
        loss, *_ = agent_step(actor, value, disc, img, step, used, recipe, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            gains.append(float((actor(img, step, used)[0] * q).sum(1).mean()) - before)
    assert min(gains) > 0
    assert max(gains) - min(gains) <= 1e-6 * max(gains)


def test_choice_gradient_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="choice_gradient"):
        recipes.get("cpu-fast", choice_gradient="greedy")
    with pytest.raises(KeyError, match="bad.json.*choice_gradient"):
        recipes.get(str(tiny_recipe_file(tmp_path / "bad.json", choice_gradient="greedy")))


# --- the loop -------------------------------------------------------------------------------------------------


def _tiny_config(tmp_path: Path, out: str, iterations: int) -> TrainConfig:
    ins, tgs = tmp_path / "inputs", tmp_path / "targets"
    if not ins.exists():
        write_folders(tmp_path)
    return TrainConfig(inputs=D.list_images(ins), targets=D.list_images(tgs), out=tmp_path / out, recipe=TINY_RECIPE,
                       iterations=iterations, seed=0, checkpoint_every=5, progress=False, name="tiny")


def test_training_end_to_end_writes_a_loadable_model_history_and_report(tmp_path):
    summary = train(_tiny_config(tmp_path, "m", 6))
    assert {k: summary[k] for k in ("iterations", "stopped_by", "world_size")} == \
        {"iterations": 6, "stopped_by": "iterations", "world_size": 1}
    out = tmp_path / "m"
    pol = Policy.load(out)
    assert pol.name == "tiny" and pol.arch.widths == (4, 8, 8, 8)
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["recipe"]["widths"] == [4, 8, 8, 8] and cfg_json["training"]["iterations"] == 6
    assert torch.load(out / "checkpoint.pt", weights_only=False)["iteration"] == 6
    hist = json.loads((out / "history.json").read_text())
    assert [h["iteration"] for h in hist["history"]] == [6]
    assert sum(hist["history"][0]["usage"]) == 6 * 4  # one choice per state of the batch per iteration
    assert [m["iteration"] for m in hist["monitor"]] == [3, 6]
    assert {p.name for p in (out / "report").iterdir()} == {"losses.png", "reward.png", "filter_usage.png",
                                                            "histogram_intersection.png"}
    assert len(pol.predict(np.full((20, 20, 3), 0.1, np.float32), seed=0)[0].sequence.steps) == 5

def test_history_and_report_are_refreshed_at_checkpoints_while_training_runs(tmp_path, monkeypatch):
    # A long run (the paper recipe takes hours on a CPU) can be watched while it trains, and a killed one keeps
    # its curves: at a checkpoint, history.json and report/ are rewritten (at most every PROGRESS_EVERY_S).
    from exposure_engine.training import loop as L
    from exposure_engine.training import report as R

    seen = []  # (history rows, monitor rows, history.json's rows) at each report refresh
    real = R.write_report

    def spy(history, monitor, folder):
        on_disk = json.loads((tmp_path / "m" / "history.json").read_text())["history"]
        seen.append((len(history), len(monitor), len(on_disk)))
        return real(history, monitor, folder)

    monkeypatch.setattr(R, "write_report", spy)
    monkeypatch.setattr(L, "PROGRESS_EVERY_S", 0.0)
    cfg = _tiny_config(tmp_path, "m", 25)
    cfg.checkpoint_every = 10
    train(cfg)
    # checkpoints at 10 and 20 (history rows every 10 iterations, monitor every 3), then the end at 25
    assert seen == [(1, 3, 1), (2, 6, 2), (3, 9, 3)]
    assert (tmp_path / "m" / "report" / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    seen.clear()
    monkeypatch.setattr(L, "PROGRESS_EVERY_S", 3600.0)
    train(_tiny_config(tmp_path, "n", 25))  # checkpoints every 5: only the first one and the end refresh
    assert [s[0] for s in seen] == [0, 3]



def test_ema_recipe_saves_the_moving_average_of_the_actor_and_resumes_it(tmp_path):
    # recipe.ema > 0: the shipped weights are the Polyak average (decay d per actor step), not the last iterate;
    # the checkpoint keeps both, and a resumed run continues the same average.

    cfg = _tiny_config(tmp_path, "m", 4)
    cfg.recipe = replace(TINY_RECIPE, ema=0.5)
    train(cfg)
    ck = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=False)
    saved = torch.load(tmp_path / "m" / "policy.pt", weights_only=True)
    assert ck["ema_actor"] is not None
    for k, v in saved.items():
        torch.testing.assert_close(v, ck["ema_actor"][k])
    assert any(not torch.equal(saved[k], ck["actor"][k]) for k in saved)  # the average lags the iterate
    cfg2 = _tiny_config(tmp_path, "m", 6)
    cfg2.recipe, cfg2.resume = replace(TINY_RECIPE, ema=0.5), True
    before = {k: v.clone() for k, v in ck["ema_actor"].items()}
    train(cfg2)
    ck2 = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=False)
    # two more steps of lerp(0.5) from the resumed average: every weight moved towards the iterate
    assert ck2["iteration"] == 6 and any(not torch.equal(before[k], ck2["ema_actor"][k]) for k in before)


# --- model selection by paired validation (train --split-from) ------------------------------------------------


def _finished_photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"p{i}.jpg"), np.round(_scene(200 + i)[..., ::-1] * 255).astype(np.uint8))
    return D.list_images(folder, kinds=("photo",))


def test_validation_pairs_are_new_raw_like_draws_of_each_photo_beside_its_finished_original(tmp_path):
    files = _finished_photos(tmp_path / "ph", 3)
    (tmp_path / "ph" / "broken.jpg").write_bytes(b"not a jpeg")
    pairs = D.validation_pairs(D.list_images(tmp_path / "ph", kinds=("photo",)), seed=0)
    assert pairs.names == [f.name for f in files]  # the broken file is skipped, not fatal
    assert pairs.inputs.shape == pairs.references.shape == (3, 64, 64, 3)
    srgb = D.read_photo_srgb(files[1])
    np.testing.assert_allclose(pairs.references[1], cv2.resize(srgb, (64, 64), interpolation=cv2.INTER_AREA),
                               atol=1e-6)
    # RAW-like: darker than the original (exposure -2.5..-0.5 EV below the inverse tone + sRGB curves)
    assert pairs.inputs.mean() < 0.5 * pairs.references.mean()
    # a draw of its own: not the input training makes of the same file with the same seed
    train_input = D.load_input(files[1], unprocess_seed=0)
    from exposure_engine.imageio.proxy import make_proxy
    assert not np.allclose(make_proxy(train_input, 64), pairs.inputs[1], atol=1e-3)
    again = D.validation_pairs(files, seed=0)
    np.testing.assert_array_equal(again.inputs, pairs.inputs)  # seeded
    assert not np.array_equal(D.validation_pairs(files, seed=1).inputs, pairs.inputs)
    with pytest.raises(D.DataError, match="no readable photo"):
        D.validation_pairs([tmp_path / "ph" / "broken.jpg"], seed=0)


def test_validation_pairs_of_photos_in_memory_are_those_of_their_files_by_name(tmp_path):
    files = _finished_photos(tmp_path / "ph", 2)
    photos = [D.read_photo_srgb(f) for f in files]
    from_files = D.validation_pairs(files, seed=3)
    in_memory = D.validation_pairs_of(photos, [f.name for f in files], seed=3)
    np.testing.assert_array_equal(in_memory.inputs, from_files.inputs)
    np.testing.assert_array_equal(in_memory.references, from_files.references)
    # the draw follows the name, not the position: swapped names swap the draws
    swapped = D.validation_pairs_of(photos[::-1], [f.name for f in files][::-1], seed=3)
    np.testing.assert_array_equal(swapped.inputs[::-1], from_files.inputs)


def test_validation_psnr_is_the_mean_per_image_psnr_of_the_mean_edits():
    from exposure_engine.evaluation.metrics import psnr
    from exposure_engine.training.loop import validation_psnr

    pol = Policy.random(seed=3)
    rng = np.random.default_rng(0)
    pairs = D.ValidationPairs(rng.uniform(0, 0.2, (4, 64, 64, 3)).astype(np.float32),
                              rng.uniform(0, 1, (4, 64, 64, 3)).astype(np.float32), list("abcd"))
    want = np.mean([psnr(np.clip(pol.predict(pairs.inputs[i])[0].proxies[-1], 0, 1), pairs.references[i])
                    for i in range(4)])
    assert validation_psnr(pol, pairs) == pytest.approx(want, abs=1e-3)


def test_a_validated_run_saves_the_best_validated_weights_and_keeps_them_across_resume(tmp_path):

    cfg = _tiny_config(tmp_path, "m", 9)
    cfg.recipe = replace(TINY_RECIPE, ema=0.5)
    cfg.validation = D.validation_pairs(_finished_photos(tmp_path / "ph", 3), seed=0)
    cfg.snapshots = True
    summary = train(cfg)
    out = tmp_path / "m"
    monitor = json.loads((out / "history.json").read_text())["monitor"]
    assert [m["iteration"] for m in monitor] == [3, 6, 9] and all("val_psnr" in m for m in monitor)
    best = max(monitor, key=lambda m: m["val_psnr"])
    sel = json.loads((out / "config.json").read_text())["training"]["selection"]
    assert sel["rule"] == "best validation PSNR" and sel["iteration"] == best["iteration"] == \
        summary["selected_iteration"]
    assert sel["val_psnr"] == pytest.approx(best["val_psnr"], abs=1e-3)
    # what was saved is the snapshot of the selected iteration, bit for bit; every monitor step has a snapshot
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["000003", "000006", "000009"]
    snap = Policy.load(out / "snapshots" / f"{best['iteration']:06d}")
    assert Policy.load(out).content_hash == snap.content_hash
    assert snap.config["metrics"]["monitor"]["val_psnr"] == pytest.approx(best["val_psnr"])
    assert (out / "report" / "validation_psnr.png").is_file()
    # the checkpoint keeps the last iterate (to continue training) and the best weights (to keep selecting)
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["best"]["iteration"] == best["iteration"]
    cfg2 = _tiny_config(tmp_path, "m", 12)
    cfg2.recipe, cfg2.resume, cfg2.validation = cfg.recipe, True, cfg.validation
    train(cfg2)
    monitor2 = json.loads((out / "history.json").read_text())["monitor"]
    best2 = max(monitor2, key=lambda m: m["val_psnr"])
    assert [m["iteration"] for m in monitor2] == [3, 6, 9, 12]
    assert json.loads((out / "config.json").read_text())["training"]["selection"]["iteration"] == best2["iteration"]


def test_train_split_from_validates_on_the_input_half_unless_told_not_to(tmp_path):
    _finished_photos(tmp_path / "ph", 10)
    recipe = str(tiny_recipe_file(tmp_path / "r.json"))
    common = ["train", "--split-from", str(tmp_path / "ph"), "--holdout", "1", "--recipe", recipe,
              "--iterations", "3", "--no-progress"]
    assert cli_main([*common, "--out", str(tmp_path / "v")]) == 0
    training = json.loads((tmp_path / "v" / "config.json").read_text())["training"]
    assert training["selection"]["rule"] == "best validation PSNR"
    # the validation photos are the training inputs (4 of the 5 input-half photos), never the held-out one
    assert training["selection"]["n_validation"] == len(training["split"]["train_inputs"]) == 4
    assert cli_main([*common, "--out", str(tmp_path / "n"), "--no-validation"]) == 0
    assert json.loads((tmp_path / "n" / "config.json").read_text())["training"]["selection"] == {"rule": "last"}


def test_snapshots_are_scored_on_the_held_out_photos_beside_their_validation_psnr(tmp_path):
    from exposure_engine.training.holdout import evaluate_snapshots

    _finished_photos(tmp_path / "ph", 10)
    assert cli_main(["train", "--split-from", str(tmp_path / "ph"), "--holdout", "2", "--out", str(tmp_path / "v"),
                     "--recipe", str(tiny_recipe_file(tmp_path / "r.json")), "--iterations", "6", "--snapshots",
                     "--no-progress"]) == 0
    rows = evaluate_snapshots(tmp_path / "v", tmp_path / "ph", plot=tmp_path / "curve.png")
    with pytest.raises(ValueError, match="no snapshots"):
        evaluate_snapshots(tmp_path / "no-such-run", tmp_path / "ph")
    assert [r["iteration"] for r in rows] == [3, 6]
    assert all(np.isfinite(r["test_psnr"]) and r["val_psnr"] is not None for r in rows)
    assert (tmp_path / "curve.png").is_file()
    # the same held-out inputs as the model card's evaluation: the selected snapshot scores what the model does
    from exposure_engine.training.holdout import evaluate_holdout
    chosen = json.loads((tmp_path / "v" / "config.json").read_text())["training"]["selection"]["iteration"]
    model = evaluate_holdout(tmp_path / "v", tmp_path / "ph")["methods"]["model"]
    row = next(r for r in rows if r["iteration"] == chosen)
    assert row["test_psnr"] == pytest.approx(model["psnr"], abs=0.011)
    assert row["test_delta_e76"] == pytest.approx(model["delta_e76"], abs=0.011)


def test_holdout_over_several_draws_keeps_draw_0_and_averages_every_draw(tmp_path):
    from exposure_engine.training.holdout import evaluate_holdout

    _finished_photos(tmp_path / "ph", 10)
    assert cli_main(["train", "--split-from", str(tmp_path / "ph"), "--holdout", "2", "--out", str(tmp_path / "v"),
                     "--recipe", str(tiny_recipe_file(tmp_path / "r.json")), "--iterations", "1",
                     "--no-progress"]) == 0
    one = evaluate_holdout(tmp_path / "v", tmp_path / "ph")
    three = evaluate_holdout(tmp_path / "v", tmp_path / "ph", draws=3)
    assert "per_draw" not in one and [d["unprocess_seed"] for d in three["per_draw"]] == [2026, 2027, 2028]
    assert three["per_draw"][0]["model_psnr"] == pytest.approx(one["methods"]["model"]["psnr"], abs=0.011)
    assert three["per_image"] == one["per_image"]  # per-photo rows and the histogram score are draw 0's
    for k in ("model", "libraw_like"):
        assert three["methods"][k]["histogram_intersection"] == one["methods"][k]["histogram_intersection"]
    assert three["methods"]["model"]["psnr"] == pytest.approx(np.mean([d["model_psnr"] for d in three["per_draw"]]),
                                                              abs=0.011)
    assert len({d["model_psnr"] for d in three["per_draw"]}) > 1  # the draws differ
    # the unpaired reference (the finished photo itself, with only its brightness and its input's colour to guess)
    # is far closer to the originals than any development of the RAW-like input, let alone a 1-iteration model
    ref = three["methods"]["unpaired_reference"]
    others = [v for k, v in three["methods"].items() if k not in ("unpaired_reference", "originals")]
    assert ref["psnr"] > max(v["psnr"] for v in others) + 3.0
    assert ref["delta_e76"] < min(v["delta_e76"] for v in others)


@pytest.mark.slow
def test_the_same_seed_trains_the_same_model(tmp_path):
    a = train(_tiny_config(tmp_path, "a", 4))
    b = train(_tiny_config(tmp_path, "b", 4))
    assert a["actor_sha256"] == b["actor_sha256"]
    assert Policy.load(tmp_path / "a").content_hash == Policy.load(tmp_path / "b").content_hash


def test_minutes_budget_stops_early_and_still_saves(tmp_path):
    ins, tgs = write_folders(tmp_path)
    cfg = TrainConfig(inputs=D.list_images(ins), targets=D.list_images(tgs), out=tmp_path / "m", recipe=TINY_RECIPE,
                      iterations=10_000, minutes=0.0, progress=False)
    summary = train(cfg)
    assert summary["stopped_by"] == "minutes" and summary["iterations"] == 0
    assert (tmp_path / "m" / "policy.pt").is_file()


def test_cli_errors_name_the_problem(tmp_path, capsys):
    ins, tgs = write_folders(tmp_path)
    assert cli_main(["train", "--inputs", str(tmp_path / "nope"), "--targets", str(tgs), "--out", str(tmp_path / "o")]) == 2
    assert "nope: not a folder" in capsys.readouterr().err
    assert cli_main(["train", "--inputs", str(ins), "--targets", str(tgs), "--out", str(tmp_path / "o"),
                     "--recipe", "fastest"]) == 2
    assert "unknown recipe 'fastest'" in capsys.readouterr().err
    # ordinary photos as inputs without --unprocess: every file is skipped, the error says why
    assert cli_main(["train", "--inputs", str(tgs), "--targets", str(tgs), "--out", str(tmp_path / "o"),
                     "--recipe", str(tiny_recipe_file(tmp_path / "r.json")), "--no-progress"]) == 2
    assert "--unprocess" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_kill_9_continues_the_iteration_counter(tmp_path):
    ins, tgs = write_folders(tmp_path)
    recipe = tiny_recipe_file(tmp_path / "r.json", monitor_every=0)
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "exposure_engine.cli", "train", "--inputs", str(ins), "--targets", str(tgs),
           "--out", str(out), "--recipe", str(recipe), "--iterations", "100000", "--checkpoint-every", "3",
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        # wait for a checkpoint beyond the first one, so that the kill lands mid-run
        while time.monotonic() < deadline:
            if (out / "checkpoint.pt").is_file():
                ck = torch.load(out / "checkpoint.pt", weights_only=False)
                if ck["iteration"] >= 6:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint within 240 s")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    saved = torch.load(out / "checkpoint.pt", weights_only=False)["iteration"]
    assert saved >= 6 and saved % 3 == 0
    assert not (out / "policy.pt").exists()  # it really died before finishing
    target = saved + 4
    res = subprocess.run(cmd[:cmd.index("--iterations")] + ["--iterations", str(target), "--checkpoint-every", "3",
                                                            "--no-progress", "--resume"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resumed from {out / 'checkpoint.pt'} at iteration {saved}" in res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["iterations"] == target
    hist = json.loads((out / "history.json").read_text())["history"]
    its = [h["iteration"] for h in hist]
    assert its == sorted(its) and its[-1] == target
    assert json.loads((out / "config.json").read_text())["training"]["iterations"] == target


@pytest.mark.slow
def test_two_processes_through_torchrun_train_one_model(tmp_path):
    ins, tgs = write_folders(tmp_path)
    recipe = tiny_recipe_file(tmp_path / "r.json", monitor_every=0, batch=8)
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "exposure_engine.cli", "train", "--inputs", str(ins), "--targets", str(tgs), "--out", str(out),
           "--recipe", str(recipe), "--iterations", "6", "--no-progress"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summaries = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 2 and all(s["world_size"] == 2 and s["iterations"] == 6 for s in summaries)
    # each process drew different data, yet the averaged gradients keep the two replicas identical
    assert summaries[0]["actor_sha256"] == summaries[1]["actor_sha256"]
    assert Policy.load(out).config["training"]["world_size"] == 2
    # each process steps half of the batch (8 // 2 = 4 states); rank 0's history counts its own choices
    hist = json.loads((out / "history.json").read_text())["history"]
    assert sum(sum(h["usage"]) for h in hist) == 6 * 4


def test_timing_probe_reports_the_recipe_and_where_it_ran(tmp_path, capsys):
    from exposure_engine.training import timing

    assert timing.main(["--recipe", str(tiny_recipe_file(tmp_path / "r.json")), "--iterations", "2",
                        "--device", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["recipe"] == "r" and row["widths"] == [4, 8, 8, 8] and row["batch"] == 4
    assert row["device"] == "cpu" and row["ms_per_iteration"] > 0


# --- GPU (run on a CUDA machine; CPU-only machines skip these and test the refusal instead) --------------------

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_is_an_error_not_a_silent_cpu_run(tmp_path, capsys):
    ins, tgs = write_folders(tmp_path)
    assert cli_main(["train", "--inputs", str(ins), "--targets", str(tgs), "--out", str(tmp_path / "o"),
                     "--recipe", str(tiny_recipe_file(tmp_path / "r.json")), "--device", "cuda",
                     "--no-progress"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@CUDA
def test_filters_and_networks_give_the_same_results_on_the_gpu():
    torch.manual_seed(0)
    img = torch.rand(16, 3, 64, 64) * 1.2
    raw = torch.randn(16, 64)
    for f in F.FILTERS:
        p = f.params_from_raw(raw[:, : f.n_raw])
        torch.testing.assert_close(f.apply(img.cuda(), p.cuda()).cpu(), f.apply(img, p), rtol=1e-4, atol=1e-5)
    arch = Arch.from_dict(recipes.get("paper").arch_dict())
    actor, value, disc = Actor(arch).eval(), Value(arch).eval(), Discriminator(arch).eval()
    step, used = torch.randint(0, 5, (16,)), (torch.rand(16, 8) < 0.3).float()
    # TF32 convolutions (cuDNN's default, fine for training) round to ~1e-3; full float32 compares the maths
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        (probs, packed), v, d = actor(img, step, used), value(img, step, used), disc(img)  # before .cuda() moves them
        g = img.cuda(), step.cuda(), used.cuda()
        probs_g, packed_g = actor.cuda()(*g)
        torch.testing.assert_close(probs_g.cpu(), probs, rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(packed_g.cpu(), packed, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(value.cuda()(*g).cpu(), v, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(disc.cuda()(g[0]).cpu(), d, rtol=1e-3, atol=1e-4)


@CUDA
def test_training_on_the_gpu_saves_a_cpu_model_and_its_checkpoint_resumes_on_the_cpu(tmp_path):
    cfg = _tiny_config(tmp_path, "m", 6)
    cfg.device = "cuda"
    summary = train(cfg)
    assert summary["iterations"] == 6 and summary["device"].startswith("cuda")
    out = tmp_path / "m"
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["device"].startswith("cuda") and training["gpu"]
    pol = Policy.load(out, device="cpu")
    assert len(pol.predict(np.full((20, 20, 3), 0.1, np.float32))[0].sequence.steps) == 5
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["cuda_rng"] is not None and all(v.device.type == "cpu" for v in ck["pool"].values())
    hist = json.loads((out / "history.json").read_text())["history"]
    assert sum(hist[0]["usage"]) == 6 * 4 and np.isfinite(hist[0]["wasserstein"])
    # the same folder continues on the CPU: nothing in the checkpoint is tied to the GPU
    cpu = _tiny_config(tmp_path, "m", 9)
    cpu.resume = True
    assert train(cpu)["iterations"] == 9
    assert json.loads((out / "config.json").read_text())["training"]["device"] == "cpu"


@CUDA
@pytest.mark.slow
def test_two_processes_through_torchrun_share_one_gpu(tmp_path):
    # more ranks than GPUs: both on GPU 0 with gloo (NCCL refuses two ranks on one GPU); the all-reduced
    # gradients still keep the replicas identical
    ins, tgs = write_folders(tmp_path)
    recipe = tiny_recipe_file(tmp_path / "r.json", monitor_every=0, batch=8)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "exposure_engine.cli", "train", "--inputs", str(ins), "--targets", str(tgs),
           "--out", str(tmp_path / "m"), "--recipe", str(recipe), "--iterations", "6", "--no-progress",
           "--device", "cuda"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summaries = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 2 and all(s["device"].startswith("cuda") for s in summaries)
    assert summaries[0]["actor_sha256"] == summaries[1]["actor_sha256"]


# --- report ---------------------------------------------------------------------------------------------------


def test_histogram_intersection_monitor_is_one_for_the_same_set_and_zero_for_disjoint_sets():
    rng = np.random.default_rng(0)
    a = rng.random((20, 8, 8, 3)).astype(np.float32)
    assert proxy_histogram_intersection(a, a)["mean"] == pytest.approx(1.0)
    dark, bright = np.full((5, 8, 8, 3), 0.05, np.float32), np.full((5, 8, 8, 3), 0.95, np.float32)
    assert proxy_histogram_intersection(dark, bright)["luminance"] == 0.0


def test_report_writes_the_four_plots(tmp_path):
    hist = [{"iteration": i, "wasserstein": 0.1, "actor_loss": -0.1, "value_loss": 0.01, "reward": 0.0,
             "d_gain": 0.0, "entropy": 2.0, "reuse": 0.1, "overexposure": 0.0, "usage": [1] * 8} for i in range(10, 60, 10)]
    mon = [{"iteration": 50, "luminance": 0.5, "contrast": 0.5, "saturation": 0.5, "mean": 0.5}]
    paths = write_report(hist, mon, tmp_path)
    assert len(paths) == 4 and all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_runs_compared_side_by_side_in_one_png_and_a_folder_without_history_is_named(tmp_path, capsys):
    from exposure_engine.training.report import main as report_main

    for seed, best in ((1, 21.5), (2, 18.0)):
        mon = [{"iteration": i, "luminance": 0.5, "contrast": 0.5, "saturation": 0.5, "mean": 0.5,
                "val_psnr": best - abs(i - 200) / 100} for i in (100, 200, 300)]
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "history.json").write_text(json.dumps({"history": [], "monitor": mon}))
    png = tmp_path / "cmp" / "seeds.png"
    assert report_main([str(tmp_path / "s1"), str(tmp_path / "s2"), "--labels", "seed 1,seed 2", "--out",
                        str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    h, w = cv2.imread(str(png)).shape[:2]
    assert w > 2 * h  # two panels: validation PSNR beside the histogram monitor
    assert report_main([str(tmp_path / "s1"), str(tmp_path / "nowhere"), "--out", str(png)]) == 2
    assert "nowhere: not a training run folder" in capsys.readouterr().err
