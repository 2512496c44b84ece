"""The main job, in process: photo -> 64x64 proxy -> policy -> edit sequence -> full-resolution render -> files.

``exposure-engine retouch`` (exposure_engine/commands/retouch.py) is a thin shell over these functions, which the
tests call directly:

* :func:`find_model` / :func:`load_policy`: the model folder for ``--model PATH`` / ``--style NAME`` / the default;
* :func:`expand_inputs`: files, folders and globs -> photo paths (problems reported, never raised);
* :func:`retouch_image`: one linear image -> predictions and their full-resolution renders (arrays only);
* :func:`retouch_file` / :func:`retouch_batch`: the same with reading and writing, one :class:`FileResult` per
  input; a bad file becomes a ``failed`` result naming the file and the reason, and the batch goes on.

The written image is exactly ``render(load_image(input), sequence)`` quantised to the output's bit depth, and the
JSON beside it is that sequence (format v1) with where it came from (model name and sha256, seed or "dropout": false, input file).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # heavy imports (torch, numba) stay out of module import: the CLI's --help must be fast
    from .agent.policy import Policy, Prediction

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_STYLE = "default"
MODELS_ENV = "EXPOSURE_ENGINE_MODELS"  # extra model folders (os.pathsep-separated), searched first
EXAMPLES_DIR = PACKAGE_DIR / "examples"
# A RAW-like linear 16-bit TIFF tagged with a linear-sRGB ICC profile, so it decodes as linear light anywhere
# (examples/CREDITS.txt, examples/make_example.py).
EXAMPLE_IMAGE = EXAMPLES_DIR / "great-wall.tif"
EXAMPLE_SEQUENCE = EXAMPLES_DIR / "great-wall.sequence.json"

#: ``--format`` -> (file suffix, bits per sample)
FORMATS: dict[str, tuple[str, int]] = {"tiff": (".tif", 16), "png": (".png", 16), "jpeg": (".jpg", 8)}

#: What a folder expands to (case-insensitive suffixes). Anything else in a folder is ignored, not reported.
PHOTO_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp",
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef",
    ".srw", ".x3f", ".3fr", ".iiq", ".kdc", ".dcr", ".mrw", ".erf", ".mef", ".mos", ".raw", ".rwl"})


class ModelNotFound(LookupError):
    """No model folder where one was asked for; the message says where it looked and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Models


def model_roots() -> list[Path]:
    """Folders searched for ``NAME/`` model folders, first match wins:
    ``$EXPOSURE_ENGINE_MODELS`` entries, ``<package>/models`` (an installed copy), ``<repo>/models`` (a checkout)."""
    roots = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    roots += [PACKAGE_DIR / "models", PACKAGE_DIR.parent / "models"]
    return roots


def _is_model_dir(p: Path) -> bool:
    return p.is_dir() and ((p / "config.json").is_file() or (p / "policy.pt").is_file())


def available_styles() -> list[str]:
    """Names of the model folders found under :func:`model_roots` (sorted, no duplicates)."""
    names = set()
    for root in model_roots():
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if _is_model_dir(p))
    return sorted(names)


def find_model(model: str | os.PathLike | None = None, style: str | None = None) -> Path:
    """The model folder (or weights file) to use.

    model: an explicit path (``--model``); style: a folder name under :func:`model_roots` (``--style``);
    neither: the ``default`` style. Raises :class:`ModelNotFound` naming what was looked for and where.
    """
    if model is not None and style is not None:
        raise ModelNotFound("give either a model path or a style name, not both")
    if model is not None:
        p = Path(model).expanduser()
        if not p.exists():
            raise ModelNotFound(f"{p}: no such model folder or weights file")
        return p
    name = style or DEFAULT_STYLE
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ModelNotFound(f"{name!r} is not a style name (use --model PATH for a path)")
    for root in model_roots():
        if _is_model_dir(root / name):
            return root / name
    where = ", ".join(str(r) for r in model_roots())
    known = available_styles()
    hint = f"available styles: {', '.join(known)}" if known else \
        "no models are installed; train one (exposure-engine train) or pass --model PATH"
    raise ModelNotFound(f"no model {name!r} found (looked in {where}); {hint}")


