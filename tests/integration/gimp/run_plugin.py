"""Batch driver run by GIMP's python-fu-eval inside the chroot (tests/integration/test_gimp.py).

Reads its jobs from the JSON file named by $EXPOSURE_GIMP_JOBS (one GIMP start for all of them):
    [{"image": path, "sequence": path or "", "server": url, "mode": "native"|"exact", "variants": 1,
      "seed": -1, "out_dir": path}, ...]
For each job it opens the image as a user would, calls python-fu-exposure-auto-retouch NON-INTERACTIVELY
and writes into out_dir: result.json (status, error message, layer names/visibility/parasites, image precision) and, on
success, displayed.npy: the flattened image as GIMP displays it (sRGB-encoded float32, (H, W, 3)).
"""
import json
import os
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402
import numpy as np  # noqa: E402


def describe(item):
    p = item.get_parasite("exposure-engine-step")
    d = {"name": item.get_name(), "visible": item.get_visible(),
         "step": json.loads(bytes(p.get_data()).decode()) if p else None}
    if item.is_group():
        d["children"] = [describe(c) for c in item.get_children()]
    return d


def run_job(job):
    out = {"status": None, "error": None}
    t0 = time.monotonic()
    img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(job["image"]))
    layer = img.get_layers()[0]
    proc = Gimp.get_pdb().lookup_procedure("python-fu-exposure-auto-retouch")
    out["registered"] = proc is not None
    if proc is not None:
        cfg = proc.create_config()
        cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        cfg.set_property("image", img)
        cfg.set_core_object_array("drawables", [layer])
        for key in ("sequence", "server", "mode", "variants", "seed", "style"):
            if key in job:
                cfg.set_property(key, job[key])
        result = proc.run(cfg)
        out["seconds"] = round(time.monotonic() - t0, 3)
        out["status"] = result.index(0).value_nick
        if result.index(0) != Gimp.PDBStatusType.SUCCESS:
            err = Gimp.get_pdb().get_last_error()
            out["error"] = err
        out["precision"] = img.get_precision().value_nick

        out["layers"] = [describe(item) for item in img.get_layers()]  # top first
        seqp = img.get_parasite("exposure-engine-sequence")
        out["sequence"] = json.loads(bytes(seqp.get_data()).decode()) if seqp else None
        if out["status"] == "success":
            flat = img.flatten()
            buf = flat.get_buffer()
            rect = buf.get_extent()
            data = buf.get(rect, 1.0, "R'G'B' float", Gegl.AbyssPolicy.CLAMP)
            np.save(os.path.join(job["out_dir"], "displayed.npy"),
                    np.frombuffer(data, np.float32).reshape(rect.height, rect.width, 3))
    img.delete()
    with open(os.path.join(job["out_dir"], "result.json"), "w") as fh:
        json.dump(out, fh, indent=1)


for job in json.load(open(os.environ["EXPOSURE_GIMP_JOBS"])):
    try:
        run_job(job)
    except Exception:  # one broken job must not hide the others' results
        with open(os.path.join(job["out_dir"], "result.json"), "w") as fh:
            json.dump({"status": "driver-exception", "error": traceback.format_exc()}, fh)
