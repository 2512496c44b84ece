"""``exposure-engine retouch``: photo -> proxy -> policy -> sequence -> full-resolution render -> files.

The policy is an untrained one (``Policy.random``) saved to a temporary model folder: what is specified here is
the pipeline around it (exactness of the written image, the JSON, seeds, variants, batches that survive bad
files, never overwriting), not the quality of a trained model. Inputs are written by the tests themselves.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from exposure_engine import retouch as R
from exposure_engine.agent.policy import STATE_SIZE, Policy
from exposure_engine.cli import main
from exposure_engine.imageio import load_image, make_proxy, save_image
from exposure_engine.renderer import render
from exposure_engine.sequence import EditSequence
from imagegen import smooth_image, write_test_dng

Q16 = 0.5 / 65535 + 1e-6  # half a 16-bit step (the writer rounds to nearest) plus float32 slack

# A small network keeps the tests fast; the pipeline does not depend on the widths.
SMALL = dict(widths=(8, 16, 16, 16), head_hidden=16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks and tiny images run fastest on one thread (on a busy machine, extra OpenMP threads
    spin-wait for a core); the results do not depend on the thread count."""
    import numba
    import torch

    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return Policy.random(seed=0, **SMALL).save(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def policy(model_dir) -> Policy:
    return Policy.load(model_dir)


@pytest.fixture()
def photos(tmp_path) -> dict[str, Path]:
    """A 16-bit sRGB PNG, an 8-bit JPEG and a real DNG (camera RAW through rawpy), all photo-like."""
    d = tmp_path / "in"
    d.mkdir()
    lin = smooth_image(96, 128, seed=1)
    png = d / "gradient.png"
    save_image(png, lin ** (1 / 2.2), bits=16)
    jpg = d / "disc.jpg"
    Image.fromarray((smooth_image(80, 120, seed=2) ** (1 / 2.2) * 255).astype(np.uint8)).save(jpg, quality=92)
    dng = write_test_dng(d / "raw.dng", smooth_image(64, 96, seed=3) * 0.6)
    return {"png": png, "jpg": jpg, "dng": dng}


def opts(out: Path, **kw) -> R.Options:
    return R.Options(out_dir=out, **{"seed": 11, **kw})


def read16(path: Path) -> np.ndarray:
    a = tifffile.imread(path) if path.suffix == ".tif" else np.asarray(Image.open(path))
    if path.suffix == ".png":  # Pillow cannot read 16-bit RGB PNG; OpenCV can (BGR order)
        import cv2

        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert a.dtype == np.uint16, f"{path} is not 16-bit"
    return a.astype(np.float64) / 65535


# ---------------------------------------------------------------------------------------------------------------
# The written image is render(input, sequence)


@pytest.mark.parametrize("kind", ["png", "jpg", "dng"])
def test_written_tiff_is_exactly_the_render_of_the_input_with_the_written_sequence(kind, photos, policy, tmp_path):
    src = photos[kind]
    res = R.retouch_file(src, policy, opts(tmp_path / "out"))
    assert res.status == "done", res.message
    written = read16(tmp_path / "out" / f"{src.stem}.tif")
    seq = EditSequence.load(tmp_path / "out" / f"{src.stem}.json")
    expected = render(load_image(src), seq)
    assert written.shape == expected.shape
    assert np.abs(written - expected).max() <= Q16


def test_a_forced_input_encoding_is_used_and_recorded(photos, policy, tmp_path):
    src = photos["png"]  # written with an sRGB profile, which "linear" overrides: said, not silent
    res = R.retouch_file(R.InputItem(src, "linear"), policy, opts(tmp_path))
    assert any("ICC profile" in n and "ignored" in n and str(src) in n for n in res.notes)
    seq = EditSequence.load(tmp_path / "gradient.json")
    assert seq.meta["source"]["encoding"] == "linear"
    with pytest.warns(UserWarning, match="ignored"):
        expected = render(load_image(src, input_encoding="linear"), seq)
    assert np.abs(read16(tmp_path / "gradient.tif") - expected).max() <= Q16


def test_16bit_png_output_is_exact_too_and_jpeg_is_close(photos, policy, tmp_path):
    src = photos["png"]
    R.retouch_file(src, policy, opts(tmp_path / "png", format="png"))
    expected = render(load_image(src), EditSequence.load(tmp_path / "png" / "gradient.json"))
    assert np.abs(read16(tmp_path / "png" / "gradient.png") - expected).max() <= Q16

    R.retouch_file(src, policy, opts(tmp_path / "jpg", format="jpeg"))
    jpeg = np.asarray(Image.open(tmp_path / "jpg" / "gradient.jpg").convert("RGB"), np.float64) / 255
    # Lossy at quality 95: on average within a couple of 8-bit steps of the render.
    assert np.abs(jpeg - expected).mean() < 2.5 / 255


def test_sequence_json_records_model_seed_and_source(photos, policy, tmp_path):
    src = photos["jpg"]
    R.retouch_file(src, policy, opts(tmp_path, seed=123))
    doc = json.loads((tmp_path / "disc.json").read_text())
    assert doc["format"] == "exposure-edit-sequence" and doc["version"] == 1
    assert doc["model"] == {"name": policy.name, "sha256": policy.content_hash}
    assert doc["seed"] == 123
    assert doc["source"] == {"file": str(src), "width": 120, "height": 80}
    assert doc["output"] == "disc.tif"
    assert len(doc["steps"]) == policy.arch.n_steps
    for step in doc["steps"]:  # every step carries the policy's probabilities and a readable label
        assert set(step["probabilities"]) == {"exposure", "gamma", "white_balance", "saturation", "tone_curve",
                                              "color_curves", "contrast", "black_and_white"}
        assert abs(sum(step["probabilities"].values()) - 1) < 1e-4
        assert step["label"]


def test_the_sequence_is_the_policys_prediction_on_the_whole_frame_proxy(photos, policy, tmp_path):
    src = photos["png"]
    res = R.retouch_file(src, policy, opts(tmp_path, seed=5))
    direct = policy.predict(make_proxy(load_image(src), STATE_SIZE), seed=5)[0].sequence
    assert [s.to_dict() for s in res.sequences[0].steps] == [s.to_dict() for s in direct.steps]


def test_retouch_image_in_place_renders_over_the_input_and_gives_the_same_result(policy):
    img = smooth_image(40, 56, seed=4)
    copy = img.copy()
    (r,) = R.retouch_image(img, policy, seed=9, in_place=True)
    assert np.shares_memory(r.image, img)
    (ref,) = R.retouch_image(copy.copy(), policy, seed=9)
    assert np.array_equal(r.image, ref.image)
    assert np.array_equal(ref.image, render(copy, ref.prediction.sequence))


# ---------------------------------------------------------------------------------------------------------------
# Seeds and variants


def test_same_seed_same_result_and_other_seeds_differ(photos, policy, tmp_path):
    a = R.retouch_file(photos["png"], policy, opts(tmp_path / "a", seed=7)).sequences[0]
    b = R.retouch_file(photos["png"], policy, opts(tmp_path / "b", seed=7)).sequences[0]
    c = R.retouch_file(photos["png"], policy, opts(tmp_path / "c", seed=8)).sequences[0]
    assert a.to_dict()["steps"] == b.to_dict()["steps"]
    assert a.to_dict()["steps"] != c.to_dict()["steps"]  # dropout stays on: another seed, another edit
    assert (tmp_path / "a" / "gradient.tif").read_bytes() == (tmp_path / "b" / "gradient.tif").read_bytes()


def test_without_a_seed_the_mean_edit_is_written_and_is_the_same_every_run(photos, policy, tmp_path):
    first = R.retouch_file(photos["jpg"], policy, opts(tmp_path / "a", seed=None)).sequences[0]
    assert first.meta["dropout"] is False and "seed" not in first.meta
    again = R.retouch_file(photos["jpg"], policy, opts(tmp_path / "b", seed=None)).sequences[0]
    assert again.to_dict()["steps"] == first.to_dict()["steps"]
    assert (tmp_path / "a" / "disc.tif").read_bytes() == (tmp_path / "b" / "disc.tif").read_bytes()
    sampled = R.retouch_file(photos["jpg"], policy, opts(tmp_path / "c", seed=1)).sequences[0]
    assert sampled.meta["seed"] == 1 and sampled.to_dict()["steps"] != first.to_dict()["steps"]


def test_variants_without_a_seed_draw_one_and_record_it_so_they_can_be_reproduced(photos, policy, tmp_path):
    first = R.retouch_file(photos["jpg"], policy, opts(tmp_path / "a", seed=None, variants=2)).sequences
    seed = first[0].meta["seed"]
    assert isinstance(seed, int) and first[1].meta["seed"] == seed + 1
    again = R.retouch_file(photos["jpg"], policy, opts(tmp_path / "b", seed=seed, variants=2)).sequences
    assert [s.to_dict()["steps"] for s in again] == [s.to_dict()["steps"] for s in first]


def test_variants_are_numbered_files_with_consecutive_seeds(photos, policy, tmp_path):
    out = tmp_path / "out"
    res = R.retouch_file(photos["png"], policy, opts(out, variants=3, seed=40))
    assert res.status == "done"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["gradient.v1.json", "gradient.v1.tif", "gradient.v2.json", "gradient.v2.tif",
                     "gradient.v3.json", "gradient.v3.tif"]
    proxy = make_proxy(load_image(photos["png"]), STATE_SIZE)
    steps = []
    for i in (1, 2, 3):
        doc = json.loads((out / f"gradient.v{i}.json").read_text())
        assert doc["seed"] == 40 + i - 1 and doc["variant"] == i and doc["output"] == f"gradient.v{i}.tif"
        # Variant i alone, from its own seed, gives the same sequence: variants do not depend on each other
        # (up to float rounding: a batch of 3 and a batch of 1 take different matrix-multiply paths).
        alone = policy.predict(proxy, seed=40 + i - 1)[0].sequence
        assert [s["filter"] for s in doc["steps"]] == [s.filter for s in alone.steps]
        np.testing.assert_allclose(EditSequence.from_dict(doc).packed()[1], alone.packed()[1], rtol=1e-5, atol=1e-6)
        steps.append(doc["steps"])
    assert steps[0] != steps[1] != steps[2]


# ---------------------------------------------------------------------------------------------------------------
# Batches: bad files, existing outputs, the input itself, name clashes


def test_a_bad_file_fails_alone_with_a_one_line_reason_and_the_batch_goes_on(photos, policy, tmp_path):
    bad = tmp_path / "in" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    messages: list[str] = []
    results = R.retouch_batch([bad, photos["png"]], policy, opts(tmp_path / "out"), report=messages.append)
    assert [r.status for r in results] == ["failed", "done"]
    assert str(bad) in results[0].message and "\n" not in results[0].message
    assert messages == [results[0].message]
    assert (tmp_path / "out" / "gradient.tif").exists() and not (tmp_path / "out" / "broken.tif").exists()


def test_existing_outputs_are_skipped_with_a_note_unless_overwrite(photos, policy, tmp_path):
    out = tmp_path / "out"
    R.retouch_file(photos["png"], policy, opts(out, seed=1))
    before = (out / "gradient.json").read_text()
    skipped = R.retouch_file(photos["png"], policy, opts(out, seed=2))
    assert skipped.status == "skipped" and "--overwrite" in skipped.message
    assert (out / "gradient.json").read_text() == before
    replaced = R.retouch_file(photos["png"], policy, opts(out, seed=2, overwrite=True))
    assert replaced.status == "done"
    assert json.loads((out / "gradient.json").read_text())["seed"] == 2


def test_the_input_is_never_overwritten_even_with_overwrite(policy, tmp_path):
    src = tmp_path / "photo.tif"
    save_image(src, smooth_image(48, 64) ** (1 / 2.2), bits=16)
    original = src.read_bytes()
    res = R.retouch_file(src, policy, opts(tmp_path, overwrite=True))  # output would be tmp_path/photo.tif
    assert res.status == "failed" and "overwrite the input" in res.message
    assert src.read_bytes() == original


def test_two_inputs_with_the_same_stem_do_not_overwrite_each_other(photos, policy, tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = other / "gradient.jpg"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(twin)
    results = R.retouch_batch([photos["png"], twin], policy, opts(tmp_path / "out"))
    assert [r.status for r in results] == ["done", "failed"]
    assert str(photos["png"]) in results[1].message
    assert json.loads((tmp_path / "out" / "gradient.json").read_text())["source"]["file"] == str(photos["png"])


def test_an_unwritable_output_folder_fails_the_file_not_the_process(photos, policy, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the folder should be")
    res = R.retouch_file(photos["png"], policy, opts(blocker))
    assert res.status == "failed" and str(photos["png"]) in res.message


def test_a_failed_write_leaves_none_of_the_photos_outputs(photos, policy, tmp_path, monkeypatch):
    import exposure_engine.strip

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exposure_engine.strip, "draw_strip", disk_full)  # the last file written
    res = R.retouch_file(photos["png"], policy, opts(tmp_path / "out", steps=True))
    assert res.status == "failed" and "No space left" in res.message and str(photos["png"]) in res.message
    assert list((tmp_path / "out").iterdir()) == []  # so a rerun retouches it instead of skipping it


def test_an_unexpected_error_in_one_file_does_not_end_the_batch(photos, policy, tmp_path, monkeypatch):
    real = R.retouch_file

    def buggy(item, *a, **k):
        if item.path == photos["jpg"]:
            raise TypeError("a bug")
        return real(item, *a, **k)

    monkeypatch.setattr(R, "retouch_file", buggy)
    results = R.retouch_batch([photos["jpg"], photos["png"]], policy, opts(tmp_path / "out"))
    assert [r.status for r in results] == ["failed", "done"]
    assert "internal error (TypeError: a bug)" in results[0].message


# ---------------------------------------------------------------------------------------------------------------
# Inputs and models


def test_expand_inputs_takes_folders_globs_and_files_once_each(photos, tmp_path):
    folder = photos["png"].parent
    (folder / "notes.txt").write_text("not a photo")
    (folder / "sub").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "sub" / "deep.png")
    paths, problems = R.expand_inputs([str(folder), str(folder / "*.png"), str(photos["jpg"])])
    assert [p.name for p in paths] == ["disc.jpg", "gradient.png", "raw.dng"]  # sorted, no duplicates, no .txt
    assert problems == []
    deep, _ = R.expand_inputs([str(folder)], recursive=True)
    assert "deep.png" in [p.name for p in deep]


def test_expand_inputs_reports_what_matched_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    paths, problems = R.expand_inputs([str(tmp_path / "missing.jpg"), str(tmp_path / "*.cr2"), str(empty)])
    assert paths == []
    assert [p.arg for p in problems] == [str(tmp_path / "missing.jpg"), str(tmp_path / "*.cr2"), str(empty)]
    assert "no such file" in problems[0].reason and "no photos match" in problems[1].reason


def test_an_explicitly_named_file_is_taken_whatever_its_suffix(tmp_path):
    odd = tmp_path / "photo.bin"
    odd.write_bytes(b"x")
    assert R.expand_inputs([str(odd)])[0] == [odd]  # the reader will judge it and name the reason


def test_find_model_by_path_by_style_and_a_clear_error_when_missing(model_dir, tmp_path, monkeypatch):
    assert R.find_model(model=model_dir) == model_dir
    monkeypatch.setenv(R.MODELS_ENV, str(model_dir.parent))
    assert R.find_model(style="tiny") == model_dir
    assert "tiny" in R.available_styles()
    with pytest.raises(R.ModelNotFound, match="no model 'nope' found.*looked in.*available styles: .*tiny"):
        R.find_model(style="nope")
    with pytest.raises(R.ModelNotFound, match="no such model"):
        R.find_model(model=tmp_path / "absent")
    with pytest.raises(R.ModelNotFound, match="not a style name"):
        R.find_model(style="../tiny")


def test_the_default_model_is_the_default_style_folder(model_dir, tmp_path, monkeypatch):
    root = tmp_path / "models"
    (root / "default").mkdir(parents=True)
    for f in model_dir.iterdir():
        (root / "default" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv(R.MODELS_ENV, str(root))
    assert R.find_model() == root / "default"
    assert R.load_policy().content_hash == Policy.load(model_dir).content_hash


# ---------------------------------------------------------------------------------------------------------------
# The command


def test_cli_retouches_a_folder_with_step_strips_and_reports_failures_in_the_exit_code(photos, model_dir, tmp_path,
                                                                                         capsys):
    out = tmp_path / "out"
    code = main(["retouch", str(photos["png"].parent), "-o", str(out), "--model", str(model_dir), "--steps",
                 "--seed", "3", "-q"])
    assert code == 0
    for stem in ("gradient", "disc", "raw"):
        assert (out / f"{stem}.tif").exists() and (out / f"{stem}.json").exists()
        with Image.open(out / f"{stem}.steps.png") as im:
            assert im.format == "PNG" and im.width > 3 * im.height / 2
    assert "3 retouched, 0 skipped, 0 failed" in capsys.readouterr().err

    (photos["png"].parent / "zero.png").write_bytes(b"")
    code = main(["retouch", str(photos["png"].parent), str(tmp_path / "nothing-*.jpg"), "-o", str(out),
                 "--model", str(model_dir), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "zero.png" in err and "empty" in err  # the reason, from the reader
    assert "nothing-*.jpg: no photos match" in err
    assert "0 retouched, 3 skipped, 1 failed" in err


def test_cli_example_runs_on_the_bundled_photo(model_dir, tmp_path, capsys):
    assert R.EXAMPLE_IMAGE.is_file()
    code = main(["retouch", "--example", "-o", str(tmp_path), "--model", str(model_dir), "--format", "jpeg", "-q"])
    assert code == 0, capsys.readouterr().err
    with Image.open(tmp_path / f"{R.EXAMPLE_IMAGE.stem}.jpg") as im:
        assert im.size == (512, 383)
    doc = json.loads((tmp_path / f"{R.EXAMPLE_IMAGE.stem}.json").read_text())
    assert doc["source"]["file"] == str(R.EXAMPLE_IMAGE)


def test_bundled_example_is_linear_light_and_its_sequence_is_valid():
    img = load_image(R.EXAMPLE_IMAGE)
    # A RAW-like input: dark (about -1.5 EV from a graded photo) and decoded through its linear ICC profile.
    assert img.shape == (383, 512, 3) and 0.05 < img.mean() < 0.25
    raw = tifffile.imread(R.EXAMPLE_IMAGE).astype(np.float64) / 65535
    assert np.abs(img - raw).max() < 1e-4
    out = render(img, R.EXAMPLE_SEQUENCE)
    assert out.mean() > img.mean() + 0.15  # the hand-written edit brightens it for display


def test_cli_usage_errors_exit_2_with_one_line(model_dir, tmp_path, capsys):
    assert main(["retouch", "--example", "--model", str(model_dir)]) == 2
    assert "no output folder" in capsys.readouterr().err
    assert main(["retouch", "-o", str(tmp_path), "--model", str(model_dir)]) == 2
    assert "no input photos" in capsys.readouterr().err
    assert main(["retouch", "--example", "-o", str(tmp_path), "--model", str(tmp_path / "none")]) == 2
    assert "no such model" in capsys.readouterr().err
    assert main(["retouch", "--example", "-o", str(tmp_path), "--variants", "0", "--model", str(model_dir)]) == 2
    assert "--variants must be at least 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written on a usage error


def test_cli_without_any_installed_model_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(R, "model_roots", lambda: [tmp_path / "models"])
    assert main(["retouch", "--example", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no model 'default' found" in err and str(tmp_path / "models") in err
    assert not (tmp_path / "out").exists()


def test_bench_infer_reports_every_stage_as_json(model_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "infer", "--model", str(model_dir), "--runs", "3", "--image-runs", "1",
                 "--megapixels", "0.05", "--breakdown", "--json", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    assert res["model"]["sha256"] == Policy.load(model_dir).content_hash
    for stage in ("predict", "predict_mean_edit", "predict_batch_mean_edit", "actor_forward", "proxy", "render",
                  "retouch", "save_tiff16"):
        s = res[stage]
        assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["max_ms"], stage
    assert "predict, chosen head only" in res["breakdown"]
    assert res["breakdown"]["fused trunks path"] in ("plain conv2d", "prepacked oneDNN")  # which one predict uses
    assert res["machine"]["processor"] and res["machine"]["torch_cpu"]  # timings differ by CPU: it is named
    assert res["breakdown"]["sketch_matches_predict"] is True  # the faster loop it times makes the same choices
    w, h = res["image"]["width"], res["image"]["height"]
    assert abs(w * h - 50_000) < 1_000 and abs(w / h - 1.5) < 0.01
    assert res["batch"] == 8
    assert "policy inference" in capsys.readouterr().out


REAL_CR2 = Path("/work/shared/raw/IMG_5952.CR2")


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CR2.is_file(), reason=f"the real camera RAW {REAL_CR2} is not on this machine")
def test_a_real_canon_cr2_retouches_to_the_render_of_its_development(policy, tmp_path):
    res = R.retouch_file(REAL_CR2, policy, opts(tmp_path))
    assert res.status == "done", res.message
    written = read16(tmp_path / "IMG_5952.tif")
    expected = render(load_image(REAL_CR2), EditSequence.load(tmp_path / "IMG_5952.json"))
    assert written.shape == expected.shape == (2348, 3522, 3)
    assert np.abs(written - expected).max() <= Q16