def load_policy(model: str | os.PathLike | None = None, style: str | None = None) -> "Policy":
    """:func:`find_model` then :meth:`Policy.load` (raises ``ModelNotFound`` or ``ModelError``)."""
    from .agent.policy import Policy

    return Policy.load(find_model(model, style))


# ---------------------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class InputItem:
    """One photo to retouch and how its pixels are encoded (``None``: the reader decides from the file)."""

    path: Path
    encoding: str | None = None


@dataclass(frozen=True)
class InputProblem:
    """An argument that named no photo (missing file, empty folder, glob without matches)."""

    arg: str
    reason: str

    def __str__(self) -> str:
        return f"{self.arg}: {self.reason}"


def _is_photo(p: Path) -> bool:
    return p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".")


def expand_inputs(args: Iterable[str | os.PathLike], *, recursive: bool = False
                  ) -> tuple[list[Path], list[InputProblem]]:
    """Files, folders and glob patterns -> photo paths in argument order (sorted within a folder or glob),
    without duplicates, plus one :class:`InputProblem` for each argument that matched nothing.

    A file named explicitly is always taken (the reader judges it, so a corrupt or mislabelled file gets a precise
    error); a folder or a glob contributes only files with a photo suffix (:data:`PHOTO_SUFFIXES`).
    """
    out: list[Path] = []
    seen: set[Path] = set()
    problems: list[InputProblem] = []

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for arg in args:
        s = str(arg)
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(q for q in (p.rglob("*") if recursive else p.iterdir()) if q.is_file() and _is_photo(q))
            if not found:
                problems.append(InputProblem(s, "folder holds no photos"
                                             + ("" if recursive else " (use --recursive for sub-folders)")))
            for q in found:
                add(q)
        elif p.exists():
            add(p)
        elif glob.has_magic(s):
            found = sorted(Path(q) for q in glob.glob(os.path.expanduser(s), recursive=recursive))
            found = [q for q in found if q.is_file() and _is_photo(q)]
            if not found:
                problems.append(InputProblem(s, "no photos match this pattern"))
            for q in found:
                add(q)
        else:
            problems.append(InputProblem(s, "no such file or folder"))
    return out, problems


# ---------------------------------------------------------------------------------------------------------------
# In-memory retouching


@dataclass
class Retouched:
    """One variant: the prediction (sequence, probabilities, proxies) and the full-resolution result
    ``(H, W, 3)`` float32 display-encoded sRGB in [0, 1]."""

    prediction: "Prediction"
    image: np.ndarray


def retouch_image(image: np.ndarray, policy: "Policy", *, variants: int = 1, seed: int | None = None,
                  in_place: bool = False) -> list[Retouched]:
    """Retouch one linear image ``(H, W, 3)`` float32: one :class:`Retouched` per variant.

    The policy sees the whole frame area-averaged to a 64x64 state (``STATE_SIZE``,
    :func:`exposure_engine.imageio.make_proxy`); its sequence is rendered at full resolution by
    :func:`exposure_engine.renderer.render`. One variant without a seed is the policy's mean edit (no dropout,
    deterministic; :meth:`Policy.predict`); otherwise variant ``i`` is a dropout sample with seed ``seed + i``
    (``seed=None`` draws one, recorded in each sequence's ``seed``). in_place: with one variant, render into
    ``image`` itself (a float32 C-contiguous array), which saves a full-size copy (1.2 GB at 100 MP).
    """
    from .agent.policy import STATE_SIZE
    from .imageio import make_proxy
    from .renderer import render

    proxy = make_proxy(image, STATE_SIZE)
    predictions = policy.predict(proxy, variants=variants, seed=seed)
    if in_place and variants == 1 and image.dtype == np.float32 and image.flags.c_contiguous:
        return [Retouched(predictions[0], render(image, predictions[0].sequence, out=image))]
    return [Retouched(p, render(image, p.sequence)) for p in predictions]


