"""``exposure-engine render`` end to end: real files in, real files out, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from exposure_engine.cli import main
from exposure_engine.imageio import linear_to_srgb, load_image, load_photo, save_image
from exposure_engine.renderer import render
from imagegen import smooth_image, write_test_dng

SEQ = {"format": "exposure-edit-sequence", "version": 1, "steps": [
    {"filter": "exposure", "params": {"ev": 0.8}},
    {"filter": "white_balance", "params": {"gains": [1.1, 1.0, 0.85]}},
    {"filter": "gamma", "params": {"gamma": 0.45}},
    {"filter": "saturation", "params": {"amount": 0.4}},
    {"filter": "contrast", "params": {"amount": 0.2}},
]}


@pytest.fixture()
def files(tmp_path):
    seq = tmp_path / "seq.json"
    seq.write_text(json.dumps(SEQ))
    src = tmp_path / "in.png"
    save_image(src, linear_to_srgb(smooth_image(48, 64)), bits=16)
    return tmp_path, src, seq


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name,bits,dtype", [("out.png", "16", np.uint16), ("out.tif", None, np.uint16),
                                             ("out.png", None, np.uint8), ("out.tif", "8", np.uint8)])
def test_render_writes_exactly_the_rendered_pixels(files, capsys, name, bits, dtype):
    d, src, seq = files
    argv = ["render", str(src), "--sequence", str(seq), "-o", str(d / name)] + (["--bits", bits] if bits else [])
    code, out, err = _run(argv, capsys)
    assert code == 0 and err == ""
    assert str(d / name) in out and "5 step(s)" in out
    expected = render(load_image(src), SEQ)
    top = np.iinfo(dtype).max
    stored = cv2.imread(str(d / name), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert stored.dtype == dtype
    np.testing.assert_array_equal(stored, np.floor(expected.astype(np.float64) * top + 0.5).astype(dtype))


def test_render_jpeg_from_a_raw_file_keeps_exif(tmp_path, capsys):
    seq = tmp_path / "seq.json"
    seq.write_text(json.dumps(SEQ))
    dng = write_test_dng(tmp_path / "in.dng", smooth_image(64, 96))
    code, out, err = _run(["render", str(dng), "-s", str(seq), "-o", str(tmp_path / "o.jpg"), "--quality", "97"],
                          capsys)
    assert code == 0
    from PIL import Image
    with Image.open(tmp_path / "o.jpg") as im:
        assert im.getexif()[272] == "Test Camera" and im.size == (96, 64)
    expected = render(load_image(dng), SEQ)
    got = linear_to_srgb(load_photo(tmp_path / "o.jpg").pixels)   # decode back to display values
    assert np.abs(got - expected).mean() < 0.01


@pytest.mark.parametrize("case,message", [
    ("corrupt_input", "cannot read .*in.jpg: corrupt or truncated"),
    ("missing_input", "cannot read .*nothing.png: no such file"),
    ("bad_sequence", r"bad edit sequence: steps\[0\].params"),
    ("not_json", "bad edit sequence: .*not valid JSON"),
    ("bad_extension", "unsupported output extension '.gif'"),
    ("jpeg_16", "JPEG cannot be written with 16 bits"),
    ("no_folder", "the folder .* does not exist"),
    ("same_file", "is the input file"),
    ("bad_quality", "--quality must be 1..100"),
])
def test_errors_are_one_line_with_exit_code_2(files, capsys, case, message):
    d, src, seq = files
    out_path = d / "out.png"
    args = {"input": str(src), "seq": str(seq), "out": str(out_path), "extra": []}
    if case == "corrupt_input":
        bad = d / "in.jpg"
        save_image(bad, linear_to_srgb(smooth_image(48, 64)))
        bad.write_bytes(bad.read_bytes()[:-400])   # header intact, scan cut short
        args["input"] = str(bad)
    elif case == "missing_input":
        args["input"] = str(d / "nothing.png")
    elif case == "bad_sequence":
        (d / "bad.json").write_text(json.dumps({**SEQ, "steps": [{"filter": "gamma", "params": {"gamma": "x"}}]}))
        args["seq"] = str(d / "bad.json")
    elif case == "not_json":
        (d / "broken.json").write_text('{"format": "exposure-edit-sequence", "version": 1, "steps": [')
        args["seq"] = str(d / "broken.json")
    elif case == "bad_extension":
        args["out"] = str(d / "out.gif")
    elif case == "jpeg_16":
        args["out"], args["extra"] = str(d / "out.jpg"), ["--bits", "16"]
    elif case == "no_folder":
        args["out"] = str(d / "missing" / "out.png")
    elif case == "same_file":
        args["out"] = str(src)
    elif case == "bad_quality":
        args["extra"] = ["--quality", "0"]
    code, out, err = _run(["render", args["input"], "-s", args["seq"], "-o", args["out"], *args["extra"]], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("exposure-engine render: error: ")
    import re
    assert re.search(message, lines[0]), lines[0]
    assert not out_path.exists() or case == "same_file"


def test_input_warnings_are_reported_on_stderr(files, capsys):
    d, src, seq = files
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(d / "alpha.png")
    code, out, err = _run(["render", str(d / "alpha.png"), "-s", str(seq), "-o", str(d / "o.png")], capsys)
    assert code == 0 and "warning" in err and "alpha" in err


def test_input_encoding_flag_changes_the_decode(files, capsys):
    d, src, seq = files
    _run(["render", str(src), "-s", str(seq), "-o", str(d / "a.tif")], capsys)
    _, _, err = _run(["render", str(src), "-s", str(seq), "-o", str(d / "b.tif"), "--input-encoding", "linear"],
                     capsys)
    assert "ICC profile 'sRGB built-in' ignored" in err
    a, b = (cv2.imread(str(d / n), cv2.IMREAD_UNCHANGED) for n in ("a.tif", "b.tif"))
    with pytest.warns(UserWarning, match="ICC profile 'sRGB built-in' ignored"):
        expected_b = render(load_image(src, input_encoding="linear"), SEQ)
    np.testing.assert_array_equal(b[..., ::-1], np.floor(expected_b.astype(np.float64) * 65535 + 0.5))
    assert np.abs(a.astype(float) - b.astype(float)).mean() > 1000


# What the ``exposure-engine`` console script runs (pyproject: exposure_engine.cli:main).
ENTRY_POINT = [sys.executable, "-c", "import sys; from exposure_engine.cli import main; sys.exit(main())"]


@pytest.mark.slow   # two fresh interpreters importing torch and numba: ~10 s each on a busy 2-core machine
def test_the_command_in_a_fresh_process(files):
    d, src, seq = files
    r = subprocess.run(ENTRY_POINT + ["render", str(src), "-s", str(seq), "-o", str(d / "sub.jpg")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (d / "sub.jpg").stat().st_size > 1000
    r = subprocess.run(ENTRY_POINT + ["render", str(d / "nope.raw"), "-s", str(seq), "-o", str(d / "sub2.jpg")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "nope.raw: no such file" in r.stderr
