"""The darktable plug-in's pure Lua helpers, run by a plain Lua 5.4 against a stand-in darktable module
(tests/lua/fake_darktable.lua). The plug-in inside darktable itself is tested in tests/integration/test_darktable.py.

The pipe-order rewrite must give each style instance the instance number darktable 4.2 will give it when applying
the style (src/common/iop_order.c, dt_ioppr_update_for_entries), at our place in the pipe.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from exposure_engine.exporters import export

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "darktable" / "exposure_auto_retouch.lua"
RUNNER = ROOT / "tests" / "lua" / "run_helpers.lua"
LUA = shutil.which("lua5.4") or shutil.which("lua")
pytestmark = pytest.mark.skipif(not LUA, reason="no Lua 5.4 interpreter (apt install lua5.4)")

SEQ = {"format": "exposure-edit-sequence", "version": 1, "steps": [
    {"filter": "exposure", "params": {"ev": 0.5}},
    {"filter": "gamma", "params": {"gamma": 0.5}},
    {"filter": "tone_curve", "params": {"slopes": [1.25] * 8}},
    {"filter": "exposure", "params": {"ev": -0.2}},
    {"filter": "contrast", "params": {"amount": 0.3}}]}


def run(helper: str, **env: str) -> str:
    r = subprocess.run([LUA, str(RUNNER), str(PLUGIN), helper], capture_output=True, text=True, timeout=30,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    return r.stdout


def order_after(history: str) -> list[tuple[str, int]]:
    style = export(SEQ, "dtstyle", name="t")["t.dtstyle"].decode()
    out = run("adapt", STYLE_XML=style, HISTORY=history)
    text = out.split("<iop_list>")[1].split("</iop_list>")[0].split(",")
    return [(text[i], int(text[i + 1])) for i in range(0, len(text), 2)]


def ours(order: list[tuple[str, int]]) -> list[tuple[str, int]]:
    i = order.index(("colorreconstruct", 0))
    j = order.index(("colorout", 0))
    return order[i + 1:j]


def test_plugin_file_is_valid_lua():
    luac = shutil.which("luac5.4") or shutil.which("luac")
    if luac:
        subprocess.run([luac, "-p", str(PLUGIN)], check=True)
    run("safe", ARG="x")  # loads the whole file against the stand-in API


def test_on_an_image_without_history_the_first_instance_of_each_module_takes_the_free_instance_0():
    order = order_after("")
    assert ours(order) == [("exposure", 0), ("channelmixerrgb", 0), ("rgblevels", 0), ("rgbcurve", 0),
                           ("exposure", 1), ("rgbcurve", 1), ("rgbcurve", 2), ("channelmixerrgb", 1)]
    # instance 0 left its default place (darktable would otherwise find it there first)
    assert order.count(("exposure", 0)) == 1 and order.count(("rgbcurve", 0)) == 1
    assert len(order) == len(set(order))


def test_modules_the_image_already_uses_keep_instance_0_at_its_place_and_ours_follow():
    # a raw developed by darktable's scene-referred defaults: exposure and color calibration in use
    order = order_after("exposure,0,1,;channelmixerrgb,0,1,;filmicrgb,0,1,")
    assert ours(order) == [("exposure", 1), ("channelmixerrgb", 1), ("rgblevels", 0), ("rgbcurve", 0),
                           ("exposure", 2), ("rgbcurve", 1), ("rgbcurve", 2), ("channelmixerrgb", 2)]
    # darktable's own exposure keeps its default place, right after the input profile of the v3.0-JPEG order
    assert order.index(("exposure", 0)) == order.index(("retouch", 0)) + 1


def test_a_disabled_module_in_the_history_is_reused_like_darktable_does():
    order = order_after("exposure,0,0,")
    assert ours(order)[0] == ("exposure", 0)


def test_existing_extra_instances_push_ours_past_their_numbers():
    order = order_after("rgbcurve,0,1,;rgbcurve,1,1,mine")
    assert [e for e in ours(order) if e[0] == "rgbcurve"] == [("rgbcurve", 2), ("rgbcurve", 3), ("rgbcurve", 4)]


@pytest.mark.parametrize("os_name, arg, expected", [
    ("linux", "/tmp/it's here.json", "'/tmp/it'\\''s here.json'"),
    ("macos", "/Users/a b/x", "'/Users/a b/x'"),
    ("windows", r"C:\Users\a b\x.json", r'"C:\Users\a b\x.json"'),
])
def test_paths_are_quoted_for_the_platform_shell(os_name, arg, expected):
    assert run("quote", ARG=arg, FAKE_OS=os_name) == expected


def test_style_names_become_file_name_safe():
    assert run("safe", ARG="exposure my model/v2 #3") == "exposure_my_model_v2__3"
