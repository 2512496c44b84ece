"""Wire protocol 1 of the inference daemon (docs/protocol.md is the human version of this module).

A request and a reply are each one ZeroMQ multipart message::

    frame 0     JSON header, UTF-8, a JSON object (at most ``Limits.max_header_bytes``)
    frame 1..   binary payloads the header describes (pixel arrays, exported files)

Every request header carries ``"protocol": 1`` and ``"kind"`` (one of :data:`KINDS`) and may carry ``"id"``
(a string or integer echoed in the reply). Every reply header carries ``"protocol"``, ``"ok"`` and, when
``ok`` is false, ``"error": {"code": ..., "message": ...}`` with a code from :class:`Code`.

Arrays travel as one frame of raw little-endian, C-ordered samples, described in the header by
``{"dtype": "uint8"|"uint16"|"float32", "shape": [H, W, 3], "encoding": "srgb"|"linear"}``.

This module is deliberately light (json + numpy): plug-ins and tests can import it without torch or numba.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import orjson

PROTOCOL = 1
DEFAULT_PORT = 5557
DEFAULT_URL = f"tcp://127.0.0.1:{DEFAULT_PORT}"
KINDS = ("ping", "info", "predict", "render", "export")
EXPORT_FORMATS = ("xmp", "dtstyle", "cube", "gimp")
EXPORT_MODES = ("native", "exact")
EXPORT_INPUT_KINDS = ("raster", "raw")  # darktable's base module order differs for RAW and raster inputs
#: Longest side of the image a client sends for ``predict``. The policy looks at a 64x64 area-averaged proxy,
#: so 256 px keeps the message small (768 KB as float32) while leaving the daemon room for a larger proxy later.
PROXY_SIDE = 256

DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}
ENCODINGS = ("srgb", "linear")


class Code:
    """Error codes of ``{"ok": false, "error": {"code": ..., "message": ...}}`` replies."""

    BAD_MESSAGE = "bad_message"                    # wrong number of frames, empty message
    BAD_JSON = "bad_json"                          # header frame is not UTF-8 JSON (or not an object)
    BAD_HEADER = "bad_header"                      # a header field is missing or has the wrong type/value
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"  # "protocol" is not 1
    UNKNOWN_KIND = "unknown_kind"
    BAD_IMAGE = "bad_image"                        # descriptor and payload disagree, NaN pixels, wrong dtype
    TOO_LARGE = "too_large"                        # over a configured limit (header, pixels, variants)
    BAD_SEQUENCE = "bad_sequence"                  # not a valid edit sequence v1 (message names the field)
    UNKNOWN_STYLE = "unknown_style"                # no such model folder / style
    MODEL_ERROR = "model_error"                    # the style exists but its model cannot be loaded
    NOT_AVAILABLE = "not_available"                # the feature is not installed (e.g. an exporter)
    EXPORT_FAILED = "export_failed"                # the exporter refused the sequence or option (message says why)
    BUSY = "busy"                                  # the queue for this kind is full: retry later
    SHUTTING_DOWN = "shutting_down"                # the daemon is draining after SIGTERM
    INTERNAL = "internal"                          # a bug: the message says what failed

    ALL = (BAD_MESSAGE, BAD_JSON, BAD_HEADER, UNSUPPORTED_PROTOCOL, UNKNOWN_KIND, BAD_IMAGE, TOO_LARGE,
           BAD_SEQUENCE, UNKNOWN_STYLE, MODEL_ERROR, NOT_AVAILABLE, EXPORT_FAILED, BUSY, SHUTTING_DOWN, INTERNAL)


class ProtocolError(Exception):
    """A request (server side) or a reply (client side) that breaks the protocol; ``code`` is a :class:`Code`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. ``info`` reports them so that a client can check before sending."""

    #: Largest frame accepted (ZMQ_MAXMSGSIZE, enforced by libzmq: a bigger frame drops the connection, so the
    #: sender sees a timeout, not a reply). 1 GiB holds a 89 MP float32 image; 4000x3000 float32 is 144 MB.
    max_frame_bytes: int = 1 << 30
    max_header_bytes: int = 64 * 1024
    max_frames: int = 4                    # header + payloads; no request kind needs more than 2
    max_predict_pixels: int = 4096 * 4096  # clients send 64 px states or PROXY_SIDE proxies; generous on purpose
    max_render_pixels: int = 400_000_000
    max_variants: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------------
# JSON headers


_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN/Infinity, which are not JSON and which no other client library would send.
    raise ValueError(f"{name} is not valid JSON")


def dumps(obj: dict) -> bytes:
    """A header as compact UTF-8 JSON (NaN/Infinity refused: they are not JSON).

    orjson writes it (a predict reply: 8 us instead of 190 us with the standard library on this 2-core machine;
    8 replies per batch). orjson writes NaN/Infinity as ``null``, so an output with a ``null`` is checked for them;
    what orjson cannot write (integers beyond 64 bits, float subclasses) goes to the standard library."""
    try:
        out = orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    if b"null" in out and _has_nonfinite(obj):
        raise ValueError("Out of range float values are not JSON compliant (NaN or Infinity)")
    return out


def _has_nonfinite(obj: Any) -> bool:
    if isinstance(obj, float):  # subclasses too (numpy.float64): orjson writes them like floats
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_has_nonfinite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_has_nonfinite(v) for v in obj)
    return False


def loads_header(frame: bytes | memoryview, max_bytes: int, *, exact_integers: bool = True) -> dict:
    """Parse a header frame into a dict, or raise :class:`ProtocolError` (``too_large`` / ``bad_json``).

    exact_integers: integers beyond 64 bits stay exact (orjson would read them as floats, so such frames go to
    the standard library). The daemon needs that for what clients send (an ``id`` is echoed as it came); a client
    reading its daemon's replies does not (their integers are its own small ids and counts) and skips the scan
    (0.14 ms per 3 KB reply on this 2-core machine)."""
    if len(frame) > max_bytes:
        raise ProtocolError(Code.TOO_LARGE, f"header frame is {len(frame)} bytes; the limit is {max_bytes}")
    doc = None
    if not (exact_integers and _LONG_NUMBER.search(frame)):
        try:
            doc = orjson.loads(frame)  # strict JSON (no NaN), 5x faster; what it refuses gets the reason below
        except orjson.JSONDecodeError:
            pass
    try:
        if doc is None:
            doc = json.loads(bytes(frame).decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise ProtocolError(Code.BAD_JSON, f"header frame is not UTF-8 ({e.reason} at byte {e.start})") from None
    except (ValueError, RecursionError) as e:
        raise ProtocolError(Code.BAD_JSON, f"header frame is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ProtocolError(Code.BAD_JSON, f"header must be a JSON object, not {type(doc).__name__}")
    return doc


def check_request(doc: dict) -> str:
    """Check the fields every request has; return its kind."""
    proto = doc.get("protocol")
    if "protocol" not in doc:
        raise ProtocolError(Code.BAD_HEADER, 'header.protocol is missing (send "protocol": 1)')
    if type(proto) is not int or proto != PROTOCOL:
        raise ProtocolError(Code.UNSUPPORTED_PROTOCOL,
                            f"header.protocol is {proto!r}; this daemon speaks protocol {PROTOCOL}")
    kind = doc.get("kind")
    if not isinstance(kind, str):
        raise ProtocolError(Code.BAD_HEADER, f"header.kind must be a string, one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise ProtocolError(Code.UNKNOWN_KIND, f"header.kind {kind[:40]!r} is not one of {', '.join(KINDS)}")
    rid = doc.get("id")
    if rid is not None and not (isinstance(rid, str) and len(rid) <= 256 or type(rid) is int):
        raise ProtocolError(Code.BAD_HEADER, "header.id must be a string (<= 256 chars) or an integer")
    return kind


def request_id(doc: Any) -> str | int | None:
    """The request's ``id`` if it is one we may echo, else None (used when replying to a bad request)."""
    if isinstance(doc, dict):
        rid = doc.get("id")
        if isinstance(rid, str) and len(rid) <= 256 or type(rid) is int:
            return rid
    return None


