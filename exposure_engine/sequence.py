"""Edit-sequence format v1: the contract between the engine, the daemon, the exporters and the plug-ins.

    {"format": "exposure-edit-sequence", "version": 1,
     "steps": [{"filter": "exposure", "params": {"ev": 1.2}}, ...]}

Extra keys are allowed at the top level and on each step (metadata such as the policy's probabilities);
``params`` are strict. The JSON Schema ships as ``exposure_engine/schema/edit-sequence-v1.schema.json``;
docs/edit-sequence.md documents the semantics.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import filters as F

FORMAT = "exposure-edit-sequence"
VERSION = 1
SCHEMA_FILE = "edit-sequence-v1.schema.json"


class SequenceError(ValueError):
    """An edit sequence that does not follow format v1. ``field`` names the offending place, e.g.
    ``steps[2].params.gamma``."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("exposure_engine.schema").joinpath(SCHEMA_FILE).read_text())


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _check_finite(obj: Any, where: list) -> None:
    # JSON Schema's minimum/maximum let NaN through (every comparison with NaN is false).
    if isinstance(obj, float) and not math.isfinite(obj):
        raise SequenceError(_path(where), f"{obj} is not a finite number")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, where + [k])
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_finite(v, where + [i])


def validate(doc: Any) -> None:
    """Raise :class:`SequenceError` naming the first bad field of a sequence document (a parsed JSON dict)."""
    if not isinstance(doc, dict):
        raise SequenceError("", f"an edit sequence is a JSON object, not {type(doc).__name__}")
    errors = sorted(_validator().iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # The deepest error is the most specific (an if/then failure reports the params object, then the field).
        e = max(errors, key=lambda e: len(e.absolute_path))
        raise SequenceError(_path(e.absolute_path) or "(top level)", e.message)
    for i, step in enumerate(doc["steps"]):
        _check_finite(step["params"], ["steps", i, "params"])
        if step["filter"] == "tone_curve" and sum(step["params"]["slopes"]) <= 0:
            raise SequenceError(f"steps[{i}].params.slopes", "the slopes must not all be 0")
        if step["filter"] == "color_curves":
            for c, row in enumerate(step["params"]["slopes"]):
                if sum(row) <= 0:
                    raise SequenceError(f"steps[{i}].params.slopes[{c}]", "the slopes must not all be 0")


@dataclass
class Step:
    filter: str
    params: dict
    meta: dict = field(default_factory=dict)  # extra keys kept verbatim (e.g. "probabilities", "label")

    @property
    def definition(self) -> F.Filter:
        return F.get(self.filter)

    def packed(self) -> list[float]:
        return self.definition.from_json(self.params)

    @property
    def label(self) -> str:
        return self.definition.label(self.packed())

    def to_dict(self) -> dict:
        return {"filter": self.filter, "params": self.params, **self.meta}

    @classmethod
    def from_packed(cls, filter_index: int, packed: Iterable[float], **meta: Any) -> "Step":
        f = F.FILTERS[int(filter_index)]
        values = [float(v) for v in packed][: f.n_packed]
        return cls(f.name, f.to_json(values), dict(meta))


@dataclass
class EditSequence:
    steps: list[Step] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    # --- JSON ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **self.meta, "steps": [s.to_dict() for s in self.steps]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, doc: Any) -> "EditSequence":
        validate(doc)
        meta = {k: v for k, v in doc.items() if k not in ("format", "version", "steps")}
        steps = [Step(s["filter"], dict(s["params"]), {k: v for k, v in s.items() if k not in ("filter", "params")})
                 for s in doc["steps"]]
        return cls(steps, meta)

    @classmethod
    def from_json(cls, text: str) -> "EditSequence":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise SequenceError("", f"not valid JSON ({e})") from None
        return cls.from_dict(doc)

    @classmethod
    def load(cls, path: str | Path) -> "EditSequence":
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise SequenceError("", f"cannot read edit sequence {path}: {e}") from None
        try:
            return cls.from_json(text)
        except SequenceError as e:
            raise SequenceError(e.field, f"{e.args[0]} (in {path})") from None

    # --- packed form (renderer, training) -----------------------------------------------------------------
    def packed(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int32 (n,), params float32 (n, MAX_PACKED))``: filter ids and zero-padded packed parameters."""
        ids = np.zeros(len(self.steps), np.int32)
        params = np.zeros((len(self.steps), F.MAX_PACKED), np.float32)
        for i, s in enumerate(self.steps):
            ids[i] = s.definition.index
            p = s.packed()
            params[i, : len(p)] = p
        return ids, params

    @classmethod
    def from_packed(cls, ids: Iterable[int], params: Iterable[Iterable[float]], **meta: Any) -> "EditSequence":
        return cls([Step.from_packed(i, p) for i, p in zip(ids, params)], dict(meta))

    def labels(self) -> list[str]:
        return [s.label for s in self.steps]


def as_sequence(seq: "EditSequence | dict | str | Path") -> EditSequence:
    """Accept a sequence object, a parsed JSON dict, or a path to a JSON file."""
    if isinstance(seq, EditSequence):
        return seq
    if isinstance(seq, dict):
        return EditSequence.from_dict(seq)
    if isinstance(seq, (str, Path)):
        return EditSequence.load(seq)
    raise TypeError(f"expected an EditSequence, a dict or a path, not {type(seq).__name__}")
