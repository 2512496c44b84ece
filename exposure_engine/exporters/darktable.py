"""Edit sequences as darktable 4.2 history: XMP sidecars and .dtstyle styles.

Two modes:

* ``native``: one editable darktable module instance per step, named after the step ("3 Tone curve"), using the
  translation table :data:`TRANSLATIONS` (filter name -> darktable modules);
* ``exact``: the whole sequence baked into one ``lut3d`` instance reading a generated .cube file
  (:mod:`exposure_engine.exporters.cube`).

How the sequence's meaning is kept inside darktable's pipeline (measured with darktable 4.2.1, see
docs/darktable.md):

* **Order.** darktable runs modules in its *pipe order*, not in history order. Every instance we add is placed,
  in sequence order, just before ``colorout`` through a custom iop order (``iop_order_version`` 0 with an
  explicit ``iop_order_list``; a .dtstyle carries the same list in ``<iop_list>``). Everything darktable did
  before (raw development, the user's own edits) is the sequence's input, as it is in the proxy the engine saw.
* **Colour space.** darktable's working space is linear Rec.2020; the sequence is defined on linear RGB with
  sRGB/Rec.709 primaries. Linear steps (white balance, black & white) become ``channelmixerrgb`` matrices
  ``T M T^-1`` (T: Rec.709 -> Rec.2020). Per-channel steps (gamma, curves) only mean the same thing on Rec.709
  coordinates, so a ``channelmixerrgb`` "to sRGB primaries" (``T^-1``) is emitted before them and one "to working
  space" (``T``) after. Contrast and saturation also run on Rec.709 coordinates, where they came closest to the
  paper's formulas (measured); any module needing the real working space would get a "to working space" first.
* **Display encoding.** The last step's output is already display-encoded sRGB, but ``colorout`` encodes again.
  A final ``rgbcurve`` ("display decoding": the sRGB EOTF on Rec.709 coordinates) undoes that, so the exported
  file holds the sequence's values and the image stays correctly tagged sRGB.

Module parameter layouts are the little-endian C structs of darktable 4.2.1 (module versions in
:data:`MODULE_VERSIONS`), checked against /work/shared/notes/darktable-4.2.md and darktable's src/iop/*.c.
"""
from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from .. import filters as F
from ..imageio.transfer import srgb_to_linear
from ..sequence import EditSequence, Step

# ----------------------------------------------------------------------------------------------------------------
# darktable constants

MODULE_VERSIONS = {"exposure": 6, "channelmixerrgb": 3, "rgblevels": 1, "rgbcurve": 1, "colorbalancergb": 5,
                   "lut3d": 3, "velvia": 2, "temperature": 3}
PARAM_SIZES = {"exposure": 24, "channelmixerrgb": 160, "rgblevels": 44, "rgbcurve": 516, "colorbalancergb": 132,
               "lut3d": 12940, "velvia": 8, "temperature": 16}

# "Blend off", blendop version 11, exactly as darktable 4.2.1 writes it (all our instances are unmasked).
BLENDOP_VERSION = 11
BLENDOP_OFF = "gz14eJxjYIAACQYYOOHEgAZY0QVwggZ7CB6pfNoAAE8gGQg="

IOP_ORDER_CUSTOM, IOP_ORDER_V30, IOP_ORDER_V30_JPG = 0, 2, 3

# darktable's default pipe orders (src/common/iop_order.c: v30_order for raws, v30_jpg_order for rasters).
_V30_COMMON_TAIL = (
    "channelmixerrgb diffuse censorize negadoctor blurs nlmeans colorchecker defringe atrous lowpass highpass "
    "sharpen colortransfer colormapping channelmixer basicadj colorbalance colorbalancergb rgbcurve rgblevels "
    "basecurve filmic sigmoid filmicrgb lut3d colisa tonecurve levels shadhi zonesystem globaltonemap relight bilat "
    "colorcorrection colorcontrast velvia vibrance colorzones bloom colorize lowlight monochrome grain soften "
    "splittoning vignette colorreconstruct colorout clahe finalscale overexposed rawoverexposed dither borders "
    "watermark gamma").split()
_V30_LINEAR = ("denoiseprofile bilateral rotatepixels scalepixels lens cacorrectrgb hazeremoval ashift flip clipping "
               "liquify spots retouch exposure mask_manager tonemap toneequal crop graduatednd profile_gamma "
               "equalizer").split()
