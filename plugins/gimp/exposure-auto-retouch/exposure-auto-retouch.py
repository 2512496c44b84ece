#!/usr/bin/env python3
"""GIMP 3 plug-in: Filters > Exposure Auto-Retouch... (procedure ``python-fu-exposure-auto-retouch``).

The exposure-engine daemon predicts a short edit sequence for the layer (Hu et al., "Exposure", TOG 2018) and
computes a *plan* (exposure_engine/exporters/gimp.py): per step, the native GIMP operations that reproduce it
exactly, or "engine-render" where GIMP has none. This plug-in only executes the plan: one named layer per step
(its parameters in the layer name and in the ``exposure-engine-step`` parasite) plus a final display-encoding
layer, in 32-bit float linear precision so that nothing clips between steps, inside one undo group.

Non-interactive arguments: ``sequence`` (a saved edit-sequence JSON to apply; empty = ask the model),
``server`` (daemon address; empty = the installer's setting or tcp://127.0.0.1:5557), ``style``, ``variants``,
``seed`` (-1 = the model's mean edit, or fresh samples for variants), ``mode`` (``native`` or ``exact``). docs/gimp.md has the details and measurements.
"""
import json
import os
import sys

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import daemon_client as dc  # noqa: E402

PROC = "python-fu-exposure-auto-retouch"
STEP_PARASITE = "exposure-engine-step"          # exporters/gimp.py PARASITE
SEQUENCE_PARASITE = "exposure-engine-sequence"  # on the image: the sequence(s) applied, for reproduction
MODES = ("native", "exact")
CHANNELS = {"value": Gimp.HistogramChannel.VALUE, "red": Gimp.HistogramChannel.RED,
            "green": Gimp.HistogramChannel.GREEN, "blue": Gimp.HistogramChannel.BLUE}
# Engine-rendered pixels travel in strips of at most this many (48 MB as float RGB): bounded memory on both sides
# and a moving progress bar. The tests set it small to exercise the strip seams on a small image.
STRIP_PIXELS = int(os.environ.get("EXPOSURE_GIMP_STRIP_PIXELS") or 4_000_000)


def _parasite(name: str, doc) -> Gimp.Parasite:
    return Gimp.Parasite.new(name, Gimp.PARASITE_PERSISTENT, json.dumps(doc).encode("utf-8"))


# --------------------------------------------------------------------------------------------------------------
# Pixels


def _read_linear(drawable, rect=None):
    """``(H, W, C)`` float32 linear pixels of ``drawable`` (C = 4 with alpha) and the babl format used."""
    import numpy as np

    fmt = "RGBA float" if drawable.has_alpha() else "RGB float"  # 'RGB float' is linear light in babl
    buf = drawable.get_buffer()
    rect = rect or buf.get_extent()
    data = buf.get(rect, 1.0, fmt, Gegl.AbyssPolicy.CLAMP)
    return np.frombuffer(data, np.float32).reshape(rect.height, rect.width, -1), fmt


def _proxy(image, drawable):
    """A linear float32 ``(h, w, 3)`` copy of the layer, longest side <= PROXY_SIDE, for ``predict``.

    A throw-away image is scaled by GIMP (Gegl.Buffer.get with scale < 1 returns zeros on plug-in buffers)."""
    w, h = drawable.get_width(), drawable.get_height()
    tmp = Gimp.Image.new_with_precision(w, h, Gimp.ImageBaseType.RGB, Gimp.Precision.FLOAT_LINEAR)
    try:
        layer = Gimp.Layer.new_from_drawable(drawable, tmp)
        tmp.insert_layer(layer, None, 0)
        scale = dc.PROXY_SIDE / max(w, h)
        if scale < 1:
            layer.scale(max(1, round(w * scale)), max(1, round(h * scale)), False)
        pixels, _ = _read_linear(layer)
        return pixels[..., :3].copy()
    finally:
        tmp.delete()


