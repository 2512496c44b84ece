"""A wheel built from this checkout is a working install: it carries the shipped models and the editor plug-ins,
and an installed copy (no checkout beside it) loads its default model and installs both plug-ins from its own
files. Built offline (no build isolation) from a copy of the checkout, so the test writes nothing into it."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds and installs a wheel: 10-45 s

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = sorted(p.parent.name for p in (ROOT / "models").glob("*/policy.pt"))
PLUGIN_FILES = ["darktable/exposure_auto_retouch.lua", "gimp/exposure-auto-retouch/exposure-auto-retouch.py",
                "gimp/exposure-auto-retouch/daemon_client.py"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "checkpoint*.pt", "cache")
    for folder in ("exposure_engine", "models", "plugins"):
        shutil.copytree(ROOT / folder, src / folder, ignore=skip)
    # What a trainer leaves in a model folder and must not be shipped:
    (src / "models" / "default" / "checkpoint.pt").write_bytes(b"resume state")
    out = tmp_path_factory.mktemp("wheel")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(out), str(src)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    (whl,) = out.glob("exposure_engine-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """(site folder, environment) of the wheel installed away from the checkout."""
    site = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                          str(wheel)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("EXPOSURE_ENGINE_MODELS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install of this checkout
    return site, env


def test_wheel_carries_models_plugins_and_nothing_a_trainer_leaves_behind(wheel):
    assert "default" in SHIPPED_MODELS
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for model in SHIPPED_MODELS:
            for f in ("policy.pt", "config.json"):
                assert _sha(z.read(f"exposure_engine/models/{model}/{f}")) == \
                    _sha((ROOT / "models" / model / f).read_bytes()), (model, f)
        for f in PLUGIN_FILES:
            assert z.read(f"exposure_engine/_plugins/{f}") == (ROOT / "plugins" / f).read_bytes(), f
    models = {n for n in names if n.startswith("exposure_engine/models/")}
    assert not any(n.endswith(("checkpoint.pt", "history.json", ".png")) for n in models), sorted(models)
    assert {"exposure_engine/examples/great-wall.tif", "exposure_engine/schema/edit-sequence-v1.schema.json"} \
        <= names


def test_installed_copy_loads_its_own_default_model(installed, tmp_path):
    site, env = installed
    probe = "import exposure_engine.retouch as r; r.load_policy(); print(r.find_model()); print(r.__file__)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    model_dir, module = run.stdout.split()
    assert Path(model_dir) == site / "exposure_engine" / "models" / "default"
    assert Path(module).is_relative_to(site)  # the installed code ran, not the checkout's


@pytest.mark.parametrize("editor, copied", [
    ("darktable", {"lua/exposure_auto_retouch.lua": "darktable/exposure_auto_retouch.lua"}),
    ("gimp", {f"plug-ins/exposure-auto-retouch/{n}": f"gimp/exposure-auto-retouch/{n}"
              for n in ("exposure-auto-retouch.py", "daemon_client.py")}),
])
def test_installed_copy_installs_the_editor_plugins_from_its_own_files(installed, tmp_path, editor, copied):
    site, env = installed
    folder = tmp_path / editor
    run = subprocess.run([sys.executable, "-m", "exposure_engine", "plugins", "install", editor, "--folder",
                          str(folder)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    for dest, source in copied.items():
        assert (folder / dest).read_bytes() == (ROOT / "plugins" / source).read_bytes(), dest
    probe = f"from exposure_engine.installers import {editor} as m; print(m.plugin_source())"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert Path(run.stdout.strip()).is_relative_to(site / "exposure_engine" / "_plugins"), run.stdout + run.stderr
