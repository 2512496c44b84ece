"""darktable exports (XMP sidecar, .dtstyle) of edit sequences: structure, parameters, pipe order.

What darktable itself makes of these files is checked in tests/integration/test_darktable.py; here the files are
checked against darktable 4.2.1's formats (params structs, XMP/dtstyle fields, iop order lists).
"""
from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from exposure_engine.exporters import darktable as dt
from exposure_engine.exporters import export, safe_name
from exposure_engine.imageio.transfer import srgb_to_linear
from exposure_engine.sequence import EditSequence, SequenceError

NS = {"rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "darktable": "http://darktable.sf.net/"}
DTNS = "{http://darktable.sf.net/}"


def seq(*steps) -> EditSequence:
    return EditSequence.from_dict({"format": "exposure-edit-sequence", "version": 1, "steps": list(steps)})


def step(name, **params):
    return {"filter": name, "params": params}


FIVE = seq(step("exposure", ev=0.5), step("white_balance", gains=[1.1, 1.0, 0.9]), step("gamma", gamma=0.5),
           step("tone_curve", slopes=[1, 1.2, 1.4, 1.2, 1, 0.9, 0.8, 0.7]), step("contrast", amount=0.3))
ALL = seq(step("exposure", ev=-1.0), step("gamma", gamma=0.45), step("white_balance", gains=[1.0, 1.1, 0.9]),
          step("saturation", amount=0.5), step("tone_curve", slopes=[1.25] * 8),
          step("color_curves", slopes=[[1.0] * 8, [1.1] * 8, [0.9] * 8]), step("contrast", amount=-0.2),
          step("black_and_white", amount=0.3))


# --- parameter blobs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op, blob", [
    ("exposure", dt.pack_exposure(1.0)),
    ("channelmixerrgb", dt.pack_channelmixer(np.eye(3))),
    ("rgblevels", dt.pack_rgblevels(2.0)),
    ("rgbcurve", dt.pack_rgbcurve([[(0, 0), (1, 1)]])),
    ("colorbalancergb", dt.pack_colorbalancergb(contrast=0.2)),
    ("velvia", dt.pack_velvia(25, 1)),
    ("lut3d", dt.pack_lut3d("look.cube")),
    ("temperature", dt.pack_temperature([2.0, 1.0, 1.5])),
])
def test_every_params_blob_has_darktable_4_2_struct_size(op, blob):
    assert len(blob) == dt.PARAM_SIZES[op]


def test_exposure_params_hold_manual_mode_and_the_ev():
    mode, black, ev, pct, target, bias = struct.unpack("<i4fi", dt.pack_exposure(1.25))
    assert (mode, black, ev, bias) == (0, 0.0, 1.25, 0)


def test_rgblevels_grey_gives_the_gamma_as_its_exponent():
    # darktable: exponent = 10^((grey - mid) / half-range) with black 0, white 1 -> 10^(2 grey - 1)
    for g in (0.3, 0.45, 1.0, 2.2, 3.0):
        levels = struct.unpack("<2i9f", dt.pack_rgblevels(g))[2:]
        black, grey, white = levels[:3]
        assert (black, white) == (0.0, 1.0)
        assert 10 ** (2 * grey - 1) == pytest.approx(g, rel=1e-6)


def test_rgblevels_refuses_a_gamma_outside_its_range():
    with pytest.raises(dt.ExportError, match="gamma 20"):
        dt.pack_rgblevels(20.0)


def test_channelmixer_rows_are_the_matrix_with_adaptation_bypassed_and_no_normalisation():
    m = np.array([[1.1, 0.1, 0.0], [0.0, 0.9, 0.05], [0.2, 0.0, 1.0]])
    v = struct.unpack("<24f10i4f2i", dt.pack_channelmixer(m))
    rows = np.array([v[0:3], v[4:7], v[8:11]])
    np.testing.assert_allclose(rows, m, atol=1e-7)
    assert v[12:24] == (0.0,) * 12  # saturation, lightness, grey rows off
    normalize, adaptation = v[24:30], v[33]
    assert normalize == (0,) * 6 and adaptation == 4  # DT_ADAPTATION_RGB
    gamut, clip, version = v[37], v[38], v[39]
    assert (gamut, clip, version) == (0.0, 0, 2)