def _engine_render(client, layer, sequence, progress):
    """Replace ``layer``'s pixels with the engine's rendering of ``sequence`` (clip off: the state stays raw)."""
    import numpy as np

    buf = layer.get_buffer()
    ext = buf.get_extent()
    rows = max(1, STRIP_PIXELS // max(1, ext.width))
    for y in range(0, ext.height, rows):
        rect = Gegl.Rectangle.new(ext.x, ext.y + y, ext.width, min(rows, ext.height - y))
        pixels, fmt = _read_linear(layer, rect)
        out = np.array(pixels)  # writable, keeps alpha
        out[..., :3] = client.render(pixels[..., :3], sequence, clip=False)
        buf.set(rect, fmt, out.tobytes())
        progress((y + rect.height) / ext.height)
    buf.flush()


def _gegl_op(layer, operation: str, properties: dict, name: str) -> None:
    f = Gimp.DrawableFilter.new(layer, operation, name)
    cfg = f.get_config()
    for key, value in properties.items():
        cfg.set_property(key, value)
    f.update()
    layer.merge_filter(f)


def _apply_op(client, layer, op: dict, name: str, progress) -> None:
    kind = op.get("op")
    if kind == "gegl":
        _gegl_op(layer, op["operation"], op.get("properties", {}), name)
    elif kind == "curves":
        if not layer.curves_explicit(CHANNELS[op["channel"]], [float(v) for v in op["values"]]):
            raise dc.EngineError(f"GIMP refused the curves of layer {name!r}")
    elif kind == "engine-render":
        _engine_render(client, layer, op["sequence"], progress)
    else:
        raise dc.EngineError(f"the plan asks for an operation this plug-in does not know ({kind!r}): update it")


def apply_plan(client, image, base, plan: dict, created: list, group_name=None):
    """Execute ``plan`` above layer ``base``: one layer per plan entry, each a copy of the one below with the
    entry's operations applied. Returns the new layers, bottom first; every item made is also appended to
    ``created`` (so that a failure can take them away again)."""
    parent, position = base.get_parent(), image.get_item_position(base)
    if group_name:
        group = Gimp.GroupLayer.new(image, group_name)
        image.insert_layer(group, parent, position)
        created.append(group)
        parent, position = group, 0
    layers, below = [], base
    entries = plan.get("layers", [])
    for i, entry in enumerate(entries):
        layer = below.copy()
        image.insert_layer(layer, parent, position)  # position: on top of the previous step
        created.append(layer)
        layer.set_name(entry["name"])
        layer.set_visible(True)
        layer.attach_parasite(_parasite(STEP_PARASITE, entry.get("step", {})))
        Gimp.progress_set_text(f"Exposure: {entry['name']}")
        ops = entry.get("ops", [])
        for op in ops:
            _apply_op(client, layer, op, entry["name"],
                      lambda f, i=i: Gimp.progress_update((i + f) / max(1, len(entries))))
        layer.update(0, 0, layer.get_width(), layer.get_height())
        Gimp.progress_update((i + 1) / max(1, len(entries)))
        layers.append(layer)
        below = layer
    if base.has_alpha():  # translucent copies stacked would show the steps below through each other
        for layer in layers[:-1]:
            layer.set_visible(False)
    return layers


# --------------------------------------------------------------------------------------------------------------
# The procedure


def _settings(config) -> dict:
    return {k: config.get_property(k) for k in ("sequence", "server", "style", "variants", "seed", "mode")}


def _to_linear_srgb(image) -> None:
    """32-bit float linear precision with sRGB primaries: the engine's input space (filters.py).

    Linear float: the plan's operations expect the state itself, unclipped, in every layer. An image in another
    RGB space (an embedded Adobe RGB profile, say) is converted after the precision change, in float, so that
    nothing is quantised; the engine's own loader converts such files to sRGB primaries the same way."""
    if image.get_precision() != Gimp.Precision.FLOAT_LINEAR:
        image.convert_precision(Gimp.Precision.FLOAT_LINEAR)
    profile = image.get_color_profile()  # None: GIMP's built-in sRGB (linear or not)
    if profile is not None:
        srgb = [Gimp.ColorProfile.new_rgb_srgb(), Gimp.ColorProfile.new_rgb_srgb_linear()]
        if not any(profile.is_equal(p) for p in srgb):
            image.convert_color_profile(srgb[1], Gimp.ColorRenderingIntent.RELATIVE_COLORIMETRIC, False)


def retouch(image, drawable, s: dict) -> str:
    """The whole run; returns a one-line summary or raises dc.EngineError with the message for the user."""
    mode = s["mode"] if s["mode"] in MODES else None
    if mode is None:
        raise dc.EngineError(f"mode must be one of {', '.join(MODES)}, not {s['mode']!r}")
    saved = dc.load_sequence(s["sequence"]) if s["sequence"] else None  # a bad file fails before any wait
    config = dc.load_config(HERE)
    url = s["server"] or config.get("server") or dc.DEFAULT_URL
    Gimp.progress_init("Exposure auto-retouch: connecting to the engine")
    client = dc.connect(url, config, log=lambda m: Gimp.progress_set_text(m))
    try:
        if saved is not None:
            sequences = [saved]
        else:
            Gimp.progress_set_text("Exposure auto-retouch: predicting")
            preds = client.predict(_proxy(image, drawable), variants=max(1, s["variants"]),
                                   seed=s["seed"], style=s["style"] or None)
            sequences = [p["sequence"] for p in preds]
        plans = [client.gimp_plan(seq, mode) for seq in sequences]

        image.undo_group_start()
        created = []
        try:
            _to_linear_srgb(image)
            top = None
            for v, plan in enumerate(plans):
                group = f"Exposure variant {v + 1}" if len(plans) > 1 else None
                layers = apply_plan(client, image, drawable, plan, created, group)
                if group and v > 0:
                    layers[-1].get_parent().set_visible(False)  # first variant shown, others one click away
                top = top or layers[-1]
            image.attach_parasite(_parasite(SEQUENCE_PARASITE, sequences if len(sequences) > 1 else sequences[0]))
            image.set_selected_layers([top])
        except BaseException:
            # No half-made stack: take away what this run added (the precision change stays in the undo step).
            for item in reversed(created):
                if item.is_valid() and (item.get_parent() is None or item.get_parent() not in created):
                    image.remove_layer(item)
            raise
        finally:
            image.undo_group_end()
        Gimp.displays_flush()
        Gimp.progress_end()
        return f"{len(plans[0]['layers']) - 1} steps applied" + (f" ({len(plans)} variants)" if len(plans) > 1 else "")
    finally:
        client.close()


def _error(procedure, status, message: str):
    """Tell the user (message console / stderr in batch mode) and return ``message`` as the procedure's error."""
    Gimp.message(message)
    return procedure.new_return_values(status, GLib.Error.new_literal(GLib.quark_from_string("exposure"),
                                                                      message, 0))


def run(procedure, run_mode, image, drawables, config, run_data):
    problem = None
    if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer) or drawables[0].is_group():
        problem = "Exposure Auto-Retouch works on one layer (not a group or a mask): select exactly one."
    elif image.get_base_type() != Gimp.ImageBaseType.RGB:
        problem = "Exposure Auto-Retouch needs an RGB image (Image > Mode > RGB)."
    if problem:
        return _error(procedure, Gimp.PDBStatusType.CALLING_ERROR, problem)
    if run_mode == Gimp.RunMode.INTERACTIVE:
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi

        GimpUi.init("exposure-auto-retouch")
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "Exposure Auto-Retouch")
        dialog.fill(["style", "variants", "seed", "mode", "sequence", "server"])
        ok = dialog.run()
        dialog.destroy()
        if not ok:
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
    try:
        retouch(image, drawables[0], _settings(config))
    except dc.EngineError as e:
        return _error(procedure, Gimp.PDBStatusType.EXECUTION_ERROR, f"Exposure Auto-Retouch: {e}")
    except Exception as e:  # a GIMP call that failed, or a bug: still a message, and GIMP carries on
        import traceback

        traceback.print_exc()
        return _error(procedure, Gimp.PDBStatusType.EXECUTION_ERROR,
                      f"Exposure Auto-Retouch failed: {type(e).__name__}: {e}")
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