# ---------------------------------------------------------------------------------------------------------------
# Files


@dataclass
class Options:
    """What ``exposure-engine retouch`` was asked to write."""

    out_dir: Path
    format: str = "tiff"  # a key of FORMATS
    variants: int = 1
    seed: int | None = None  # None: a fresh seed per file (recorded in its JSON)
    steps: bool = False  # also write <stem>.steps.png
    overwrite: bool = False
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.variants < 1:
            raise ValueError(f"variants must be >= 1, not {self.variants}")


@dataclass(frozen=True)
class Outputs:
    """The files of one variant."""

    image: Path
    sequence: Path
    strip: Path | None

    def all(self) -> list[Path]:
        return [p for p in (self.image, self.sequence, self.strip) if p is not None]


def output_paths(input_path: Path, opts: Options) -> list[Outputs]:
    """``<stem>.tif`` + ``<stem>.json`` (+ ``<stem>.steps.png``); with variants ``<stem>.v1.tif`` ... ."""
    suffix, _ = FORMATS[opts.format]
    stem = Path(input_path).stem
    names = [stem] if opts.variants == 1 else [f"{stem}.v{i + 1}" for i in range(opts.variants)]
    return [Outputs(opts.out_dir / f"{n}{suffix}", opts.out_dir / f"{n}.json",
                    opts.out_dir / f"{n}.steps.png" if opts.steps else None) for n in names]


@dataclass
class FileResult:
    """What happened to one input: ``status`` is ``"done"``, ``"skipped"`` (outputs exist) or ``"failed"``;
    ``message`` is one line naming the file and the reason (empty when done)."""

    input: Path
    status: str
    outputs: list[Path] = field(default_factory=list)
    message: str = ""
    sequences: list = field(default_factory=list, repr=False)  # EditSequence per variant (done only)
    notes: list[str] = field(default_factory=list)  # what was read or written not exactly as stored


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _tmp_name(p: Path) -> Path:
    # Same folder (so the rename is atomic) and same suffix (writers pick the format from it); hidden.
    return p.with_name(f".{p.stem}.partial-{os.getpid()}{p.suffix}")


