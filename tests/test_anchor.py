"""The brightness anchor (recipe ``brightness_anchor``): the unpaired map from an input's brightness to the
brightness its finished photo should have, the reward term it adds, and how the replay pool carries it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from exposure_engine.agent.networks import Actor, Arch, Discriminator, Value
from exposure_engine.evaluation.benchmark import display_log2_brightness as numpy_log2_brightness
from exposure_engine.imageio.transfer import linear_to_srgb
from exposure_engine.training import recipes
from exposure_engine.training.anchor import (BrightnessAnchor, display_level, display_log2_brightness,
                                              display_log2_white, potential)
from exposure_engine.training.loop import TrainConfig, agent_step, train
from exposure_engine.training.replay import StatePool
from test_training import TINY, _zero_critic, write_folders  # pytest puts tests/ on sys.path (no __init__.py)


def _grey(levels, side: int = 8, display: bool = False) -> np.ndarray:
    """``(N, side, side, 3)`` flat grey images at linear luminance ``levels`` (sRGB-encoded if ``display``)."""
    x = np.broadcast_to(np.asarray(levels, np.float32)[:, None, None, None], (len(levels), side, side, 3))
    return linear_to_srgb(x, clip=True) if display else np.ascontiguousarray(x)


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def test_the_k_th_brightest_input_is_anchored_at_the_k_th_brightest_target():
    # inputs and targets in shuffled order: the map pairs them by rank, not by position
    ins = _grey([0.04, 0.01, 0.16, 0.02, 0.08])
    tgs = _grey([0.4, 0.05, 0.8, 0.1, 0.2], display=True)
    anchor = BrightnessAnchor.fit(ins, tgs)
    got = anchor(_chw(_grey([0.01, 0.02, 0.04, 0.08, 0.16]))).numpy()
    np.testing.assert_allclose(got, np.log2([0.05, 0.1, 0.2, 0.4, 0.8]), atol=2e-3)
    # between two inputs: between their targets, monotone; outside the inputs' range: the extreme targets
    mid = anchor(_chw(_grey([0.005, 0.03, 0.05, 0.5]))).numpy()
    assert mid[0] == pytest.approx(np.log2(0.05), abs=2e-3) and mid[3] == pytest.approx(np.log2(0.8), abs=2e-3)
    assert np.log2(0.1) < mid[1] < mid[2] < np.log2(0.4)


def test_a_state_is_as_bright_as_the_evaluation_says():
    """One definition of brightness: the anchor's (torch, differentiable) equals the oracle study's (numpy)."""
    rng = np.random.default_rng(0)
    img = rng.uniform(0.0, 1.1, (3, 16, 16, 3)).astype(np.float32)  # over 1: clipped, as the renderer's output
    got = display_log2_brightness(_chw(img)).numpy()
    np.testing.assert_allclose(got, [numpy_log2_brightness(np.clip(i, 0, 1)) for i in img], atol=1e-4)


@pytest.mark.parametrize("white_point", [False, True])
def test_the_anchor_reward_is_the_change_in_distance_from_the_anchor(white_point):
    torch.manual_seed(5)
    arch = Arch.from_dict(recipes.get("cpu-fast", **TINY).arch_dict())
    img = torch.rand(8, 3, 64, 64) * 0.3
    step, used = torch.ones(8, dtype=torch.long), torch.zeros(8, 8)
    anchor = torch.linspace(-4.0, 0.0, 8)
    rewards, outs = [], []
    for w in (0.0, 0.5):
        torch.manual_seed(3)
        actor, value = Actor(arch).eval(), Value(arch)  # eval: no dropout, the same edits both times
        recipe = recipes.get("cpu-fast", **TINY, brightness_anchor=w, anchor_white_point=white_point and w > 0)
        _, new_img, _, _, logs = agent_step(actor, value, _zero_critic(arch), img, step, used, recipe, 0.5, anchor)
        rewards.append(float(logs["reward"]))
        outs.append(new_img)
    torch.testing.assert_close(outs[0], outs[1])
    expected = 0.5 * float((potential(outs[1], anchor, white_point) - potential(img, anchor, white_point)).mean())
    assert expected != 0.0 and rewards[1] - rewards[0] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    if white_point:  # the level is not the brightness alone here: the test tells the two apart
        assert abs(expected - 0.5 * float((potential(outs[1], anchor) - potential(img, anchor)).mean())) > 1e-3


def test_the_anchor_pulls_the_outputs_towards_it():
    """Actor steps on the last step of an episode with only the anchor in the reward: with anchors a stop above
    where the outputs start they come out brighter, with anchors a stop below, darker."""
    arch = Arch.from_dict(recipes.get("cpu-fast", **TINY).arch_dict())
    recipe = recipes.get("cpu-fast", **TINY, brightness_anchor=1.0, entropy_weight=0.0)
    img = torch.rand(8, 3, 64, 64) * 0.2 + 0.1
    step, used = torch.full((8,), recipe.n_steps - 1, dtype=torch.long), torch.zeros(8, 8)  # V(s') = 0
    for direction in (1.0, -1.0):
        torch.manual_seed(0)
        actor, value, disc = Actor(arch).eval(), Value(arch), _zero_critic(arch)
        with torch.no_grad():
            start = display_log2_brightness(_mean_edit(actor, img, step, used))
        opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
        for _ in range(30):
            loss, *_ = agent_step(actor, value, disc, img, step, used, recipe, 0.0, start + direction)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            moved = display_log2_brightness(_mean_edit(actor, img, step, used)) - start
        assert (direction * moved > 0.1).all(), (direction, moved)


def _mean_edit(actor, img, step, used) -> torch.Tensor:
    """The expected output over pi1's choice (the sampled filter differs between calls; its mean does not)."""
    from exposure_engine.agent.networks import apply_choice

    probs, packed_all = actor(img, step, used)
    outs = torch.stack([apply_choice(img, torch.full((img.shape[0],), a, dtype=torch.long), packed_all)
                        for a in range(8)], 1)
    return (probs[:, :, None, None, None] * outs).sum(1)


