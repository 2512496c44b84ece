"""Training data: folders of photos turned into cached 80x80 proxies (the paper's data recipe).

Per file: decode (inputs: linear RGB from a RAW, a linear 16-bit TIFF, or an ordinary photo unprocessed to look
RAW-like; targets: display-encoded sRGB, not linearised), take 4 random square crops (side = the shorter edge)
and area-resize each to 80x80. At training time :class:`ProxySampler` takes a random 64x64 crop and a random
horizontal flip. Crops are cached in ``OUT/cache/`` as one ``.npz`` per file, keyed by the file's sha256 and
everything that changes the crops (role, unprocessing, seed, recipe version), so a second run or a resumed run
does not decode anything again.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..imageio.transfer import srgb_to_linear
from .unprocess import UnprocessRanges, random_params, unprocess

RAW_EXTS = {".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf", ".rw2", ".pef",
            ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".raw"}
TIFF_EXTS = {".tif", ".tiff"}
PHOTO_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
CROP_SIDE = 80  # crops are stored at 80x80; training crops 64x64 out of them (paper)
N_CROPS = 4
MAX_EDGE = 512  # decoded images are area-reduced to this long edge before cropping (paper: 500 px exports)
CACHE_VERSION = 2  # 2: with whole-frame proxies


class DataError(ValueError):
    """An input or target file that cannot be used; the message names the file and the reason."""


def list_images(folder: str | os.PathLike, *, kinds: Iterable[str] = ("raw", "tiff", "photo")) -> list[Path]:
    """Image files directly in ``folder`` (sorted by name), by extension."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    exts: set[str] = set()
    for k in kinds:
        exts |= {"raw": RAW_EXTS, "tiff": TIFF_EXTS, "photo": PHOTO_EXTS}[k]
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _shrink(img: np.ndarray, max_edge: int = MAX_EDGE) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = max_edge / max(h, w)
    if s >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def read_photo_srgb(path: Path) -> np.ndarray:
    """An ordinary photo -> ``(H, W, 3)`` float32 display-encoded sRGB in [0, 1] (8- or 16-bit)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise DataError(f"{path}: cannot decode image")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
    if img.shape[2] == 4:
        img = img[..., :3]
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype)
    if scale is None:
        raise DataError(f"{path}: unsupported pixel type {img.dtype}")
    return np.ascontiguousarray(img[..., ::-1], dtype=np.float32) / np.float32(scale)


def read_raw_linear(path: Path) -> np.ndarray:
    """A camera RAW -> linear float32 RGB (sRGB primaries, camera white balance, no auto-brightening), half size:
    exactly the development :mod:`exposure_engine.imageio` gives the model at run time."""
    from ..imageio.errors import ImageReadError
    from ..imageio.raw import load_raw

    try:
        return load_raw(path, half_size=True).pixels
    except ImageReadError as e:
        raise DataError(str(e)) from None


def read_tiff_linear(path: Path) -> np.ndarray:
    """A linear 16-bit (or float) RGB TIFF -> float32 in [0, 1]."""
    import tifffile

    try:
        img = tifffile.imread(str(path))
    except Exception as e:
        raise DataError(f"{path}: cannot read TIFF ({type(e).__name__}: {e})") from None
    if img.ndim != 3 or img.shape[2] < 3:
        raise DataError(f"{path}: expected an RGB TIFF, got shape {img.shape}")
    img = img[..., :3]
    if img.dtype == np.uint16:
        return img.astype(np.float32) / np.float32(65535.0)
    if img.dtype.kind == "f":
        return img.astype(np.float32)
    raise DataError(f"{path}: a linear input TIFF must be 16-bit or float, not {img.dtype} (8-bit is display-encoded: "
                    "use --unprocess)")


def load_input(path: Path, *, unprocess_seed: int | None, ranges: UnprocessRanges = UnprocessRanges()) -> np.ndarray:
    """A training input as linear float32 RGB.

    RAW files and linear TIFFs are read as they are; ordinary photos need ``unprocess_seed`` (``--unprocess``):
    they are made RAW-like with random amounts drawn from a generator seeded by (seed, file name)."""
    ext = path.suffix.lower()
    if ext in RAW_EXTS:
        return _shrink(read_raw_linear(path))
    if ext in TIFF_EXTS:
        return _shrink(read_tiff_linear(path))
    if unprocess_seed is None:
        raise DataError(f"{path}: an ordinary photo is display-encoded, not a linear input; pass --unprocess to make "
                        "it RAW-like, or use RAW files / linear 16-bit TIFFs")
    srgb = _shrink(read_photo_srgb(path))
    rng = np.random.default_rng([unprocess_seed, int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:4], "little")])
    return unprocess(srgb, random_params(rng, ranges))


def load_target(path: Path) -> np.ndarray:
    """A target photo as display-encoded sRGB float32 in [0, 1] (not linearised: the agent learns its own gamma)."""
    if path.suffix.lower() in RAW_EXTS:
        raise DataError(f"{path}: targets are finished photos (JPEG/PNG/TIFF), not RAW files")
    return _shrink(read_photo_srgb(path))


def random_square_crops(img: np.ndarray, rng: np.random.Generator, n: int = N_CROPS,
                        side_out: int = CROP_SIDE) -> np.ndarray:
    """``n`` random square crops (side = shorter edge) area-resized to ``side_out``: ``(n, side_out, side_out, 3)``."""
    import cv2

    h, w = img.shape[:2]
    s = min(h, w)
    out = np.empty((n, side_out, side_out, 3), np.float32)
    for i in range(n):
        y = int(rng.integers(0, h - s + 1))
        x = int(rng.integers(0, w - s + 1))
        out[i] = cv2.resize(np.ascontiguousarray(img[y:y + s, x:x + s]), (side_out, side_out),
                            interpolation=cv2.INTER_AREA)
    return out


@dataclass
class Dataset:
    """Cached crops of one folder: ``crops (N * 4, 80, 80, 3)`` float32 and the files they came from.

    frames: ``(N, 64, 64, 3)`` float32 linear whole-frame proxies, one per file, made as the engine makes every
    proxy (``make_proxy``; targets decoded to linear first): what the level rule reads (agent/level.py)."""

    crops: np.ndarray
    files: list[Path]
    skipped: list[str]  # "file: reason" for files that could not be used
    frames: np.ndarray | None = None


def frame_proxy(img: np.ndarray, role: str) -> np.ndarray:
    """A decoded input (linear) or target (display sRGB) -> its ``(64, 64, 3)`` linear whole-frame proxy."""
    from ..imageio.proxy import STATE_SIZE, make_proxy

    return make_proxy(img if role == "input" else srgb_to_linear(img), STATE_SIZE)


def build_crops(files: Sequence[Path], role: str, *, cache_dir: Path | None, seed: int,
                unprocess: bool = False, ranges: UnprocessRanges = UnprocessRanges(),
                progress: bool = True) -> Dataset:
    """Decode and crop every file (or read its cached crops). ``role`` is "input" or "target".

    A file that cannot be decoded is skipped and named in ``Dataset.skipped``; it never stops the run."""
    from tqdm import tqdm

    if role not in ("input", "target"):
        raise ValueError(role)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    key_extra = f"v{CACHE_VERSION}-{role}-s{seed}" + (f"-u{ranges.ev}{ranges.saturation}{ranges.cast}" if unprocess else "")
    key_tag = hashlib.sha256(key_extra.encode()).hexdigest()[:10]
    chunks, frames, used, skipped = [], [], [], []
    for path in tqdm(files, desc=f"proxies ({role}s)", unit="file", disable=not progress, leave=False):
        try:
            digest = file_sha256(path)
            cache = cache_dir / f"{role}-{digest[:24]}-{key_tag}.npz" if cache_dir is not None else None
            crops = frame = None
            if cache is not None and cache.is_file():
                try:
                    with np.load(cache) as z:
                        crops, frame = z["crops"], z["frame"]
                except Exception:  # a torn or foreign cache file is simply rebuilt
                    crops = None
            if crops is None:
                if role == "input":
                    img = load_input(path, unprocess_seed=seed if unprocess else None, ranges=ranges)
                else:
                    img = load_target(path)
                if min(img.shape[:2]) < 16:
                    raise DataError(f"{path}: too small ({img.shape[1]}x{img.shape[0]})")
                rng = np.random.default_rng([seed, int(digest[:8], 16)])
                crops = random_square_crops(img, rng)
                frame = frame_proxy(img, role)
                if not (np.isfinite(crops).all() and np.isfinite(frame).all()):
                    raise DataError(f"{path}: decoded to non-finite values")
                if cache is not None:
                    tmp = cache.with_name(cache.stem + f".tmp{os.getpid()}.npz")
                    np.savez(tmp, crops=crops, frame=frame)
                    os.replace(tmp, cache)
            chunks.append(crops.astype(np.float32))
            frames.append(frame.astype(np.float32))
            used.append(path)
        except (DataError, OSError) as e:
            skipped.append(str(e) if isinstance(e, DataError) else f"{path}: {e}")
    if not chunks:
        raise DataError(f"no usable {role} images" + (f" ({skipped[0]} ...)" if skipped else ""))
    return Dataset(np.concatenate(chunks), used, skipped, np.stack(frames))


class ProxySampler:
    """Random ``size x size`` crops (and horizontal flips) out of 80x80 cached crops -> ``(B, 3, size, size)``.

    For proxies other than 64 the 80x80 crops are first area-resized by size/64, keeping the paper's 80:64 ratio.
    ``augment(batch, rng)``, if given, changes each sampled batch (e.g. :class:`.unprocess.Jitter` for inputs)."""

    def __init__(self, crops: np.ndarray, size: int, rng: np.random.Generator,
                 augment: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None):
        if size != 64:
            import cv2

            side = round(CROP_SIDE * size / 64)
            crops = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in crops])
        self.crops = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
        self.size = size
        self.rng = rng
        self.augment = augment

    def __len__(self) -> int:
        return self.crops.shape[0]

    def sample(self, n: int) -> torch.Tensor:
        side = self.crops.shape[-1]
        idx = self.rng.integers(0, len(self), n)
        ys = self.rng.integers(0, side - self.size + 1, n)
        xs = self.rng.integers(0, side - self.size + 1, n)
        flip = self.rng.random(n) < 0.5
        out = torch.empty(n, 3, self.size, self.size)
        for i in range(n):
            c = self.crops[idx[i], :, ys[i]:ys[i] + self.size, xs[i]:xs[i] + self.size]
            out[i] = c.flip(-1) if flip[i] else c
        return out if self.augment is None else self.augment(out, self.rng)


VALIDATION_SALT = 0x5A11D  # keeps the validation draws apart from the training draws of the same (seed, file)


@dataclass
class ValidationPairs:
    """Paired proxies for choosing among the weights a run passes through (never for gradients).

    inputs: ``(N, 64, 64, 3)`` float32 linear, RAW-like; references: ``(N, 64, 64, 3)`` float32 display sRGB in
    [0, 1], the finished photo each input was unprocessed from; names: the files."""

    inputs: np.ndarray
    references: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def reduced(cls, inputs: Sequence[np.ndarray], references: Sequence[np.ndarray], names: Sequence[str],
                size: int = 64) -> "ValidationPairs":
        """Pairs from full-size images: linear inputs area-averaged in linear light (as
        :func:`exposure_engine.imageio.proxy.make_proxy` makes every proxy), display references area-averaged as
        they are, both to ``size`` x ``size``."""
        import cv2

        from ..imageio.proxy import make_proxy

        ins = [make_proxy(x, size) for x in inputs]
        refs = [cv2.resize(np.clip(np.asarray(r, np.float32), 0, 1), (size, size), interpolation=cv2.INTER_AREA)
                for r in references]
        return cls(np.stack(ins).astype(np.float32), np.clip(np.stack(refs), 0, 1).astype(np.float32), list(names))


def validation_pairs(files: Sequence[Path], *, seed: int, ranges: UnprocessRanges = UnprocessRanges(),
                     size: int = 64) -> ValidationPairs:
    """Unprocess each finished photo again, with a draw training never makes (``VALIDATION_SALT``), and pair its
    ``size``-px proxy with the photo itself reduced the same way (:meth:`ValidationPairs.reduced`).

    Only meaningful where the photos' finished versions are in the style being learnt, as with ``train
    --split-from`` (inputs and targets are two halves of one folder of finished photos). Unreadable files are
    skipped, as in :func:`build_crops`."""
    return validation_pairs_of(*read_finished_photos(files), seed=seed, ranges=ranges, size=size)


def read_finished_photos(files: Sequence[Path]) -> tuple[list[np.ndarray], list[str]]:
    """The readable ones of ``files`` as display sRGB, reduced as training reduces them, and their file names;
    unreadable files are skipped, as in :func:`build_crops`."""
    photos, names = [], []
    for f in files:
        try:
            photos.append(_shrink(read_photo_srgb(Path(f))))  # shrunk at once: not every full-size photo held
        except DataError:
            continue
        names.append(Path(f).name)
    if not names:
        raise DataError("no readable photo for the validation pairs")
    return photos, names


def validation_pairs_of(photos: Sequence[np.ndarray], names: Sequence[str], *, seed: int,
                        ranges: UnprocessRanges = UnprocessRanges(), size: int = 64) -> ValidationPairs:
    """:func:`validation_pairs` of finished photos already in memory (display sRGB ``(H, W, 3)`` float32 in
    [0, 1]); each one's draw is keyed by its name, so a photo gets the same draw as its file of that name."""
    ins, refs = [], []
    for srgb, name in zip(photos, names, strict=True):
        srgb = _shrink(np.asarray(srgb, np.float32))
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
        rng = np.random.default_rng([seed, VALIDATION_SALT, key])
        ins.append(unprocess(srgb, random_params(rng, ranges)))
        refs.append(srgb)
    return ValidationPairs.reduced(ins, refs, list(names), size)


def split_photos(files: Sequence[Path], seed: int, n_holdout: int) -> dict[str, list[Path]]:
    """The shipped model's split of one folder: a seeded shuffle, first half inputs, second half targets; the
    last ``n_holdout`` inputs are held out for evaluation (not used in training)."""
    order = np.random.default_rng(seed).permutation(len(files))
    shuffled = [files[i] for i in order]
    half = len(shuffled) // 2
    inputs, targets = shuffled[:half], shuffled[half:]
    return {"train_inputs": inputs[: len(inputs) - n_holdout], "holdout_inputs": inputs[len(inputs) - n_holdout:],
            "targets": targets}


__all__ = ["DataError", "Dataset", "ProxySampler", "build_crops", "list_images", "load_input", "load_target",
           "random_square_crops", "split_photos", "ValidationPairs", "validation_pairs",
           "validation_pairs_of", "read_finished_photos"]