_RAW_HEAD = "rawprepare invert temperature highlights cacorrect hotpixels rawdenoise demosaic".split()
V30_ORDER = tuple(_RAW_HEAD + _V30_LINEAR + ["colorin"] + _V30_COMMON_TAIL)
V30_JPG_ORDER = tuple(_RAW_HEAD + ["colorin"] + _V30_LINEAR + _V30_COMMON_TAIL)
INPUT_KINDS = ("raster", "raw")

# Linear sRGB (Rec.709 primaries, D65) -> linear Rec.2020 (D65): T. darktable's working space is linear Rec.2020.
SRGB_TO_REC2020 = np.array([[0.6274039, 0.3292830, 0.0433131],
                            [0.0690973, 0.9195404, 0.0113623],
                            [0.0163914, 0.0880133, 0.8955953]])
REC2020_TO_SRGB = np.linalg.inv(SRGB_TO_REC2020)

# Saturation: darktable has no HSV saturation. Of colorbalancergb (chroma, saturation, vibrance) and velvia, in
# either coordinate state, velvia with mid-tones bias 1 on Rec.709 coordinates came closest to the paper's filter
# on the test chart after [gamma 1/2.2] (tests/integration/darktable/fit_saturation.py; mean dE with no module /
# best fit: amount 0.5: 3.97 / 2.20 at strength 25; amount 1: 7.76 / 4.39 at strength 40, 4.56 at 60).
SATURATION_VELVIA_STRENGTH = 45.0  # velvia strength (%) per unit of the paper's amount
SATURATION_VELVIA_BIAS = 1.0


class ExportError(ValueError):
    """A sequence that cannot be exported as asked (the message names the step or option)."""


# ----------------------------------------------------------------------------------------------------------------
# History entries and module parameters


@dataclass
class HistoryEntry:
    """One darktable module instance: ``params`` is the raw C struct."""
    operation: str
    params: bytes
    multi_name: str
    multi_priority: int = 0
    enabled: bool = True

    @property
    def version(self) -> int:
        return MODULE_VERSIONS[self.operation]