def test_a_recipe_with_the_anchor_on_needs_the_anchors():
    arch = Arch.from_dict(recipes.get("cpu-fast", **TINY).arch_dict())
    recipe = recipes.get("cpu-fast", **TINY, brightness_anchor=0.1)
    with pytest.raises(ValueError, match="anchors"):
        agent_step(Actor(arch), Value(arch), Discriminator(arch), torch.rand(2, 3, 64, 64),
                   torch.zeros(2, dtype=torch.long), torch.zeros(2, 8), recipe, 0.0)


def test_a_negative_anchor_weight_is_refused(tmp_path):
    with pytest.raises(ValueError, match="brightness_anchor"):
        recipes.get("cpu-fast", brightness_anchor=-0.1)
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"base": "cpu-fast", "brightness_anchor": -1}))
    with pytest.raises(KeyError, match="brightness_anchor"):
        recipes.get(str(f))


def test_an_episode_keeps_the_anchor_of_the_input_it_started_from():
    rng = np.random.default_rng(0)
    counter = iter(range(1, 1000))
    fresh = lambda n: torch.stack([torch.full((3, 4, 4), next(counter) / 100.0) for _ in range(n)])
    anchor_of = lambda images: images.mean((1, 2, 3)) * 10  # any function of the fresh input
    pool = StatePool(4, fresh, n_steps=5, rng=rng, anchor_of=anchor_of)
    torch.testing.assert_close(pool.anchor, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    idx, img, step, used = pool.sample(4)
    before = pool.anchor[idx].clone()
    # two states step on (their images change, their anchors do not), two finish (fresh inputs, fresh anchors)
    pool.put_back(idx, torch.full((4, 3, 4, 4), 0.9), torch.tensor([2, 3, 5, 5]), used)
    torch.testing.assert_close(pool.anchor[idx[:2]], before[:2])
    torch.testing.assert_close(pool.anchor[idx[2:]], torch.tensor([0.5, 0.6]))
    restored = StatePool(4, fresh, n_steps=5, rng=rng, anchor_of=anchor_of)
    restored.load_state_dict(pool.state_dict())
    torch.testing.assert_close(restored.anchor, pool.anchor)
    # a checkpoint from before the anchor existed: its states' own anchors, not zeros
    old = {k: v for k, v in pool.state_dict().items() if k != "anchor"}
    restored.load_state_dict(old)
    torch.testing.assert_close(restored.anchor, anchor_of(pool.images))
    assert (StatePool(3, fresh, n_steps=5, rng=rng).anchor == 0).all()  # the anchor off: zeros


def test_training_with_the_anchor_logs_how_far_the_finished_images_are(tmp_path):
    from exposure_engine.training import data as D

    ins, tgs = write_folders(tmp_path)
    recipe = recipes.get("cpu-fast", **TINY, brightness_anchor=0.2)
    train(TrainConfig(inputs=D.list_images(ins), targets=D.list_images(tgs), out=tmp_path / "m", recipe=recipe,
                      iterations=20, seed=0, checkpoint_every=0, progress=False))
    rows = json.loads((tmp_path / "m" / "history.json").read_text())["history"]
    errors = [r["anchor_error"] for r in rows]
    assert len(errors) == 2 and all(np.isfinite(e) and 0 <= e < 20 for e in errors)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["recipe"]["brightness_anchor"] == 0.2


def test_the_expected_choice_gradient_scores_each_filter_with_its_anchor_term():
    """choice_gradient="expected": every filter's Q(s, a) carries w (phi(filter_a(s)) - phi(s)), as if drawn."""
    from exposure_engine.agent.networks import apply_chosen
    from exposure_engine.training.loop import expected_q

    torch.manual_seed(4)
    arch = Arch.from_dict(recipes.get("cpu-fast", **TINY).arch_dict())
    actor, value, disc = Actor(arch).eval(), Value(arch), Discriminator(arch)
    img, used = torch.rand(5, 3, 64, 64) * 0.4, torch.zeros(5, 8)
    step, anchor = torch.ones(5, dtype=torch.long), torch.linspace(-3.0, -0.5, 5)
    with torch.no_grad():
        _, packed_all = actor(img, step, used)
        q = {w: expected_q(disc, value, img, disc(img), used, step + 1, step + 1 >= 5, packed_all,
                           recipes.get("cpu-fast", **TINY, brightness_anchor=w, choice_gradient="expected"), anchor)
             for w in (0.0, 0.5)}
        for a in range(8):
            out = apply_chosen(img, torch.full((5,), a, dtype=torch.long), packed_all[:, a])
            torch.testing.assert_close(q[0.5][:, a] - q[0.0][:, a],
                                       0.5 * (potential(out, anchor) - potential(img, anchor)), rtol=1e-4, atol=1e-5)


def _choice_and_param_grads(recipe, anchor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of one agent step's loss on pi1's head and on pi2's heads, for the episodes' ``anchor``."""
    arch = Arch.from_dict(recipe.arch_dict())
    torch.manual_seed(6)
    actor, value, disc = Actor(arch).eval(), Value(arch, heads), Discriminator(arch)
    img, used = torch.rand(8, 3, 64, 64) * 0.3, torch.zeros(8, 8)
    step = torch.tensor([0, 1, 2, 3, 4, 4, 2, 0])  # middle and last steps
    torch.manual_seed(7)  # the same filters drawn for both anchors
    loss, *_ = agent_step(actor, value, disc, img, step, used, recipe, 0.5, anchor)
    loss.backward()
    choice = torch.cat([p.grad.flatten() for p in actor.select.parameters()])
    params = torch.cat([p.grad.flatten() for p in actor.heads.parameters() if p.grad is not None])
    return choice, params


def test_with_the_anchor_kept_out_of_the_choice_pi1_learns_from_the_critic_alone():
    """anchor_in_choice=False: moving every episode's anchor leaves pi1's gradient exactly as it was while pi2's
    (the filters' parameters) still changes; with the default (anchor in the choice) both change."""
    far, near = torch.full((8,), -6.0), torch.full((8,), -1.0)
    kept_out = recipes.get("cpu-fast", **TINY, brightness_anchor=1.0, anchor_in_choice=False)
    c_far, p_far = _choice_and_param_grads(kept_out, far, 2)
    c_near, p_near = _choice_and_param_grads(kept_out, near, 2)
    torch.testing.assert_close(c_far, c_near, rtol=0, atol=0)
    assert (p_far - p_near).abs().max() > 1e-4
    shared = recipes.get("cpu-fast", **TINY, brightness_anchor=1.0)
    c_far, _ = _choice_and_param_grads(shared, far, 1)
    c_near, _ = _choice_and_param_grads(shared, near, 1)
    assert (c_far - c_near).abs().max() > 1e-4


def test_the_two_value_heads_learn_the_critic_part_and_the_anchor_part_of_the_return():
    """On the last step (V(s') = 0) the value loss is (r_critic - V_0)^2 + (w (phi(s') - phi(s)) - V_1)^2."""
    recipe = recipes.get("cpu-fast", **TINY, brightness_anchor=0.7, anchor_in_choice=False)
    arch = Arch.from_dict(recipe.arch_dict())
    torch.manual_seed(8)
    actor, value = Actor(arch).eval(), Value(arch, 2)
    img, used = torch.rand(6, 3, 64, 64) * 0.6, torch.zeros(6, 8)
    step, anchor = torch.full((6,), recipe.n_steps - 1), torch.linspace(-4.0, -1.0, 6)
    # progress 1: no entropy penalty; no filter used before: no reuse penalty; zero critic: no critic gain
    _, new_img, _, _, logs = agent_step(actor, value, _zero_critic(arch), img, step, used, recipe, 1.0, anchor)
    from exposure_engine.training.loop import overexposure

    with torch.no_grad():
        v = value(img, step, used)
        r_critic = -overexposure(new_img)
        r_anchor = 0.7 * (potential(new_img, anchor) - potential(img, anchor))
    assert v.shape == (6, 2)
    want = ((r_critic - v[:, 0]) ** 2 + (r_anchor - v[:, 1]) ** 2).mean()
    assert float(logs["value_loss"]) == pytest.approx(float(want), rel=1e-5)
    assert float(logs["reward"]) == pytest.approx(float((r_critic + r_anchor).mean()), rel=1e-5, abs=1e-7)


def test_the_expected_choice_gradient_with_the_anchor_kept_out_scores_the_critic_part_only():
    from exposure_engine.training.loop import expected_q

    class FirstHead(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, *a):
            return self.v(*a)[:, 0]

    torch.manual_seed(9)
    arch = Arch.from_dict(recipes.get("cpu-fast", **TINY).arch_dict())
    actor, value, disc = Actor(arch).eval(), Value(arch, 2), Discriminator(arch)
    img, used, step = torch.rand(4, 3, 64, 64) * 0.4, torch.zeros(4, 8), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        _, packed_all = actor(img, step, used)
        args = (img, disc(img), used, step + 1, step + 1 >= 5, packed_all)
        kept_out = expected_q(disc, value, *args, recipes.get("cpu-fast", **TINY, brightness_anchor=1.0,
                                                              anchor_in_choice=False), torch.full((4,), -2.0))
        critic_only = expected_q(disc, FirstHead(value), *args, recipes.get("cpu-fast", **TINY, brightness_anchor=0))
    torch.testing.assert_close(kept_out, critic_only)


def test_keeping_the_anchor_out_of_the_choice_needs_the_anchor_and_a_boolean(tmp_path):
    with pytest.raises(ValueError, match="needs brightness_anchor"):
        recipes.get("cpu-fast", brightness_anchor=0.0, anchor_in_choice=False)
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"base": "cpu-fast", "anchor_in_choice": "no"}))
    with pytest.raises(KeyError, match="anchor_in_choice"):
        recipes.get(str(f))