def test_rgbcurve_linked_curve_fills_channel_zero_and_sets_hermite_interpolation():
    nodes = [(0.0, 0.0), (0.5, 0.7), (1.0, 1.0)]
    v = struct.unpack("<120f9i", dt.pack_rgbcurve([nodes], preserve_colors=1))
    assert v[0:6] == (0.0, 0.0, 0.5, pytest.approx(0.7), 1.0, 1.0)
    counts, types, (autoscale, compensate, preserve) = v[120:123], v[123:126], v[126:129]
    assert counts[0] == 3 and types == (2, 2, 2)
    assert (autoscale, compensate, preserve) == (0, 0, 1)


def test_rgbcurve_rejects_too_many_nodes():
    with pytest.raises(ValueError, match="2..20"):
        dt.pack_rgbcurve([[(i / 20, i / 20) for i in range(21)]])


def test_lut3d_names_the_cube_relative_to_the_lut_folder_and_uses_srgb_tetrahedral():
    v = struct.unpack("<512s3i12288s128s", dt.pack_lut3d("exposure.cube"))
    assert v[0].rstrip(b"\0") == b"exposure.cube"
    assert v[1:4] == (0, 0, 0)  # colorspace sRGB, tetrahedral, no compressed keypoints
    assert v[5].rstrip(b"\0") == b"exposure"


def test_params_text_is_hex_when_small_and_gz_base64_when_large():
    small = dt.pack_exposure(1.0)
    assert dt.encode_params(small) == small.hex()
    big = dt.pack_lut3d("a.cube")
    text = dt.encode_params(big)
    assert text.startswith("gz") and text[2:4].isdigit()
    assert dt.decode_params(text) == big


# --- translation table --------------------------------------------------------------------------------------

def test_translation_table_covers_every_filter():
    from exposure_engine.filters import BY_NAME

    assert set(dt.TRANSLATIONS) == set(BY_NAME)
    exact = {n for n, t in dt.TRANSLATIONS.items() if t.exact}
    assert exact == {"exposure", "gamma", "white_balance", "black_and_white"}


def test_native_export_has_one_named_instance_per_step_in_sequence_order():
    entries = dt.native_entries(FIVE)
    named = [(e.operation, e.multi_name) for e in entries if e.multi_name[0].isdigit()]
    assert named == [("exposure", "1 Exposure"), ("channelmixerrgb", "2 White balance"),
                     ("rgblevels", "3 Gamma"), ("rgbcurve", "4 Tone curve"), ("rgbcurve", "5 Contrast")]


def test_per_channel_steps_run_on_srgb_primaries_and_the_output_is_decoded_back_to_the_working_space():
    names = [e.multi_name for e in dt.native_entries(FIVE)]
    assert names == ["1 Exposure", "2 White balance", "to sRGB primaries", "3 Gamma", "4 Tone curve",
                     "5 Contrast", "display decoding", "to working space"]


def test_white_balance_in_the_working_space_is_t_diag_g_t_inverse():
    entries = dt.native_entries(seq(step("white_balance", gains=[1.2, 1.0, 0.8])))
    v = struct.unpack("<24f10i4f2i", entries[0].params)
    rows = np.array([v[0:3], v[4:7], v[8:11]])
    expected = dt.SRGB_TO_REC2020 @ np.diag([1.2, 1.0, 0.8]) @ dt.REC2020_TO_SRGB
    np.testing.assert_allclose(rows, expected, atol=1e-6)


def test_linear_steps_compose_to_the_sequence_matrix_through_the_conversions():
    # For a sequence of only linear steps (and the final decode), the product of every channelmixerrgb, taken in
    # pipe order, maps Rec.2020 working values exactly as the sequence maps sRGB-primaries values.
    s = seq(step("white_balance", gains=[1.2, 0.9, 0.8]), step("black_and_white", amount=0.4))
    total = np.eye(3)
    for e in dt.native_entries(s):
        if e.operation == "channelmixerrgb":
            v = struct.unpack("<24f10i4f2i", e.params)
            total = np.array([v[0:3], v[4:7], v[8:11]]) @ total
    lum = np.array([0.27, 0.67, 0.06])
    bw = 0.6 * np.eye(3) + 0.4 * np.outer(np.ones(3), lum)
    np.testing.assert_allclose(total, dt.SRGB_TO_REC2020 @ bw @ np.diag([1.2, 0.9, 0.8]) @ dt.REC2020_TO_SRGB,
                               atol=1e-5)