def encode_params(blob: bytes) -> str:
    """darktable's text form of a params blob: lowercase hex, or ``gz``+factor+base64(zlib) above 100 bytes."""
    if len(blob) <= 100:
        return blob.hex()
    packed = zlib.compress(blob, 9)
    factor = min(99, len(blob) // len(packed) + 1)  # darktable only uses it to size the inflate buffer
    return f"gz{factor:02d}" + base64.b64encode(packed).decode("ascii")


def decode_params(text: str) -> bytes:
    """Inverse of :func:`encode_params` (used by tests and to read darktable's own exports)."""
    if text.startswith("gz"):
        return zlib.decompress(base64.b64decode(text[4:]))
    return bytes.fromhex(text)


def pack_exposure(ev: float) -> bytes:
    # mode manual, black 0, exposure, deflicker percentile 50 / target -4 (unused), compensate_exposure_bias off
    return struct.pack("<i4fi", 0, 0.0, float(ev), 50.0, -4.0, 0)


def pack_channelmixer(matrix: np.ndarray) -> bytes:
    """``channelmixerrgb`` applying ``out = matrix @ in`` on working-space RGB (adaptation bypassed, no
    normalisation, no gamut compression, no clipping: an exact linear map)."""
    m = np.asarray(matrix, dtype=np.float64).reshape(3, 3)
    rows = [list(m[i]) + [0.0] for i in range(3)]
    zeros = [0.0] * 4
    floats = rows[0] + rows[1] + rows[2] + zeros + zeros + zeros  # red, green, blue, saturation, lightness, grey
    ints = [0, 0, 0, 0, 0, 0, 0, 0, 0, 4]  # normalize R,G,B,sat,light,grey; illuminant, fluo, led; adaptation RGB
    tail_f = [0.3457, 0.3585, 5003.0, 0.0]  # x, y (D50, unused), temperature (unused), gamut compression off
    return struct.pack("<24f10i4f2i", *floats, *ints, *tail_f, 0, 2)  # clip off, version 3 saturation (2)


def pack_rgblevels(gamma: float) -> bytes:
    """``rgblevels`` with black 0, white 1 and grey chosen so out = in^gamma (its exponent is 10^(2 grey - 1))."""
    if not 0.1 <= gamma <= 10.0:
        raise ExportError(f"gamma {gamma} is outside rgblevels' range [0.1, 10]")
    grey = (math.log10(gamma) + 1.0) / 2.0
    levels = [0.0, grey, 1.0] * 3
    return struct.pack("<2i9f", 1, 0, *levels)  # independent channels (all equal), preserve colours: none


RGBCURVE_MAX_NODES = 20
MONOTONE_HERMITE = 2


def pack_rgbcurve(curves: Sequence[Sequence[tuple[float, float]]], *, preserve_colors: int = 0) -> bytes:
    """``rgbcurve`` from 1 (linked) or 3 (independent R, G, B) node lists of (x, y), monotone Hermite.

    preserve_colors: 0 none (the curve on each channel), 1 luminance (the curve on the luminance, RGB ratios kept).
    """
    if len(curves) not in (1, 3):
        raise ValueError("rgbcurve takes 1 or 3 curves")
    independent = len(curves) == 3
    node_block, counts = [], []
    for c in range(3):
        nodes = list(curves[c if independent else 0]) if (independent or c == 0) else [(0.0, 0.0), (1.0, 1.0)]
        if not 2 <= len(nodes) <= RGBCURVE_MAX_NODES:
            raise ValueError(f"rgbcurve needs 2..{RGBCURVE_MAX_NODES} nodes, got {len(nodes)}")
        counts.append(len(nodes))
        flat = [v for xy in nodes for v in xy] + [0.0] * (2 * (RGBCURVE_MAX_NODES - len(nodes)))
        node_block += flat
    return struct.pack("<120f3i3i3i", *node_block, *counts, *([MONOTONE_HERMITE] * 3), int(independent), 0,
                       int(preserve_colors))


def pack_colorbalancergb(**values: float) -> bytes:
    """``colorbalancergb`` v5 with every control neutral except ``values`` (names of the C struct fields)."""
    names = ["shadows_Y", "shadows_C", "shadows_H", "midtones_Y", "midtones_C", "midtones_H", "highlights_Y",
             "highlights_C", "highlights_H", "global_Y", "global_C", "global_H", "shadows_weight", "white_fulcrum",
             "highlights_weight", "chroma_shadows", "chroma_highlights", "chroma_global", "chroma_midtones",
             "saturation_global", "saturation_highlights", "saturation_midtones", "saturation_shadows",
             "hue_angle", "brilliance_global", "brilliance_highlights", "brilliance_midtones",
             "brilliance_shadows", "mask_grey_fulcrum", "vibrance", "grey_fulcrum", "contrast"]
    d = dict.fromkeys(names, 0.0)
    d.update(shadows_weight=1.0, highlights_weight=1.0, mask_grey_fulcrum=0.1845, grey_fulcrum=0.1845)
    for k, v in values.items():
        if k not in d:
            raise KeyError(f"colorbalancergb has no field {k!r}")
        d[k] = float(v)
    return struct.pack("<32fi", *(d[n] for n in names), 1)  # saturation formula: darktable UCS 22


def pack_velvia(strength: float, bias: float) -> bytes:
    """``velvia``: strength 0..100 (%), mid-tones bias 0..1."""
    return struct.pack("<2f", float(strength), float(bias))


def pack_temperature(coeffs: Sequence[float]) -> bytes:
    """``temperature`` (white balance) multipliers in camera RGB, normalised to green = 1; a 4th value is the
    second green of a Bayer sensor (1 when absent)."""
    c = [float(v) for v in coeffs]
    if len(c) not in (3, 4) or not all(math.isfinite(v) and v > 0 for v in c[:3]):
        raise ExportError(f"raw_white_balance must be 3 or 4 positive multipliers, not {coeffs!r}")
    g = c[1]
    g2 = c[3] / g if len(c) == 4 and c[3] > 0 else 1.0
    return struct.pack("<4f", c[0] / g, 1.0, c[2] / g, g2)


def camera_white_balance(path) -> list[float]:
    """The as-shot white-balance multipliers of a raw file (what rawpy/LibRaw develop the engine's input with)."""
    import rawpy

    with rawpy.imread(str(path)) as raw:
        return [float(v) for v in raw.camera_whitebalance]


def raw_development_entries(raw_white_balance: Sequence[float] | None) -> list[HistoryEntry]:
    """For an XMP of a raw: pin darktable's white balance to the camera's as-shot multipliers.

    The engine's input is LibRaw's development with the camera white balance. darktable's default white balance
    depends on a user preference: with "modern" chromatic adaptation (the default) it is D65 and the as-shot
    correction is left to a colour calibration instance that only darktable's auto-presets add (which an XMP
    with auto_presets_applied=1 skips): colours came out at mean dE 22 on a test DNG. An explicit temperature
    entry gives 0.69 in both modes (docs/darktable.md)."""
    if raw_white_balance is None:
        return []
    return [HistoryEntry("temperature", pack_temperature(raw_white_balance), "", 0)]


def pack_lut3d(cube_file: str, *, colorspace: int = 0) -> bytes:
    """``lut3d`` reading ``cube_file`` (relative to darktable's 3D LUT root folder), tetrahedral interpolation.

    colorspace 0 = sRGB-encoded LUT input/output (what :mod:`.cube` writes)."""
    path = cube_file.encode("utf-8")
    if len(path) >= 512:
        raise ExportError(f"LUT file name too long for darktable (max 511 bytes): {cube_file}")
    name = cube_file.rsplit(".", 1)[0].encode("utf-8")[:127]
    return struct.pack("<512s3i12288s128s", path, colorspace, 0, 0, b"", name)


# ----------------------------------------------------------------------------------------------------------------
# Curves: nodes for darktable's 20-node monotone Hermite rgbcurve


# Knots of the display decoding curve: denser where the EOTF bends most (near black), 20 nodes in all.
_DECODE_X = np.concatenate([[0.0, 0.02, 0.04045], np.linspace(0.08, 1.0, 17)])


def decode_nodes() -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in zip(_DECODE_X, srgb_to_linear(_DECODE_X, np.float64))]