def request(kind: str, **fields: Any) -> bytes:
    return dumps({"protocol": PROTOCOL, "kind": kind, **fields})


def ok_reply(kind: str, rid: Any = None, **fields: Any) -> bytes:
    head = {"protocol": PROTOCOL, "ok": True, "kind": kind}
    if rid is not None:
        head["id"] = rid
    return dumps({**head, **fields})


def error_reply(code: str, message: str, rid: Any = None) -> bytes:
    head: dict = {"protocol": PROTOCOL, "ok": False, "error": {"code": code, "message": message}}
    if rid is not None:
        head["id"] = rid
    return dumps(head)


# --------------------------------------------------------------------------------------------------------------
# Typed header fields


def get_int(doc: dict, key: str, default: int | None, lo: int, hi: int, *, limit_code: str = Code.BAD_HEADER) -> int | None:
    v = doc.get(key, default)
    if v is None:
        return default
    if type(v) is not int:  # bool is an int subclass; 1.0 is not an int here either
        raise ProtocolError(Code.BAD_HEADER, f"header.{key} must be an integer, not {type(v).__name__}")
    if not lo <= v <= hi:
        raise ProtocolError(limit_code, f"header.{key} = {v} is outside {lo}..{hi}")
    return v


def get_str(doc: dict, key: str, default: str | None, choices: Sequence[str] | None = None,
            max_len: int = 256) -> str | None:
    v = doc.get(key, default)
    if v is None:
        return default
    if not isinstance(v, str) or len(v) > max_len:
        raise ProtocolError(Code.BAD_HEADER, f"header.{key} must be a string of at most {max_len} characters")
    if choices is not None and v not in choices:
        raise ProtocolError(Code.BAD_HEADER, f"header.{key} is {v[:40]!r}; expected one of {', '.join(choices)}")
    return v