def test_instances_are_numbered_from_1_per_module_leaving_darktables_own_instance_0_alone():
    entries = dt.native_entries(ALL)
    seen = {}
    for e in entries:
        seen.setdefault(e.operation, []).append(e.multi_priority)
    for op, prios in seen.items():
        assert prios == list(range(1, len(prios) + 1)), op


def test_decoding_curve_follows_the_srgb_eotf_and_segment_nodes_hit_the_knots():
    nodes = np.array(dt.decode_nodes())
    assert len(nodes) <= 20 and nodes[0, 0] == 0 and nodes[-1, 0] == 1
    np.testing.assert_allclose(nodes[:, 1], srgb_to_linear(nodes[:, 0], np.float64))
    slopes = [0.5, 2, 1, 1, 1, 1, 1, 0.5]
    pts = dict(dt.segment_curve_nodes(slopes))
    cum = np.cumsum(slopes) / sum(slopes)
    for k in range(1, 9):
        assert pts[k / 8] == pytest.approx(cum[k - 1])


def test_contrast_curve_is_the_papers_luminance_remapping():
    for x, y in dt.contrast_nodes(0.5):
        assert y == pytest.approx(0.5 * x + 0.5 * (0.5 - 0.5 * np.cos(np.pi * x)))


def test_exact_export_is_a_single_lut3d_instance():
    entries = dt.exact_entries("look.cube", "look")
    assert [(e.operation, e.multi_name) for e in entries] == [("lut3d", "look (exact)")]


# --- pipe order ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["raster", "raw"])
def test_custom_order_puts_our_instances_in_sequence_order_just_before_colorout(kind):
    entries = dt.native_entries(FIVE)
    order = dt.iop_order(entries, kind)
    assert len(order) == len(set(order)), "each (module, instance) appears once"
    i = order.index(("colorout", 0))
    ours = [(e.operation, e.multi_priority) for e in entries]
    assert order[i - len(ours):i] == ours


def test_base_order_depends_on_the_input_kind():
    raster = [op for op, _ in dt.iop_order([], "raster")]
    raw = [op for op, _ in dt.iop_order([], "raw")]
    # v3.0-JPG runs exposure after colorin (sRGB inputs are not linear before it); v3.0 (raws) before.
    assert raster.index("exposure") > raster.index("colorin")
    assert raw.index("exposure") < raw.index("colorin")
    assert sorted(raster) == sorted(raw) and len(raw) == 86


def test_unknown_input_kind_is_refused_by_name():
    with pytest.raises(dt.ExportError, match="input_kind"):
        export(FIVE, "xmp", input_kind="jpeg")


# --- files ----------------------------------------------------------------------------------------------------

def _xmp_history(data: bytes):
    root = ET.fromstring(data)
    desc = root.find(".//rdf:Description", NS)
    items = desc.findall("darktable:history/rdf:Seq/rdf:li", NS)
    return desc, [{k.replace(DTNS, ""): v for k, v in li.attrib.items()} for li in items]


def test_xmp_sidecar_holds_the_history_with_a_custom_iop_order_and_presets_marked_applied():
    files = export(FIVE, "xmp", name="photo")
    assert list(files) == ["photo.xmp"]
    desc, items = _xmp_history(files["photo.xmp"])
    a = {k.replace(DTNS, ""): v for k, v in desc.attrib.items()}
    assert a["xmp_version"] == "5" and a["auto_presets_applied"] == "1"
    assert a["iop_order_version"] == "0"  # custom: the list below is authoritative
    assert int(a["history_end"]) == len(items) == len(dt.native_entries(FIVE))
    order = a["iop_order_list"].split(",")
    assert len(order) % 2 == 0 and order[-2:] == ["gamma", "0"]
    for it in items:
        assert it["modversion"] == str(dt.MODULE_VERSIONS[it["operation"]])
        assert len(dt.decode_params(it["params"])) == dt.PARAM_SIZES[it["operation"]]
        assert f"{it['operation']},{it['multi_priority']}" in a["iop_order_list"]


