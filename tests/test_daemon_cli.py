"""``exposure-engine predict`` (in-process and through a daemon) and ``exposure-engine export`` (offline)."""
from __future__ import annotations

import json

import cv2
import pytest

from exposure_engine.cli import main
from exposure_engine.daemon.server import ServerConfig
from exposure_engine.sequence import EditSequence

from daemon_support import make_image, running_server, sequences_close

SEQ = {"format": "exposure-edit-sequence", "version": 1, "steps": [
    {"filter": "exposure", "params": {"ev": 0.5}}, {"filter": "gamma", "params": {"gamma": 0.5}}]}


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), make_image(90, 120)[:, :, ::-1])
    return path


@pytest.fixture
def seq_file(tmp_path):
    path = tmp_path / "edit.json"
    path.write_text(json.dumps(SEQ))
    return path


def test_export_exact_xmp_writes_the_cube_beside_it(seq_file, tmp_path, capsys):
    out = tmp_path / "out" / "photo.jpg.xmp"
    assert main(["export", str(seq_file), "--format", "xmp", "--mode", "exact", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"<?xml")
    cube = out.parent / "photo.cube"  # named after the output's stem, as the XMP's lut3d refers to it
    assert cube.is_file() and b"LUT_3D_SIZE" in cube.read_bytes()
    assert str(cube) in capsys.readouterr().err


def test_export_cube_and_dtstyle(seq_file, tmp_path):
    assert main(["export", str(seq_file), "--format", "cube", "-o", str(tmp_path / "look.cube")]) == 0
    assert b"LUT_3D_SIZE" in (tmp_path / "look.cube").read_bytes()
    assert main(["export", str(seq_file), "--format", "dtstyle", "--name", "My look",
                 "-o", str(tmp_path / "s.dtstyle")]) == 0
    assert b"My look" in (tmp_path / "s.dtstyle").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".cube"] == ["look.cube"]  # native: no cube


def test_export_of_a_bad_sequence_names_the_file_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SEQ, "steps": [{"filter": "exposure", "params": {"ev": "high"}}]}))
    assert main(["export", str(bad), "--format", "xmp", "-o", str(tmp_path / "x.xmp")]) == 2
    err = capsys.readouterr().err
    assert "steps[0].params.ev" in err and "bad.json" in err
    assert not (tmp_path / "x.xmp").exists()


def test_predict_in_process_prints_a_valid_sequence(photo, capsys):
    assert main(["predict", str(photo), "--untrained", "--seed", "4"]) == 0
    out = capsys.readouterr()
    seq = EditSequence.from_json(out.out)
    assert len(seq.steps) == 5 and seq.meta["seed"] == 4
    assert "variant 1 (seed 4)" in out.err


def test_predict_variants_write_one_file_each(photo, tmp_path):
    assert main(["predict", str(photo), "--untrained", "--seed", "1", "--variants", "2",
                 "-o", str(tmp_path / "edit.json")]) == 0
    seeds = [EditSequence.load(tmp_path / f"edit-{i}.json").meta["seed"] for i in (1, 2)]
    assert seeds == [1, 2]


def test_predict_straight_to_a_darktable_style(photo, tmp_path):
    out = tmp_path / "auto.dtstyle"
    assert main(["predict", str(photo), "--untrained", "--format", "dtstyle", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"<?xml")


def test_predict_through_a_daemon_gives_the_in_process_result(photo, capsys):
    from exposure_engine.agent.policy import Policy

    with running_server(ServerConfig(), policies={"untrained": Policy.random(seed=0)}) as server:
        assert main(["predict", str(photo), "--server", server.endpoint, "--seed", "9"]) == 0
        remote = EditSequence.from_json(capsys.readouterr().out)
    assert main(["predict", str(photo), "--untrained", "--seed", "9"]) == 0
    local = EditSequence.from_json(capsys.readouterr().out)
    assert sequences_close(remote, local)


def test_predict_errors_are_one_clear_line(photo, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.jpg"), "--untrained"]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    assert main(["predict", str(photo), "--untrained", "--format", "xmp"]) == 2
    assert "needs -o" in capsys.readouterr().err
    assert main(["predict", str(photo), "--server", "tcp://127.0.0.1:1", "--timeout", "0.3"]) == 2
    assert "no reply from the exposure-engine daemon" in capsys.readouterr().err


def test_predict_xmp_for_a_raw_pins_the_camera_white_balance(tmp_path):
    # An XMP replaces the raw's whole history: without an explicit white balance darktable develops it at D65,
    # not at the as-shot multipliers the engine's input was developed with.
    import numpy as np

    from imagegen import write_test_dng

    dng = write_test_dng(tmp_path / "shot.dng", np.full((32, 48, 3), 0.2, np.float32), neutral=(0.5, 1.0, 0.7))
    out = tmp_path / "shot.xmp"
    assert main(["predict", str(dng), "--untrained", "--seed", "2", "--format", "xmp", "-o", str(out)]) == 0
    xmp = out.read_text()
    assert 'darktable:operation="temperature"' in xmp
    order = xmp.split('iop_order_list="')[1].split('"')[0].split(",")
    assert order.index("exposure") < order.index("colorin")  # the raw pipe order (JPEG order has colorin first)


def test_bench_daemon_measures_each_client_count_per_run_and_reports_medians(tmp_path, capsys):
    # The bench starts its own daemon process on an ipc socket, with a small policy as the asked-for style.
    from daemon_support import small_policy

    small_policy(0).save(tmp_path / "models" / "small")
    out = tmp_path / "bench.json"
    code = main(["bench", "daemon", "--models", str(tmp_path / "models"), "--style", "small", "--clients", "1,3",
                 "--requests", "6", "--warmup", "2", "--repeat", "2", "--json", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    runs = [r for r in res["results"] if "clients" in r]
    assert [(r["clients"], r["run"]) for r in runs] == [(1, 1), (3, 1), (1, 2), (3, 2)]
    for r in runs:
        assert r["requests"] == 6 * r["clients"] and 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert res["style"] == "small" and res["stats"]["predict_rows"] >= 2 * (6 + 2) * 4
    assert "helper" in res["batching"]
    text = capsys.readouterr().out
    assert "3 client(s), median of 2 runs: p50" in text
