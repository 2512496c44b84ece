"""The GIMP translation table (exposure_engine/exporters/gimp.py) and the plug-in installer.

What GIMP does with each operation is modelled by ``gimp.simulate`` (the measured GIMP 3.0.4 semantics: linear
light, curves clamp and interpolate linearly between samples); the integration test checks GIMP itself.
"""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from exposure_engine import filters as F
from exposure_engine.exporters import gimp as G
from exposure_engine.imageio.transfer import linear_to_srgb
from exposure_engine.installers import gimp as installer
from exposure_engine.renderer import render
from exposure_engine.sequence import EditSequence, Step


def _seq(*steps):
    return {"format": "exposure-edit-sequence", "version": 1,
            "steps": [{"filter": f, "params": p} for f, p in steps]}


def _image(seed=0, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    img = rng.random((*shape, 3)).astype(np.float32) ** 2.2
    img[0, :8] = 0.0  # pure black: gamma's 0.001 floor matters there
    img[1, :8] = 1.0
    return img


# --------------------------------------------------------------------------------------------------------------
# plan structure


def test_one_layer_per_step_then_the_display_encoding():
    seq = _seq(("exposure", {"ev": 1.2}), ("tone_curve", {"slopes": [1.0] * 8}), ("saturation", {"amount": 0.5}))
    plan = G.plan(seq)
    assert plan["format"] == "exposure-gimp-plan" and plan["version"] == 1 and plan["mode"] == "native"
    assert [layer["name"] for layer in plan["layers"]] == [
        "1 · Exposure +1.20 EV", "2 · Tone curve", "3 · Saturation +50%", "4 · Display encoding (sRGB)"]
    assert [layer["step"]["params"] for layer in plan["layers"][:3]] == [s["params"] for s in seq["steps"]]


def test_native_mode_renders_only_saturation_and_contrast_in_the_engine():
    for f in F.FILTERS:
        step = Step(f.name, f.to_json(list(f.identity)))
        ops = G.plan(EditSequence([step]))["layers"][0]["ops"]
        rendered = [op["op"] for op in ops] == ["engine-render"]
        assert rendered == (f.name in ("saturation", "contrast")), f.name
        if rendered:
            assert ops[0]["sequence"]["steps"] == [step.to_dict()]


def test_exact_mode_renders_every_step_in_the_engine():
    seq = _seq(("exposure", {"ev": 1.0}), ("gamma", {"gamma": 0.5}))
    layers = G.plan(seq, "exact")["layers"]
    assert [op["op"] for layer in layers[:-1] for op in layer["ops"]] == ["engine-render"] * 2
    assert layers[-1]["ops"][0]["op"] == "curves"  # the display encoding stays a GIMP curve


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of native, exact"):
        G.plan(_seq(("exposure", {"ev": 1.0})), "fast")


def test_every_filter_has_a_translation():
    for f in F.FILTERS:  # a ninth filter without a GIMP translation must fail here, not inside GIMP
        G.native_ops(f.name, list(f.identity))
    with pytest.raises(KeyError, match="exporters/gimp.py"):
        G.native_ops("vignette", [0.5])


def test_curve_samples_put_a_sample_on_every_knot():
    slopes = [2.0, 0.5, 1.0, 1.5, 0.7, 1.2, 0.9, 1.1]
    values = np.array(G._curve_samples(slopes))
    assert values.size == G.CURVE_SAMPLES
    knots = np.concatenate([[0.0], np.cumsum(slopes) / np.sum(slopes)])
    step = (G.CURVE_SAMPLES - 1) // F.CURVE_SEGMENTS
    np.testing.assert_allclose(values[::step], knots, atol=1e-8)
    assert np.all(np.diff(values) >= 0)


def test_display_encoding_curve_inverts_the_srgb_encoding_gimp_displays_with():
    v = np.array(G.display_encoding_samples())
    x = np.linspace(0, 1, v.size)
    np.testing.assert_allclose(linear_to_srgb(v), x, atol=2e-6)


def test_white_balance_beyond_the_channel_mixer_range_is_split_exactly():
    ops = G.native_ops("white_balance", [1.3, 0.8, 2.3])
    assert [op["operation"] for op in ops] == ["gegl:exposure", "gegl:channel-mixer"]
    assert all(abs(v) <= G.MIXER_LIMIT for k, v in ops[1]["properties"].items() if k.endswith("-gain"))
    assert [op["operation"] for op in G.native_ops("white_balance", [1.3, 0.8, 1.9])] == ["gegl:channel-mixer"]


def test_plan_json_fits_in_one_export_file():
    seq = _seq(("color_curves", {"slopes": [[1.05] * 8, [0.95] * 8, [1.1] * 8]}))
    files = G.export(seq, "native", name="my style")
    [(name, data)] = files.items()
    assert name == "my_style.gimp-plan.json"
    assert json.loads(data) == G.plan(seq)


# --------------------------------------------------------------------------------------------------------------
# the translation reproduces the renderer


PER_FILTER = [
    _seq(("exposure", {"ev": -2.5})),
    _seq(("gamma", {"gamma": 0.34})),
    _seq(("gamma", {"gamma": 2.8})),
    _seq(("white_balance", {"gains": [1.29, 0.78, 2.12]})),
    _seq(("saturation", {"amount": 0.9})),
    _seq(("tone_curve", {"slopes": [2.0, 0.5, 0.5, 2.0, 1.0, 1.3, 0.6, 1.9]})),
    _seq(("color_curves", {"slopes": [[0.9] * 4 + [1.1] * 4, [1.1] * 4 + [0.9] * 4, [1.0] * 8]})),
    _seq(("contrast", {"amount": -0.8})),
    _seq(("black_and_white", {"amount": 0.7})),
    # over-exposed state (> 1) flowing into a curve and a mixer: clamping must happen at the same places
    _seq(("exposure", {"ev": 2.0}), ("black_and_white", {"amount": 0.5}), ("tone_curve", {"slopes": [1.0] * 8})),
]


@pytest.mark.parametrize("seq", PER_FILTER, ids=lambda s: "+".join(x["filter"] for x in s["steps"]))
def test_simulated_gimp_matches_the_renderer(seq):
    img = _image()
    np.testing.assert_allclose(G.simulate(img, G.plan(seq)), render(img, seq), atol=2e-5)


_step = st.one_of(
    st.builds(lambda e: ("exposure", {"ev": e}), st.floats(-3.5, 3.5)),
    st.builds(lambda g: ("gamma", {"gamma": g}), st.floats(1 / 3, 3)),
    st.builds(lambda g, b: ("white_balance", {"gains": [1.0, g, b]}), st.floats(0.6, 1.65), st.floats(0.6, 2.3)),
    st.builds(lambda a: ("saturation", {"amount": a}), st.floats(0, 1)),
    st.builds(lambda s: ("tone_curve", {"slopes": s}), st.lists(st.floats(0.5, 2.0), min_size=8, max_size=8)),
    st.builds(lambda s: ("color_curves", {"slopes": [s[0:8], s[8:16], s[16:24]]}),
              st.lists(st.floats(0.9, 1.1), min_size=24, max_size=24)),
    st.builds(lambda a: ("contrast", {"amount": a}), st.floats(-1, 1)),
    st.builds(lambda a: ("black_and_white", {"amount": a}), st.floats(0, 1)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_step, min_size=1, max_size=5))
def test_any_sequence_translates_exactly(steps):
    img = _image(1, (16, 16))
    seq = _seq(*steps)
    np.testing.assert_allclose(G.simulate(img, G.plan(seq)), render(img, seq), atol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# installer


def test_install_puts_an_executable_plugin_where_gimp_looks(tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "profile"))
    main = installer.install()
    assert main == tmp_path / "profile" / "plug-ins" / "exposure-auto-retouch" / "exposure-auto-retouch.py"
    assert main.parent.name == main.stem  # GIMP ignores a plug-in whose folder is named differently
    assert main.stat().st_mode & stat.S_IXUSR
    assert main.read_text().startswith("#!/usr/bin/env python3")
    assert (main.parent / "daemon_client.py").is_file()
    config = json.loads((main.parent / "exposure-auto-retouch.json").read_text())
    assert os.path.exists(config["serve"][0]) and config["serve"][-1] == "serve"
    assert installer.status()["current"]


def test_install_is_idempotent_and_uninstall_removes_it(tmp_path):
    profile = tmp_path / "GIMP" / "3.0"
    first = installer.install(profile, server="tcp://127.0.0.1:6000")
    (first.parent / "daemon_client.py").write_text("# stale copy from an older engine\n")
    assert not installer.status(profile)["current"]
    assert installer.install(profile, server="tcp://127.0.0.1:6000") == first
    assert installer.status(profile) == {"installed": True, "path": str(first), "current": True}
    assert json.loads((first.parent / "exposure-auto-retouch.json").read_text())["server"] == "tcp://127.0.0.1:6000"
    assert installer.uninstall(profile) is True
    assert not first.parent.exists() and (profile / "plug-ins").is_dir()  # only our folder goes
    assert installer.uninstall(profile) is False


def test_default_profile_follows_the_platform_convention(monkeypatch):
    env = {"HOME": "/home/ada"}
    monkeypatch.setattr(installer.sys, "platform", "linux")
    assert str(installer.profile_dir(env)) == "/home/ada/.config/GIMP/3.0"
    assert str(installer.profile_dir({**env, "GIMP3_DIRECTORY": "/tmp/g"})) == "/tmp/g"


def test_install_into_an_unwritable_place_names_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(installer.InstallError, match="cannot install the GIMP plug-in into .*file"):
        installer.install(blocker)