def test_dtstyle_holds_name_description_plugins_and_iop_list():
    files = export(FIVE, "dtstyle", name="Exposure & co")
    (fname, data), = files.items()
    assert fname == "Exposure_co.dtstyle"
    root = ET.fromstring(data)
    assert root.tag == "darktable_style"
    assert root.findtext("info/name") == "Exposure & co"
    assert "Exposure +0.50 EV" in root.findtext("info/description")
    plugins = root.findall("style/plugin")
    entries = dt.native_entries(FIVE)
    assert [(p.findtext("operation"), p.findtext("multi_name"), int(p.findtext("multi_priority")))
            for p in plugins] == [(e.operation, e.multi_name, e.multi_priority) for e in entries]
    assert root.findtext("info/iop_list") == dt.iop_order_text(dt.iop_order(entries, "raster"))


def test_exact_mode_returns_the_cube_beside_the_main_file_and_references_it_by_name():
    files = export(FIVE, "xmp", mode="exact", name="look", cube_size=9)
    assert list(files) == ["look.xmp", "look.cube"]
    _, items = _xmp_history(files["look.xmp"])
    assert [it["operation"] for it in items] == ["lut3d"]
    path = struct.unpack("<512s", dt.decode_params(items[0]["params"])[:512])[0].rstrip(b"\0")
    assert path == b"look.cube"
    assert b"LUT_3D_SIZE 9" in files["look.cube"]


def test_cube_format_returns_only_the_lut():
    assert list(export(FIVE, "cube", name="x", cube_size=5)) == ["x.cube"]


def test_bad_format_mode_and_sequence_are_refused_with_the_reason():
    with pytest.raises(dt.ExportError, match="format"):
        export(FIVE, "pp3")
    with pytest.raises(dt.ExportError, match="mode"):
        export(FIVE, "xmp", mode="approximate")
    with pytest.raises(SequenceError, match=r"steps\[0\]"):
        export({"format": "exposure-edit-sequence", "version": 1, "steps": [{"filter": "gamma", "params": {}}]},
               "xmp")


def test_multi_names_are_escaped_in_xml():
    e = dt.HistoryEntry("exposure", dt.pack_exposure(0.0), 'a "b" <c> & d', 1)
    _, items = _xmp_history(dt.to_xmp([e]))
    assert items[0]["multi_name"] == 'a "b" <c> & d'
    root = ET.fromstring(dt.to_dtstyle([e], "n<>"))
    assert root.findtext("style/plugin/multi_name") == 'a "b" <c> & d'


def test_safe_name_keeps_file_names_portable():
    assert safe_name("my style/v2: é") == "my_style_v2"
    assert safe_name("...") == "exposure"


def test_empty_sequence_exports_only_the_display_decoding():
    entries = dt.native_entries(seq())
    assert [e.multi_name for e in entries] == ["to sRGB primaries", "display decoding", "to working space"]


def test_raw_xmp_can_pin_the_white_balance_to_the_camera_multipliers_at_its_default_place():
    files = export(FIVE, "xmp", input_kind="raw", raw_white_balance=[2.0, 1.0, 1.5, 1.0])
    desc, items = _xmp_history(files["exposure.xmp"])
    assert items[0]["operation"] == "temperature" and items[0]["multi_priority"] == "0"
    assert struct.unpack("<4f", dt.decode_params(items[0]["params"])) == (2.0, 1.0, 1.5, 1.0)
    order = desc.attrib[DTNS + "iop_order_list"].split(",")
    pairs = list(zip(order[::2], order[1::2]))
    assert pairs.count(("temperature", "0")) == 1 and pairs.index(("temperature", "0")) == 2  # v3.0 place


def test_white_balance_multipliers_are_normalised_to_green_and_checked():
    assert struct.unpack("<4f", dt.pack_temperature([4.0, 2.0, 3.0])) == (2.0, 1.0, 1.5, 1.0)
    with pytest.raises(dt.ExportError, match="raw_white_balance"):
        dt.pack_temperature([1.0, 0.0, 1.0])
    with pytest.raises(dt.ExportError, match="only applies to an XMP of a raw"):
        export(FIVE, "dtstyle", input_kind="raw", raw_white_balance=[2.0, 1.0, 1.5])