def get_object(doc: dict, key: str) -> dict:
    v = doc.get(key)
    if not isinstance(v, dict):
        what = "missing" if v is None else f"a {type(v).__name__}"
        raise ProtocolError(Code.BAD_HEADER, f"header.{key} must be a JSON object (it is {what})")
    return v


# --------------------------------------------------------------------------------------------------------------
# Arrays


def describe_array(a: np.ndarray, encoding: str) -> dict:
    """The header descriptor of an ``(H, W, 3)`` array sent with :func:`array_frame`."""
    name = {np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16", np.dtype(np.float32): "float32"}.get(
        np.dtype(a.dtype).newbyteorder("="))
    if name is None:
        raise TypeError(f"arrays travel as uint8, uint16 or float32, not {a.dtype}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
    return {"dtype": name, "shape": [int(s) for s in a.shape], "encoding": encoding}


def array_frame(a: np.ndarray, dtype_name: str) -> np.ndarray:
    """``a`` as a C-contiguous little-endian array: a buffer zmq sends without another copy."""
    return np.ascontiguousarray(a, dtype=DTYPES[dtype_name])


def parse_descriptor(desc: Any, *, max_pixels: int, field: str = "image") -> tuple[np.dtype, tuple[int, int, int], str]:
    """Check an array descriptor from a header; returns ``(dtype, (H, W, 3), encoding)``.

    The declared size is checked against ``max_pixels`` before anything is allocated, so a header claiming
    10^12 pixels costs nothing."""
    if not isinstance(desc, dict):
        raise ProtocolError(Code.BAD_HEADER, f"header.{field} must be an object with dtype, shape, encoding")
    dt = desc.get("dtype")
    if not isinstance(dt, str) or dt not in DTYPES:
        raise ProtocolError(Code.BAD_IMAGE, f"header.{field}.dtype is {str(dt)[:40]!r}; expected one of "
                                            f"{', '.join(DTYPES)}")
    shape = desc.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3 or any(type(s) is not int for s in shape)
            or shape[2] != 3 or shape[0] < 1 or shape[1] < 1):
        raise ProtocolError(Code.BAD_IMAGE, f"header.{field}.shape must be [H, W, 3] with H, W >= 1, got "
                                            f"{str(shape)[:80]}")
    if shape[0] * shape[1] > max_pixels:
        raise ProtocolError(Code.TOO_LARGE, f"header.{field} is {shape[0]}x{shape[1]} = {shape[0] * shape[1]} "
                                            f"pixels; the limit is {max_pixels}")
    enc = desc.get("encoding", "linear" if dt == "float32" else "srgb")
    if not isinstance(enc, str) or enc not in ENCODINGS:
        raise ProtocolError(Code.BAD_IMAGE, f"header.{field}.encoding is {str(enc)[:40]!r}; expected "
                                            f"{' or '.join(ENCODINGS)}")
    return DTYPES[dt], (shape[0], shape[1], 3), enc


def frame_array(frame: bytes | memoryview, dtype: np.dtype, shape: tuple[int, int, int], *,
                field: str = "image") -> np.ndarray:
    """A read-only ``(H, W, 3)`` view of a payload frame (no copy); its size must match the descriptor exactly."""
    buf = memoryview(frame)
    expected = math.prod(shape) * dtype.itemsize
    if buf.nbytes != expected:
        raise ProtocolError(Code.BAD_IMAGE, f"{field} payload is {buf.nbytes} bytes; {list(shape)} "
                                            f"{dtype.name} needs {expected}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def to_linear(a: np.ndarray, encoding: str, *, field: str = "image", copy: bool = True,
              check_finite: bool = True) -> np.ndarray:
    """Decode received samples to linear float32 ``(H, W, 3)``.

    uint8/uint16 map 0..max to 0..1; ``srgb`` applies the exact sRGB curve (a lookup table for integers).
    Float input must be finite (NaN would silently poison every statistic the policy computes); a caller that
    checks the result itself (predict: ``resize_proxy``) passes ``check_finite=False``. ``copy=False`` returns
    linear float32 input as is (read-only when it views a frame)."""
    from ..imageio.transfer import decode_integer, srgb_to_linear, srgb_to_linear_exact

    if a.dtype.kind == "u":
        return decode_integer(a, srgb_to_linear_exact if encoding == "srgb" else (lambda v: v))
    if check_finite and not np.isfinite(a).all():
        raise ProtocolError(Code.BAD_IMAGE, f"{field} contains NaN or infinite values")
    if encoding == "srgb":
        return srgb_to_linear(a)
    return np.array(a, dtype=np.float32, order="C") if copy else a
