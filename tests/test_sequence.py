"""Edit-sequence format v1: what is accepted, what is refused, and that errors name the bad field."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from exposure_engine import filters as F
from exposure_engine.sequence import EditSequence, SequenceError, Step, as_sequence, validate

GOOD = {
    "format": "exposure-edit-sequence",
    "version": 1,
    "model": {"name": "default"},  # extra metadata is allowed
    "steps": [
        {"filter": "exposure", "params": {"ev": 1.2}, "probabilities": {"exposure": 0.9}},
        {"filter": "gamma", "params": {"gamma": 0.45}},
        {"filter": "white_balance", "params": {"gains": [1.1, 0.95, 0.9]}},
        {"filter": "saturation", "params": {"amount": 0.4}},
        {"filter": "tone_curve", "params": {"slopes": [0.6, 0.8, 1, 1.3, 1.6, 1.8, 1.2, 0.9]}},
        {"filter": "color_curves", "params": {"slopes": [[1] * 8, [0.9] * 8, [1.1] * 8]}},
        {"filter": "contrast", "params": {"amount": -0.3}},
        {"filter": "black_and_white", "params": {"amount": 0.2}},
    ],
}


def bad(path_and_value):
    doc = copy.deepcopy(GOOD)
    for path, value in path_and_value:
        target = doc
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return doc


def test_every_filter_round_trips_through_json_with_metadata():
    seq = EditSequence.from_dict(GOOD)
    again = EditSequence.from_json(seq.to_json())
    assert again.to_dict() == seq.to_dict()
    assert again.meta == {"model": {"name": "default"}}
    assert again.steps[0].meta == {"probabilities": {"exposure": 0.9}}
    assert [s.filter for s in again.steps] == [f.name for f in F.FILTERS]


def test_packed_form_round_trips_and_pads_with_zeros():
    seq = EditSequence.from_dict(GOOD)
    ids, params = seq.packed()
    assert ids.tolist() == list(range(8)) and params.shape == (8, F.MAX_PACKED) and params.dtype == np.float32
    assert params[0, 1:].tolist() == [0.0] * (F.MAX_PACKED - 1)
    back = EditSequence.from_packed(ids, params)
    for a, b in zip(back.steps, seq.steps):
        assert a.filter == b.filter
        np.testing.assert_allclose(a.packed(), b.packed(), rtol=1e-6)


@pytest.mark.parametrize("mutation, field", [
    ([(("steps", 1, "params", "gamma"), -1.0)], "steps[1].params.gamma"),
    ([(("steps", 1, "params", "gamma"), 0.0)], "steps[1].params.gamma"),
    ([(("steps", 0, "filter"), "sharpen")], "steps[0].filter"),
    ([(("steps", 0, "params", "ev"), "bright")], "steps[0].params.ev"),
    ([(("steps", 2, "params", "gains"), [1, 1])], "steps[2].params.gains"),
    ([(("steps", 2, "params", "gains"), [1, -1, 1])], "steps[2].params.gains[1]"),
    ([(("steps", 3, "params", "amount"), 1.5)], "steps[3].params.amount"),
    ([(("steps", 4, "params", "slopes"), [1] * 7)], "steps[4].params.slopes"),
    ([(("steps", 5, "params", "slopes"), [[1] * 8, [1] * 8])], "steps[5].params.slopes"),
    ([(("steps", 6, "params", "amount"), -2)], "steps[6].params.amount"),
    ([(("steps", 6, "params", "strength"), 1)], "steps[6].params"),
    ([(("steps", 7, "params"), KeyError)], "steps[7]"),
    ([(("version",), 2)], "version"),
    ([(("format",), "something-else")], "format"),
])
def test_invalid_sequences_name_the_bad_field(mutation, field):
    with pytest.raises(SequenceError) as e:
        EditSequence.from_dict(bad(mutation))
    assert e.value.field == field, str(e.value)
    assert str(e.value).startswith(field)


def test_non_finite_and_degenerate_values_are_refused():
    with pytest.raises(SequenceError, match=r"steps\[0\]\.params\.ev"):
        validate(bad([(("steps", 0, "params", "ev"), float("nan"))]))
    with pytest.raises(SequenceError, match=r"steps\[1\]\.params\.gamma"):
        validate(bad([(("steps", 1, "params", "gamma"), float("inf"))]))
    with pytest.raises(SequenceError, match=r"steps\[4\]\.params\.slopes"):
        validate(bad([(("steps", 4, "params", "slopes"), [0] * 8)]))
    with pytest.raises(SequenceError, match=r"steps\[5\]\.params\.slopes\[2\]"):
        validate(bad([(("steps", 5, "params", "slopes"), [[1] * 8, [1] * 8, [0] * 8])]))


def test_not_json_and_not_an_object_are_clear_errors(tmp_path):
    with pytest.raises(SequenceError, match="not valid JSON"):
        EditSequence.from_json("{steps: ")
    with pytest.raises(SequenceError, match="JSON object"):
        validate([1, 2])
    p = tmp_path / "seq.json"
    p.write_text(json.dumps(bad([(("steps", 1, "params", "gamma"), -1)])))
    with pytest.raises(SequenceError, match=str(p)):
        EditSequence.load(p)
    with pytest.raises(SequenceError, match="cannot read"):
        EditSequence.load(tmp_path / "missing.json")


def test_as_sequence_accepts_objects_dicts_and_paths(tmp_path):
    seq = EditSequence.from_dict(GOOD)
    p = tmp_path / "s.json"
    seq.save(p)
    assert as_sequence(seq) is seq
    assert as_sequence(GOOD).to_dict() == seq.to_dict()
    assert as_sequence(str(p)).to_dict() == seq.to_dict()
    with pytest.raises(TypeError):
        as_sequence(42)


def test_step_labels_come_from_the_filter_definitions():
    seq = EditSequence.from_dict(GOOD)
    assert seq.labels()[0] == "Exposure +1.20 EV"
    assert Step.from_packed(6, [0.5] + [0] * 23).to_dict() == {"filter": "contrast", "params": {"amount": 0.5}}
