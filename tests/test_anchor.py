"""The brightness anchor (recipe ``brightness_anchor``): the unpaired map from an input's brightness to the
brightness its finished photo should have, the reward term it adds, and how the replay pool carries it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from exposure_engine.agent.networks import Actor, Arch, Discriminator, Value
from exposure_engine.evaluation.oracle import _log2_brightness
from exposure_engine.training import recipes
from exposure_engine.training.anchor import BrightnessAnchor, display_log2_brightness, potential
from exposure_engine.training.loop import TrainConfig, agent_step, train
from exposure_engine.training.replay import StatePool
from exposure_engine.training.unprocess import linear_to_srgb
from test_training import TINY, _zero_critic, write_folders  # pytest puts tests/ on sys.path (no __init__.py)


def _grey(levels, side: int = 8, display: bool = False) -> np.ndarray:
    """``(N, side, side, 3)`` flat grey images at linear luminance ``levels`` (sRGB-encoded if ``display``)."""
    x = np.broadcast_to(np.asarray(levels, np.float32)[:, None, None, None], (len(levels), side, side, 3))
    return linear_to_srgb(x) if display else np.ascontiguousarray(x)


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
    np.testing.assert_allclose(got, [_log2_brightness(np.clip(i, 0, 1)) for i in img], atol=1e-4)


def test_the_anchor_reward_is_the_change_in_distance_from_the_anchor():
    torch.manual_seed(5)
    arch = Arch.from_dict(recipes.get("cpu-fast", **TINY).arch_dict())
    img = torch.rand(8, 3, 64, 64) * 0.3
    step, used = torch.ones(8, dtype=torch.long), torch.zeros(8, 8)
    anchor = torch.linspace(-4.0, 0.0, 8)
    rewards, outs = [], []
    for w in (0.0, 0.5):
        torch.manual_seed(3)
        actor, value = Actor(arch).eval(), Value(arch)  # eval: no dropout, the same edits both times
        recipe = recipes.get("cpu-fast", **TINY, brightness_anchor=w)
        _, new_img, _, _, logs = agent_step(actor, value, _zero_critic(arch), img, step, used, recipe, 0.5, anchor)
        rewards.append(float(logs["reward"]))
        outs.append(new_img)
    torch.testing.assert_close(outs[0], outs[1])
    expected = 0.5 * float((potential(outs[1], anchor) - potential(img, anchor)).mean())
    assert expected != 0.0 and rewards[1] - rewards[0] == pytest.approx(expected, rel=1e-4, abs=1e-6)


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