def segment_curve_nodes(slopes: Sequence[float]) -> list[tuple[float, float]]:
    """Nodes for the paper's 8-segment piecewise-linear curve: its 9 knots plus one node inside each segment
    near each interior knot, so the Hermite interpolation stays straight on most of each segment (17 nodes)."""
    t = np.asarray(slopes, dtype=np.float64)
    n = t.size
    cum = np.concatenate([[0.0], np.cumsum(t)]) / t.sum()
    f = lambda x: float(np.interp(x, np.linspace(0, 1, n + 1), cum))
    xs = sorted({k / n for k in range(n + 1)} | {(k + 0.5) / n for k in range(n)})
    return [(x, f(x)) for x in xs]


def contrast_nodes(amount: float) -> list[tuple[float, float]]:
    """Luminance curve f(L) = (1-p) L + p (0.5 - 0.5 cos(pi L)): the paper's contrast is out = img * f(L) / L."""
    xs = np.concatenate([[0.0], np.linspace(0.02, 1.0, 19)])
    ys = (1 - amount) * xs + amount * (0.5 - 0.5 * np.cos(np.pi * xs))
    return [(float(x), float(y)) for x, y in zip(xs, ys)]


# ----------------------------------------------------------------------------------------------------------------
# The translation table: filter name -> what to emit. Each translation yields "ops":
#   ("matrix", M)          a linear map on linear sRGB coordinates (becomes channelmixerrgb in any state)
#   ("srgb", entry)        a module that must see Rec.709 (sRGB-primaries) coordinates (per-channel ops)
#   ("working", entry)     a module that must see the real working space (luminance / chroma based)
#   ("any", entry)         a module indifferent to primaries (exposure: a scalar gain)


@dataclass
class Translation:
    """How one filter maps to darktable: ``emit(step) -> ops``; ``exact`` says whether it is exact."""
    modules: str
    exact: bool
    emit: Callable[[Step], list[tuple]]
    note: str = ""


def _bw_matrix(p: float) -> np.ndarray:
    lum = np.array([F.LUM_R, F.LUM_G, F.LUM_B])
    return (1 - p) * np.eye(3) + p * np.outer(np.ones(3), lum)


def _tone(step: Step) -> list[tuple]:
    return [("srgb", HistoryEntry("rgbcurve", pack_rgbcurve([segment_curve_nodes(step.params["slopes"])]), ""))]