def _write_atomic(final: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file then rename: an interrupted batch never leaves a torn output that a
    later run would skip as 'already there'."""
    tmp = _tmp_name(final)
    try:
        write(tmp)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _describe(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg


def retouch_file(item: InputItem | str | os.PathLike, policy: "Policy", opts: Options) -> FileResult:
    """Retouch one photo file and write its outputs (see :func:`output_paths`). Never raises for a bad input:
    the problem comes back as a ``failed`` :class:`FileResult` whose message names the file and the reason."""
    from . import __version__
    from .imageio import load_photo, save_image

    item = item if isinstance(item, InputItem) else InputItem(Path(item))
    src = Path(item.path)
    outs = output_paths(src, opts)
    planned = [p for o in outs for p in o.all()]
    for p in planned:
        if p.resolve() == src.resolve() or _same_file(p, src):
            return FileResult(src, "failed", [], f"{src}: the output {p} would overwrite the input; "
                                                 "choose another output folder or --format")
    existing = [p for p in planned if p.exists()]
    if existing and not opts.overwrite:
        return FileResult(src, "skipped", existing, f"{src}: skipped, {existing[0]} exists (--overwrite replaces it)")

    try:
        photo = load_photo(src, input_encoding=item.encoding or "auto")
    except (OSError, ValueError, MemoryError) as e:  # ImageReadError (a ValueError) names file and reason
        msg = _describe(e)
        return FileResult(src, "failed", [], msg if str(src) in msg else f"{src}: {msg}")
    h, w = photo.pixels.shape[:2]

    try:
        # The decoded pixels are ours alone: render over them when one result is all that is needed.
        results = retouch_image(photo.pixels, policy, variants=opts.variants, seed=opts.seed, in_place=True)
    except (ValueError, RuntimeError, MemoryError) as e:
        return FileResult(src, "failed", [], f"{src}: cannot retouch ({_describe(e)})")

    _, bits = FORMATS[opts.format]
    written: list[Path] = []
    notes = [f"{src}: note: {w_}" for w_ in photo.warnings]
    sequences = []
    try:
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        for i, (r, o) in enumerate(zip(results, outs)):
            seq = r.prediction.sequence
            seq.meta = {**seq.meta,
                        "source": {"file": str(src), "width": int(w), "height": int(h),
                                   **({"encoding": item.encoding} if item.encoding else {})},
                        "output": o.image.name,
                        **({"variant": i + 1} if opts.variants > 1 else {}),
                        "engine": {"name": "exposure-engine", "version": __version__}}
            # save_image writes atomically itself (temporary file + rename).
            for note in save_image(o.image, r.image, bits=bits, quality=opts.jpeg_quality, exif=photo.exif):
                notes.append(f"{o.image}: note: {note}")
            written.append(o.image)
            _write_atomic(o.sequence, lambda t, s=seq: s.save(t))
            written.append(o.sequence)
            if o.strip is not None:
                from .strip import draw_strip

                how = f"seed {seq.meta['seed']}" if "seed" in seq.meta else "mean edit (no dropout)"
                title = f"{src.name}  -  model {seq.meta['model']['name']} ({seq.meta['model']['sha256'][:12]}), {how}"
                _write_atomic(o.strip, lambda t, p=r.prediction, ti=title: draw_strip(p, t, title=ti))
                written.append(o.strip)
            sequences.append(seq)
    except (OSError, ValueError) as e:  # ImageWriteError is a ValueError naming the file
        # All of a photo's outputs or none: a half-written set would be skipped as done by the next run.
        for p in written:
            p.unlink(missing_ok=True)
        return FileResult(src, "failed", [], f"{src}: cannot write outputs ({_describe(e)})")
    return FileResult(src, "done", written, "", sequences, notes)


def retouch_batch(items: Sequence[InputItem | str | os.PathLike], policy: "Policy", opts: Options, *,
                  progress: bool = False, report: Callable[[str], None] | None = None) -> list[FileResult]:
    """:func:`retouch_file` for each input, in order. Two inputs that would write the same output names
    (``a/x.jpg`` and ``b/x.png``) are caught up front: the later one fails with a message naming both.

    progress: show a tqdm bar on stderr; report: called with each skipped/failed message as it happens.
    """
    items = [i if isinstance(i, InputItem) else InputItem(Path(i)) for i in items]
    claimed: dict[Path, Path] = {}
    results: list[FileResult] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="photo", desc="retouch", dynamic_ncols=True, leave=True)

    def say(msg: str) -> None:
        if report is None:
            return
        if bar is not None:
            bar.clear()
        report(msg)
        if bar is not None:
            bar.refresh()

    try:
        for item in items:
            outs = [p.resolve() for o in output_paths(item.path, opts) for p in o.all()]
            clash = next((claimed[p] for p in outs if p in claimed), None)
            if clash is not None:
                r = FileResult(item.path, "failed", [], f"{item.path}: its outputs ({outs[0].name}, ...) would "
                               f"replace those of {clash} in this batch; retouch it into another folder")
            else:
                for p in outs:
                    claimed[p] = item.path
                try:
                    r = retouch_file(item, policy, opts)
                except Exception as e:  # a bug below (not a bad file) must still not end the batch
                    r = FileResult(item.path, "failed", [], f"{item.path}: internal error "
                                                           f"({type(e).__name__}: {_describe(e)}); please report it")
            results.append(r)
            if r.status != "done":
                say(r.message)
            for note in r.notes:
                say(note)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


def summary(results: Sequence[FileResult]) -> str:
    """``"3 retouched, 1 skipped, 1 failed"``."""
    n = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    return f"{n['done']} retouched, {n['skipped']} skipped, {n['failed']} failed"
