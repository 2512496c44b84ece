"""darktable 4.2 for real: exported XMPs rendered by darktable-cli, and the Lua plug-in run by darktable's GUI
under Xvfb exactly as a user installs it (``exposure-engine plugins install darktable``).

Needs darktable, darktable-cli, xvfb-run (``.ci/install-darktable.sh``); skipped with that reason otherwise.
Two darktable processes in all (one darktable-cli call rendering every XMP of a folder, one GUI session running
every plug-in job), about a minute on 2 cores.

The reference is always ``exposure_engine.render`` on the same photo: the 8-bit sRGB PNG decoded with the sRGB
EOTF, compared in CIELAB (CIE76). Per-filter numbers land in ``$EXPOSURE_DT_REPORT`` (JSON) when set, which is
how docs/darktable.md's table was made.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "darktable"))
sys.path.insert(0, str(HERE.parent))
from dtcompare import chart, delta_e, engine_render, read_image, write_png  # noqa: E402

from exposure_engine.exporters import export  # noqa: E402
from exposure_engine.imageio.transfer import srgb_to_linear  # noqa: E402
from exposure_engine.installers import darktable as installer  # noqa: E402

DT_CLI = shutil.which("darktable-cli")
DT_GUI = shutil.which("darktable")
XVFB = shutil.which("xvfb-run")
REASON = "darktable 4.2 not installed (run .ci/install-darktable.sh: apt install darktable xvfb xauth)"
pytestmark = [pytest.mark.integration, pytest.mark.skipif(not DT_CLI, reason=REASON)]


def seq(*steps: dict) -> dict:
    return {"format": "exposure-edit-sequence", "version": 1, "steps": list(steps)}


def step(name: str, **params) -> dict:
    return {"filter": name, "params": params}


DISPLAY = step("gamma", gamma=1 / 2.2)  # curves, saturation and contrast usually act on display-like values
SLOPES = [0.6, 1.5, 2.0, 1.2, 1.0, 0.8, 0.7, 0.6]

# One sequence per filter type: what the per-filter agreement is measured on.
PER_FILTER = {
    "exposure": seq(step("exposure", ev=0.7)),
    "gamma": seq(step("gamma", gamma=0.45)),
    "white_balance": seq(step("white_balance", gains=[1.25, 0.95, 0.8])),
    "saturation": seq(DISPLAY, step("saturation", amount=0.5)),
    "tone_curve": seq(DISPLAY, step("tone_curve", slopes=SLOPES)),
    "color_curves": seq(DISPLAY, step("color_curves", slopes=[[1.1, 1.0, 0.9, 1.05, 1.0, 0.95, 1.1, 0.9],
                                                              [1.0] * 8,
                                                              [0.9, 0.95, 1.0, 1.05, 1.1, 1.0, 0.95, 0.9]])),
    "contrast": seq(DISPLAY, step("contrast", amount=0.4)),
    "black_and_white": seq(step("black_and_white", amount=0.7)),
}
# What the plug-in tests apply: every step's place in the pipe matters (exposure after gamma changes the gain,
# curves do not commute with gains), so a module placed by darktable's default order would show.
PLUGIN_SEQ = seq(step("gamma", gamma=0.5), step("exposure", ev=0.4), step("white_balance", gains=[1.1, 1.0, 0.85]),
                 step("tone_curve", slopes=SLOPES), step("contrast", amount=0.3))
# Whole sequences like the agent's (5 steps).
MIXED = {
    "mixed_a": seq(step("exposure", ev=0.6), step("white_balance", gains=[1.1, 1.0, 0.85]),
                   step("gamma", gamma=0.5), step("tone_curve", slopes=SLOPES), step("contrast", amount=0.3)),
    "mixed_b": seq(step("gamma", gamma=0.42), step("saturation", amount=0.4), step("exposure", ev=-0.3),
                   step("color_curves", slopes=[[1.05] * 8, [1.0] * 8, [0.95] * 8]),
                   step("black_and_white", amount=0.2)),
}


def _report(key: str, value: dict) -> None:
    path = os.environ.get("EXPOSURE_DT_REPORT")
    if not path:
        return
    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {}
    data[key] = value
    p.write_text(json.dumps(data, indent=2))


def _stats(d: np.ndarray) -> dict:
    return {"mean": round(float(d.mean()), 3), "p99": round(float(np.percentile(d, 99)), 3),
            "max": round(float(d.max()), 3)}


# ---------------------------------------------------------------------------------------------------------------
# (b) darktable-cli renders of exported XMPs


@pytest.fixture(scope="module")
def cli_renders(tmp_path_factory) -> dict[tuple[str, str], np.ndarray]:
    """Every case x mode rendered by ONE darktable-cli call on a folder of chart copies with their sidecars.
    Returns {(case, mode): per-pixel dE against the engine}."""
    work = tmp_path_factory.mktemp("dtcli")
    src, out = work / "in", work / "out"
    src.mkdir()
    out.mkdir()
    img = chart()
    cases = {**PER_FILTER, **MIXED}
    jobs = []
    for case, sequence in cases.items():
        for mode in ("native", "exact"):
            stem = f"{case}_{mode}"
            write_png(src / f"{stem}.png", img)
            files = export(sequence, "xmp", mode, name=stem)
            main, *extra = files
            (src / f"{stem}.png.xmp").write_bytes(files[main])
            for f in extra:  # the .cube of exact mode, found through the LUT root folder
                (src / f).write_bytes(files[f])
            jobs.append((case, mode, stem))
    # (c) a DNG: the XMP pins darktable's white balance to the camera's, as the engine's LibRaw input has it
    from imagegen import smooth_image, write_test_dng

    from exposure_engine.exporters.darktable import camera_white_balance
    from exposure_engine.imageio import load_image

    dng = write_test_dng(work / "raw.dng", smooth_image(96, 128) * 0.6)
    raw_linear = load_image(dng)
    for mode in ("native", "exact"):
        stem = f"raw_{mode}"
        shutil.copy(dng, src / f"{stem}.dng")
        files = export(MIXED["mixed_a"], "xmp", mode, name=stem, input_kind="raw",
                       raw_white_balance=camera_white_balance(dng))
        main, *extra = files
        (src / f"{stem}.dng.xmp").write_bytes(files[main])
        for f in extra:
            (src / f).write_bytes(files[f])
    cmd = [DT_CLI, str(src), str(out / "$(FILE_NAME)"), "--out-ext", "tif", "--core",
           "--configdir", str(work / "config"), "--library", ":memory:",
           "--conf", "plugins/imageio/format/tiff/bpp=16", "--conf", "plugins/imageio/format/tiff/compress=0",
           "--conf", "plugins/darkroom/workflow=none", "--conf", "write_sidecar_files=never",
           "--conf", f"plugins/darkroom/lut3d/def_path={src}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "invalid cube file" not in r.stdout + r.stderr, "darktable did not find the exported .cube"
    result = {}
    for case, mode, stem in jobs:
        got = read_image(out / f"{stem}.tif")
        result[(case, mode)] = delta_e(got, engine_render(img, cases[case]))
    from exposure_engine.renderer import render

    for mode in ("native", "exact"):
        got = read_image(out / f"raw_{mode}.tif")
        result[("raw_mixed_a", mode)] = delta_e(got, render(raw_linear, MIXED["mixed_a"]).astype(np.float64))
    return result


def test_exact_mode_matches_the_engine_within_half_a_delta_e(cli_renders):
    table = {}
    for case in [*PER_FILTER, *MIXED]:
        d = cli_renders[(case, "exact")]
        table[case] = _stats(d)
    _report("exact", table)
    for case, s in table.items():
        assert s["mean"] <= 0.5 and s["p99"] <= 2.0, (case, s)


def test_native_mode_mean_delta_e_is_at_most_2_overall(cli_renders):
    table = {case: _stats(cli_renders[(case, "native")]) for case in [*PER_FILTER, *MIXED]}
    _report("native", table)
    overall = float(np.mean([cli_renders[(case, "native")].mean() for case in table]))
    _report("native_overall_mean", {"mean": round(overall, 3)})
    assert overall <= 2.0, table


def test_native_mode_is_exact_for_the_filters_darktable_has(cli_renders):
    # exposure, white balance and black & white are matrices/gains in darktable; gamma is rgblevels (exact but
    # for the engine's floor max(x, 0.001), which lifts pure black: p99 stays small).
    for case in ("exposure", "white_balance", "black_and_white"):
        d = cli_renders[(case, "native")]
        assert d.mean() < 0.1 and np.percentile(d, 99) < 0.5, (case, _stats(d))
    d = cli_renders[("gamma", "native")]
    assert d.mean() < 0.2, _stats(d)


def test_approximated_filters_stay_close(cli_renders):
    # Curves are monotone Hermite through the knots (rounded corners); contrast uses darktable's luminance.
    for case, limit in (("tone_curve", 1.0), ("color_curves", 0.5), ("contrast", 1.5), ("saturation", 4.0)):
        d = cli_renders[(case, "native")]
        assert d.mean() < limit, (case, _stats(d))


# ---------------------------------------------------------------------------------------------------------------
# (a) + (c) the Lua plug-in in darktable's GUI, as installed for a user


@pytest.fixture(scope="module")
def gui_session(tmp_path_factory):
    """One darktable GUI session (Xvfb) running every plug-in job; returns {job: output folder}."""
    if not (DT_GUI and XVFB):
        pytest.skip(REASON)
    work = tmp_path_factory.mktemp("dtgui")
    config = work / "config"
    luts = work / "luts"
    luts.mkdir()
    # The engine command the plug-in runs: the real CLI, with an untrained in-process model standing in for the
    # daemon (no trained model ships with the tests, and nothing may be left running).
    engine = work / "engine"
    engine.write_text(f"#!{sys.executable}\nimport sys\nfrom exposure_engine.cli import main\n"
                      "sys.exit(main(['--untrained' if a == '--start-daemon' else a for a in sys.argv[1:]]))\n")
    engine.chmod(0o755)
    installer.install(config, engine=str(engine))

    img = chart(64)
    seq_file = work / "plugin_seq.json"
    seq_file.write_text(json.dumps(PLUGIN_SEQ))
    jobs = {}

    def job(name, action, image, mode):
        out = work / name
        out.mkdir()
        jobs[name] = (action, image, mode, out)

    for name in ("png_native", "png_exact", "png_predict"):
        write_png(work / f"{name}.png", img)
    job("png_native", "sequence", work / "png_native.png", "native")
    job("png_exact", "sequence", work / "png_exact.png", "exact")
    job("png_predict", "predict", work / "png_predict.png", "native")
    from imagegen import smooth_image, write_test_dng

    write_test_dng(work / "raw.dng", smooth_image(64, 96) * 0.6)
    job("dng_native", "sequence", work / "raw.dng", "native")

    bad_seq = work / "bad.json"
    bad_seq.write_text(json.dumps(seq(step("gamma", gamma=0.5), {"filter": "gamma", "params": {}})))
    for name in ("png_bad_sequence", "png_missing_engine"):
        write_png(work / f"{name}.png", img)
    job("png_bad_sequence", "sequence", work / "png_bad_sequence.png", "native")
    job("png_missing_engine", "missing_engine", work / "png_missing_engine.png", "native")
    sequences = {"png_bad_sequence": bad_seq}

    jobs_file = work / "jobs.txt"
    jobs_file.write_text("".join(f"{a}|{i}|{m}|{sequences.get(n, seq_file)}|{o}\n"
                                 for n, (a, i, m, o) in jobs.items()))
    env = {**os.environ, "EXPOSURE_TEST_JOBS": str(jobs_file)}
    cmd = [XVFB, "-a", "timeout", "-k", "5", "240", DT_GUI, "--library", ":memory:", "--configdir", str(config),
           "--conf", "write_sidecar_files=never", "--conf", f"plugins/darkroom/lut3d/def_path={luts}",
           # what a user sets in preferences > lua options (Lua cannot read darktable's own LUT setting)
           "--conf", f"lua/exposure_auto_retouch/lut_folder={luts}",
           "--luacmd", f'dofile("{HERE / "darktable" / "drive_plugin.lua"}")']
    for attempt in (1, 2):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        log = f"attempt {attempt}, exit {r.returncode}\n" + (r.stdout + r.stderr)[-4000:]
        started = any((out / "result.txt").exists() for *_, out in jobs.values())
        # darktable's GUI under Xvfb hung once in 16 CI runs before its first job (killed by `timeout` after
        # 240 s; the session normally takes 15-25 s): one fresh start then, never once a job has run.
        if started or r.returncode not in (124, 137):
            break
        for lock in config.glob("*.lock"):
            lock.unlink()
    return {name: (out, log) for name, (_, _, _, out) in jobs.items()}, luts


def _history(out: Path) -> list[dict]:
    root = ET.parse(out / "history.dtstyle").getroot()
    return [{c.tag: (c.text or "") for c in plugin} for plugin in root.iter("plugin")]


def _result(session, name) -> Path:
    out, log = session[0][name]
    result = (out / "result.txt").read_text() if (out / "result.txt").exists() else f"no result; log: {log}"
    assert result == "ok 1 0", result
    return out


def test_plugin_applies_a_sequence_file_as_one_named_module_per_step(gui_session):
    out = _result(gui_session, "png_native")
    ours = [(p["operation"], p["multi_name"]) for p in _history(out) if p["multi_name"]]
    assert sorted(ours) == sorted([
        ("rgblevels", "1 Gamma"), ("exposure", "2 Exposure"), ("channelmixerrgb", "3 White balance"),
        ("rgbcurve", "4 Tone curve"), ("rgbcurve", "5 Contrast"), ("rgbcurve", "display decoding"),
        ("channelmixerrgb", "to sRGB primaries"), ("channelmixerrgb", "to working space")])
    tags = (out / "tags.txt").read_text().splitlines()
    assert any(t.startswith("exposure-engine|exposure_plugin_seq_native_") for t in tags), tags
    # the pipe order is the sequence's: the render matches the engine on the photo darktable started from
    before, after = read_image(out / "before.tif"), read_image(out / "render.tif")
    d = delta_e(after, _engine_on(before, PLUGIN_SEQ))
    assert d.mean() < 1.0, _stats(d)


def _engine_on(encoded: np.ndarray, sequence: dict) -> np.ndarray:
    from exposure_engine.renderer import render

    return render(srgb_to_linear(encoded), sequence).astype(np.float64)


def test_plugin_exact_mode_installs_the_lut_and_matches_the_engine(gui_session):
    out = _result(gui_session, "png_exact")
    luts = gui_session[1]
    ops = [p["operation"] for p in _history(out) if p["multi_name"]]
    assert ops == ["lut3d"]
    assert len(list(luts.glob("exposure_plugin_seq_exact_*.cube"))) == 1
    d = delta_e(read_image(out / "render.tif"), _engine_on(read_image(out / "before.tif"), PLUGIN_SEQ))
    assert d.mean() <= 0.5 and np.percentile(d, 99) <= 2.0, _stats(d)


def test_plugin_auto_retouch_asks_the_engine_and_applies_its_prediction(gui_session):
    out = _result(gui_session, "png_predict")
    names = [p["multi_name"] for p in _history(out) if p["multi_name"]]
    assert "display decoding" in names
    assert any(re.match(r"^\d+ ", n) for n in names), names
    assert any(t.startswith("exposure-engine|exposure_default_native_") for t in
               (out / "tags.txt").read_text().splitlines())


def test_plugin_on_a_dng_keeps_the_raw_development_and_adds_the_sequence(gui_session):
    out = _result(gui_session, "dng_native")
    history = _history(out)
    ops = {p["operation"] for p in history}
    assert {"rawprepare", "demosaic", "colorin"} <= ops  # darktable's raw development is still there
    assert ("exposure", "2 Exposure") in [(p["operation"], p["multi_name"]) for p in history]
    # the sequence continues from darktable's own development of the raw (what the proxy showed the engine)
    d = delta_e(read_image(out / "render.tif"), _engine_on(read_image(out / "before.tif"), PLUGIN_SEQ))
    assert d.mean() < 1.0, _stats(d)


def test_plugin_reports_a_bad_sequence_file_with_the_engines_reason_and_leaves_the_image_alone(gui_session):
    out, log = gui_session[0]["png_bad_sequence"]
    assert (out / "result.txt").read_text() == "ok 0 1", log
    error = (out / "errors.txt").read_text()
    assert "png_bad_sequence.png: exposure-engine failed:" in error and "steps[1].params" in error, error
    assert not [p for p in _history(out) if p["multi_name"]]


def test_plugin_says_when_the_engine_cannot_be_run(gui_session):
    out, log = gui_session[0]["png_missing_engine"]
    assert (out / "result.txt").read_text() == "ok 0 1", log
    error = (out / "errors.txt").read_text()
    assert "exposure-engine not found (/nonexistent/exposure-engine)" in error, error
    assert "preferences > lua options" in error


def test_raw_xmp_matches_the_engine_on_libraws_development(cli_renders):
    # The engine's input is LibRaw's development of the DNG; darktable develops it itself (its own demosaic and
    # highlight handling), so agreement is bounded by that: an empty sequence measured mean 0.69 / p99 4.2.
    table = {mode: _stats(cli_renders[("raw_mixed_a", mode)]) for mode in ("native", "exact")}
    _report("raw_dng_mixed_a", table)
    for mode, s in table.items():
        assert s["mean"] <= 2.0, (mode, s)