def _colour_curves(step: Step) -> list[tuple]:
    curves = [segment_curve_nodes(row) for row in step.params["slopes"]]
    return [("srgb", HistoryEntry("rgbcurve", pack_rgbcurve(curves), ""))]


def _saturation(step: Step) -> list[tuple]:
    strength = min(100.0, SATURATION_VELVIA_STRENGTH * float(step.params["amount"]))
    return [("srgb", HistoryEntry("velvia", pack_velvia(strength, SATURATION_VELVIA_BIAS), ""))]


TRANSLATIONS: dict[str, Translation] = {
    "exposure": Translation("exposure", True,
                            lambda s: [("any", HistoryEntry("exposure", pack_exposure(s.params["ev"]), ""))]),
    "gamma": Translation("rgblevels", True,
                         lambda s: [("srgb", HistoryEntry("rgblevels", pack_rgblevels(s.params["gamma"]), ""))],
                         "exact except the engine's floor max(x, 0.001)"),
    "white_balance": Translation("channelmixerrgb", True, lambda s: [("matrix", np.diag(s.params["gains"]))]),
    "saturation": Translation("velvia", False, _saturation,
                              "HSV saturation has no darktable equivalent: velvia, strength fitted on a chart"),
    "tone_curve": Translation("rgbcurve", False, _tone,
                              "piecewise-linear curve through monotone Hermite nodes: knots slightly rounded"),
    "color_curves": Translation("rgbcurve", False, _colour_curves, "as tone_curve, one curve per channel"),
    # On Rec.709 coordinates darktable's luminance (Rec.2020 Y weights 0.2627/0.6780/0.0593, since it believes
    # the values are Rec.2020) is within 0.01 of the paper's 0.27/0.67/0.06: closer than the true Y would be.
    "contrast": Translation("rgbcurve", False,
                            lambda s: [("srgb", HistoryEntry(
                                "rgbcurve", pack_rgbcurve([contrast_nodes(float(s.params["amount"]))],
                                                          preserve_colors=1), ""))],
                            "luminance curve keeping RGB ratios (preserve colors: luminance); luminance weights "
                            "0.2627/0.6780/0.0593 vs the paper's 0.27/0.67/0.06"),
    "black_and_white": Translation("channelmixerrgb", True,
                                   lambda s: [("matrix", _bw_matrix(float(s.params["amount"])))]),
}


# ----------------------------------------------------------------------------------------------------------------
# Sequence -> history


def _to_working(m: np.ndarray) -> np.ndarray:
    return SRGB_TO_REC2020 @ m @ REC2020_TO_SRGB


def native_entries(sequence: EditSequence) -> list[HistoryEntry]:
    """The native-mode module instances, in pipe order (= sequence order), multi-priorities unique per module."""
    ops: list[tuple[str, object, str]] = []  # (kind, payload, multi_name)
    for i, step in enumerate(sequence.steps, start=1):
        tr = TRANSLATIONS.get(step.filter)
        if tr is None:
            raise ExportError(f"steps[{i - 1}].filter: no darktable translation for {step.filter!r}")
        for kind, payload in tr.emit(step):
            ops.append((kind, payload, f"{i} {step.definition.title}"))
    ops.append(("srgb", HistoryEntry("rgbcurve", pack_rgbcurve([decode_nodes()]), ""), "display decoding"))

    entries: list[HistoryEntry] = []
    state = "working"
    for kind, payload, name in ops:
        if kind == "matrix":
            m = np.asarray(payload, dtype=np.float64)
            entries.append(HistoryEntry("channelmixerrgb", pack_channelmixer(_to_working(m) if state == "working"
                                                                              else m), name))
            continue
        if kind in ("srgb", "working") and kind != state:
            conv = REC2020_TO_SRGB if kind == "srgb" else SRGB_TO_REC2020
            entries.append(HistoryEntry("channelmixerrgb", pack_channelmixer(conv),
                                        "to sRGB primaries" if kind == "srgb" else "to working space"))
            state = kind
        entry = payload
        entry.multi_name = name
        entries.append(entry)
    if state != "working":
        entries.append(HistoryEntry("channelmixerrgb", pack_channelmixer(SRGB_TO_REC2020), "to working space"))
    return _number_instances(entries)