def test_training_with_the_anchor_kept_out_of_the_choice_runs_and_resumes(tmp_path):
    from exposure_engine.training import data as D

    ins, tgs = write_folders(tmp_path)
    recipe = recipes.get("cpu-fast", **TINY, brightness_anchor=0.5, anchor_in_choice=False)
    cfg = dict(inputs=D.list_images(ins), targets=D.list_images(tgs), out=tmp_path / "m", recipe=recipe, seed=0,
               progress=False)
    train(TrainConfig(**cfg, iterations=10, checkpoint_every=10))
    first = json.loads((tmp_path / "m" / "history.json").read_text())["history"]
    train(TrainConfig(**cfg, iterations=20, checkpoint_every=10, resume=True))
    rows = json.loads((tmp_path / "m" / "history.json").read_text())["history"]
    # continued, not restarted: a fresh 20-iteration run would log another first row (its schedules are longer)
    assert len(rows) == 2 and rows[0] == first[0] and all(np.isfinite(r["value_loss"]) for r in rows)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["recipe"]["anchor_in_choice"] is False
    # resuming it with one value head would not fit the checkpoint's value network: a clear error, not a traceback
    shared = recipes.get("cpu-fast", **TINY, brightness_anchor=0.5)
    with pytest.raises(ValueError, match="anchor_in_choice False"):
        train(TrainConfig(**{**cfg, "recipe": shared}, iterations=30, checkpoint_every=10, resume=True))


