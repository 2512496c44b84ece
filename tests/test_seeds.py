"""``train --seeds N``: seeds trained side by side in their own processes, the one that best redevelops the target
photos kept, nothing lost when one fails or the parent is killed. A tiny architecture on synthetic photos, as in
test_training.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exposure_engine.agent.policy import Policy
from exposure_engine.cli import main as cli_main
from exposure_engine.training.select import draws_of, score_policies
from test_training import _env, _finished_photos, tiny_recipe_file, write_folders  # pytest puts tests/ on sys.path


def _common(tmp_path: Path, iterations: int = 3) -> list[str]:
    _finished_photos(tmp_path / "ph", 10)
    return ["train", "--split-from", str(tmp_path / "ph"), "--holdout", "1", "--recipe",
            str(tiny_recipe_file(tmp_path / "r.json")), "--iterations", str(iterations), "--no-progress"]


@pytest.mark.slow
def test_seeds_train_side_by_side_and_the_one_that_best_redevelops_the_targets_is_the_model(tmp_path, capsys):
    common = _common(tmp_path)
    out = tmp_path / "style"
    assert cli_main([*common, "--out", str(out), "--seed", "3", "--seeds", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    runs = {s: out / "seeds" / f"seed-{s}" for s in (3, 4)}
    assert summary["seeds"] == [3, 4] and set(summary["iterations"].values()) == {3}
    for folder in runs.values():
        assert (folder / "policy.pt").is_file() and (folder / "checkpoint.pt").is_file()
        assert "done: 3 iterations" in (folder / "train.log").read_text()  # each run's own log
    # each seed's run is exactly what a standalone `train --seed K` writes
    assert cli_main([*common, "--out", str(tmp_path / "alone"), "--seed", "4"]) == 0
    assert Policy.load(tmp_path / "alone").content_hash == Policy.load(runs[4]).content_hash
    # the choice: the best mean over the same RAW-like draws of the target photos, rescored here independently
    targets = json.loads((out / "config.json").read_text())["training"]["split"]["targets"]
    rows = score_policies({str(s): Policy.load(f) for s, f in runs.items()},
                          draws_of([tmp_path / "ph" / n for n in targets], 5))
    best = max(rows, key=lambda r: r["val_psnr"])
    assert summary["chosen_seed"] == int(best["model"]) and summary["target_psnr"] == best["val_psnr"]
    assert [r["val_psnr"] for r in summary["scores"]] == [r["val_psnr"] for r in rows]
    chosen = runs[summary["chosen_seed"]]
    model = Policy.load(out)
    assert model.content_hash == Policy.load(chosen).content_hash and model.name == "style"
    assert (out / "policy.pt").read_bytes() == (chosen / "policy.pt").read_bytes()
    assert (out / "last" / "policy.pt").read_bytes() == (chosen / "last" / "policy.pt").read_bytes()
    assert model.config["training"]["seeds"]["chosen_seed"] == summary["chosen_seed"]
    assert json.loads((out / "seeds.json").read_text())["chosen_seed"] == summary["chosen_seed"]
    assert (out / "report" / "seeds.png").is_file()  # every seed's curves, beside the kept seed's report
    assert not (out / "checkpoint.pt").exists()  # a resume goes through the seeds' own folders


@pytest.mark.slow
def test_a_failed_seed_is_reported_and_the_other_seeds_model_is_kept(tmp_path, capsys):
    common = _common(tmp_path)
    out = tmp_path / "style"
    broken = out / "seeds" / "seed-1"
    broken.mkdir(parents=True)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")  # seed 1's --resume cannot load it
    assert cli_main([*common, "--out", str(out), "--seeds", "2", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "seed 1 (exit code 1" in err and str(broken / "train.log") in err and "--resume" in err
    assert (out / "seeds" / "seed-0" / "policy.pt").is_file()  # the other seed finished and is kept
    assert not (out / "policy.pt").exists()  # no choice made among incomplete runs


@pytest.mark.slow
def test_seeds_of_unpaired_folders_keep_their_last_weights_and_are_ranked_on_the_targets(tmp_path, capsys):
    ins, tgs = write_folders(tmp_path, n_targets=4)
    out = tmp_path / "o"
    assert cli_main(["train", "--inputs", str(ins), "--targets", str(tgs), "--out", str(out), "--seeds", "2",
                     "--recipe", str(tiny_recipe_file(tmp_path / "r.json")), "--iterations", "3",
                     "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "4 target photos" in summary["rule"] and len(summary["scores"]) == 2
    for s in (0, 1):  # no validation pairs: each run's model is its last weights
        assert Policy.load(out / "seeds" / f"seed-{s}").config["training"]["selection"] == {"rule": "last"}
    assert Policy.load(out).content_hash == Policy.load(out / "seeds" / f"seed-{summary['chosen_seed']}").content_hash


def test_seeds_are_at_least_one_and_not_under_torchrun(tmp_path, capsys, monkeypatch):
    common = _common(tmp_path)
    assert cli_main([*common, "--out", str(tmp_path / "o"), "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main([*common, "--out", str(tmp_path / "o"), "--seeds", "2"]) == 2
    assert "run it without torchrun" in capsys.readouterr().err
    assert not (tmp_path / "o" / "seeds").exists()


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids.update(int(c) for c in (task / "children").read_text().split())
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_killing_the_parent_stops_every_seed_and_resume_continues_them(tmp_path):
    common = _common(tmp_path, iterations=100000)
    out = tmp_path / "style"
    cmd = [sys.executable, "-m", "exposure_engine.cli", *common, "--out", str(out), "--seeds", "2",
           "--checkpoint-every", "3"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not all((out / "seeds" / f"seed-{s}" / "checkpoint.pt").is_file() for s in (0, 1)):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoints within 240 s"
            time.sleep(0.5)
        kids = _children(proc.pid)
        assert len(kids) >= 2
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(k) for k in kids), "a seed's training outlived its killed parent"
    import torch

    saved = {s: torch.load(out / "seeds" / f"seed-{s}" / "checkpoint.pt", weights_only=False)["iteration"]
             for s in (0, 1)}
    target = max(saved.values()) + 3
    res = subprocess.run(cmd[:cmd.index("--iterations")] + ["--iterations", str(target), "--no-progress", "--out",
                                                            str(out), "--seeds", "2", "--resume"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for s in (0, 1):
        log = (out / "seeds" / f"seed-{s}" / "train.log").read_text()
        assert f"at iteration {saved[s]}" in log  # resumed from its own checkpoint, not from scratch
    assert json.loads(res.stdout.strip().splitlines()[-1])["iterations"] == {"0": target, "1": target}
    assert (out / "policy.pt").is_file()