def exact_entries(cube_file: str, name: str = "exposure") -> list[HistoryEntry]:
    return _number_instances([HistoryEntry("lut3d", pack_lut3d(cube_file), f"{name} (exact)")])


def _number_instances(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    # Instance 0 of every module keeps its default place (darktable's own exposure on raws, for instance), so
    # ours start at 1.
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.operation] = seen.get(e.operation, 0) + 1
        e.multi_priority = seen[e.operation]
    return entries


def iop_order(entries: Sequence[HistoryEntry], input_kind: str) -> list[tuple[str, int]]:
    """The full custom pipe order: darktable's default for ``input_kind`` with ``entries`` just before colorout.

    Entries with instance 0 (darktable's own modules, e.g. the raw white balance) keep their default place."""
    if input_kind not in INPUT_KINDS:
        raise ExportError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, not {input_kind!r}")
    base = V30_ORDER if input_kind == "raw" else V30_JPG_ORDER
    out: list[tuple[str, int]] = []
    for op in base:
        if op == "colorout":
            out += [(e.operation, e.multi_priority) for e in entries if e.multi_priority > 0]
        out.append((op, 0))
    return out


def iop_order_text(order: Iterable[tuple[str, int]]) -> str:
    return ",".join(f"{op},{inst}" for op, inst in order)


# ----------------------------------------------------------------------------------------------------------------
# Writers


def to_xmp(entries: Sequence[HistoryEntry], input_kind: str = "raster") -> bytes:
    """An XMP sidecar holding exactly ``entries`` as the image's whole history.

    auto_presets_applied=1 keeps darktable from adding its workflow defaults (on raws: +0.7 EV exposure and filmic)
    on top; darktable still adds the mandatory modules (raw development, colorin/colorout) with their defaults.
    """
    order = iop_order(entries, input_kind)
    items = []
    for i, e in enumerate(entries):
        items.append(
            "     <rdf:li\n"
            f'      darktable:num="{i}"\n'
            f'      darktable:operation="{e.operation}"\n'
            f'      darktable:enabled="{int(e.enabled)}"\n'
            f'      darktable:modversion="{e.version}"\n'
            f'      darktable:params="{encode_params(e.params)}"\n'
            f'      darktable:multi_name="{html.escape(e.multi_name, quote=True)}"\n'
            f'      darktable:multi_priority="{e.multi_priority}"\n'
            f'      darktable:blendop_version="{BLENDOP_VERSION}"\n'
            f'      darktable:blendop_params="{BLENDOP_OFF}"/>')
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:darktable="http://darktable.sf.net/"
   darktable:xmp_version="5"
   darktable:auto_presets_applied="1"
   darktable:history_end="{len(entries)}"
   darktable:iop_order_version="{IOP_ORDER_CUSTOM}"
   darktable:iop_order_list="{iop_order_text(order)}">
   <darktable:history>
    <rdf:Seq>
{chr(10).join(items)}
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
    return text.encode("utf-8")


def to_dtstyle(entries: Sequence[HistoryEntry], name: str, description: str = "",
               input_kind: str = "raster") -> bytes:
    """A .dtstyle (darktable style XML) with ``entries`` and the custom pipe order in ``<iop_list>``."""
    esc = lambda s: html.escape(s, quote=False)
    plugins = []
    for i, e in enumerate(entries):
        plugins.append(
            "  <plugin>\n"
            f"   <num>{i}</num>\n"
            f"   <module>{e.version}</module>\n"
            f"   <operation>{e.operation}</operation>\n"
            f"   <op_params>{encode_params(e.params)}</op_params>\n"
            f"   <enabled>{int(e.enabled)}</enabled>\n"
            f"   <blendop_params>{BLENDOP_OFF}</blendop_params>\n"
            f"   <blendop_version>{BLENDOP_VERSION}</blendop_version>\n"
            f"   <multi_priority>{e.multi_priority}</multi_priority>\n"
            f"   <multi_name>{esc(e.multi_name)}</multi_name>\n"
            "  </plugin>")
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<darktable_style version="1.0">
 <info>
  <name>{esc(name)}</name>
  <description>{esc(description)}</description>
  <iop_list>{iop_order_text(iop_order(entries, input_kind))}</iop_list>
 </info>
 <style>
{chr(10).join(plugins)}
 </style>
</darktable_style>
"""
    return text.encode("utf-8")