def test_the_white_level_is_the_99_5th_percentile_of_linear_luminance():
    rng = np.random.default_rng(1)
    img = rng.uniform(0.0, 1.1, (2, 32, 32, 3)).astype(np.float32)  # display sRGB, over 1 clipped
    lin = np.clip(img, 0, 1)
    lin = np.where(lin <= 0.04045, lin / 12.92, ((lin + 0.055) / 1.055) ** 2.4)
    lum = lin @ np.array([0.27, 0.67, 0.06])
    want = np.log2([np.quantile(l.ravel(), 0.995) for l in lum])
    np.testing.assert_allclose(display_log2_white(_chw(img)).numpy(), want, atol=1e-4)
    # the white-point level is the mean of the two levels; without it, the brightness alone
    b = display_log2_brightness(_chw(img))
    torch.testing.assert_close(display_level(_chw(img), True), 0.5 * (b + display_log2_white(_chw(img))))
    torch.testing.assert_close(display_level(_chw(img)), b)


def test_the_white_point_anchor_is_the_mean_of_the_mapped_brightness_and_the_targets_white_level():
    ins = _grey([0.01, 0.02, 0.04])
    tgs = _grey([0.1, 0.2, 0.4], display=True)
    tgs[:, 0] = 1.0  # a white row, 1 pixel in 8: the 99.5th percentile is white
    plain, white = BrightnessAnchor.fit(ins, tgs), BrightnessAnchor.fit(ins, tgs, white_point=True)
    assert plain.white_level is None and "white_level" not in plain.to_dict()  # old model configs unchanged
    assert white.white_level == pytest.approx(0.0, abs=1e-4)
    x = _chw(_grey([0.01, 0.04]))
    torch.testing.assert_close(white(x), 0.5 * (plain(x) + 0.0))
    again = BrightnessAnchor.from_dict(json.loads(json.dumps(white.to_dict())))
    assert again.white_level == pytest.approx(white.white_level) and torch.allclose(again(x), white(x))


def test_the_white_point_needs_the_anchor_and_a_boolean(tmp_path):
    with pytest.raises(ValueError, match="anchor_white_point needs brightness_anchor"):
        recipes.get("cpu-fast", brightness_anchor=0.0, anchor_white_point=True)
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"base": "cpu-fast", "anchor_white_point": 1}))
    with pytest.raises(KeyError, match="anchor_white_point"):
        recipes.get(str(f))


def test_training_with_the_white_point_anchor_stores_the_targets_white_level(tmp_path):
    from exposure_engine.training import data as D

    ins, tgs = write_folders(tmp_path)
    recipe = recipes.get("cpu-fast", **TINY, brightness_anchor=0.5, anchor_white_point=True)
    train(TrainConfig(inputs=D.list_images(ins), targets=D.list_images(tgs), out=tmp_path / "m", recipe=recipe,
                      iterations=20, seed=0, checkpoint_every=0, progress=False))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    level = cfg["training"]["brightness_anchor"]["white_level"]
    assert -20 < level <= 0 and cfg["recipe"]["anchor_white_point"] is True
    rows = json.loads((tmp_path / "m" / "history.json").read_text())["history"]
    assert all(np.isfinite(r["anchor_error"]) for r in rows)
