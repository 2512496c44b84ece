"""What pyproject.toml cannot say: the shipped models and the editor plug-ins travel in the wheel.

* each ``models/<name>/`` (its ``policy.pt``, ``config.json`` and ``model_card.md``; not checkpoints, reports or
  histories) becomes ``exposure_engine/models/<name>/``, where an installed copy looks for its default model
  (``exposure_engine.retouch.model_roots``);
* ``plugins/`` becomes ``exposure_engine/_plugins/``, where ``exposure-engine plugins install`` finds the files it
  copies into the editor (``exposure_engine.installers``).

A checkout or an editable install reads ``models/`` and ``plugins/`` where they are. setuptools ships data by
package, so each of these folders is declared as one (mapped to its folder below); everything else about the
package is in pyproject.toml. tests/test_packaging.py builds a wheel and checks an install of it.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
MODEL_FILES = ["policy.pt", "config.json", "model_card.md"]
MODELS = sorted(p.parent.name for p in (HERE / "models").glob("*/policy.pt"))
# every folder below plugins/ and the files it ships
PLUGINS = {"darktable": ["*.lua"], "gimp": [], "gimp/exposure-auto-retouch": ["*.py"]}


def _package(prefix: str, folder: str) -> str:
    return ".".join([prefix, *Path(folder).parts])


setup(
    packages=[*find_packages(include=["exposure_engine", "exposure_engine.*"]), "exposure_engine.examples",
              "exposure_engine.models", *(_package("exposure_engine.models", m) for m in MODELS),
              "exposure_engine._plugins", *(_package("exposure_engine._plugins", f) for f in PLUGINS)],
    package_dir={"exposure_engine.models": "models", "exposure_engine._plugins": "plugins"},
    package_data={"exposure_engine": ["schema/*.json"], "exposure_engine.examples": ["*"],
                  **{_package("exposure_engine.models", m): MODEL_FILES for m in MODELS},
                  **{_package("exposure_engine._plugins", f): files for f, files in PLUGINS.items()}},
)