class ExposureAutoRetouch(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False  # no translations shipped (GIMP would look for a locale/ folder and log about it)

    def do_query_procedures(self):
        return [PROC]

    def do_create_procedure(self, name):
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        proc.set_image_types("RGB*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        proc.set_menu_label("Exposure Auto-Retouch...")
        proc.add_menu_path("<Image>/Filters")
        proc.set_documentation(
            "Automatic white-box retouch: learned edit steps as named layers",
            "The exposure-engine daemon predicts a short sequence of ordinary edits (exposure, gamma, white "
            "balance, saturation, curves, contrast, black & white) for the layer; each becomes its own layer, "
            "made with native GIMP operations where they are exact. Needs exposure-engine (it is started on "
            "demand). 'sequence' applies a saved edit-sequence JSON instead of asking the model.", name)
        proc.set_attribution("exposure-engine", "exposure-engine contributors", "2026")
        rw = GObject.ParamFlags.READWRITE
        proc.add_string_argument("style", "St_yle", "Model folder to use (empty: the daemon's default)", "", rw)
        proc.add_int_argument("variants", "_Variants", "How many alternative edits (one layer group each)",
                              1, 8, 1, rw)
        proc.add_int_argument("seed", "See_d", "Seed of a dropout sample (-1: the model's mean edit, or new samples for variants)", -1, 2**31 - 1, -1, rw)
        choice = Gimp.Choice.new()
        choice.add("native", 0, "Native GIMP operations where exact", "")
        choice.add("exact", 1, "Engine-rendered pixels for every step", "")
        proc.add_choice_argument("mode", "_Mode", "How steps become layers", choice, "native", rw)
        proc.add_string_argument("sequence", "Se_quence file",
                                 "A saved edit-sequence JSON to apply (empty: ask the model)", "", rw)
        proc.add_string_argument("server", "Daemon _URL",
                                 "exposure-engine daemon (empty: tcp://127.0.0.1:5557 or the installer's)", "", rw)
        return proc


Gimp.main(ExposureAutoRetouch.__gtype__, sys.argv)
