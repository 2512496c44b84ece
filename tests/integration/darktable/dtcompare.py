"""Helpers shared by the darktable integration tests and the fitting script: a test chart, darktable-cli
renders of exported XMPs, and CIELAB comparisons with exposure_engine.render."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from exposure_engine.imageio.transfer import srgb_to_linear

DARKTABLE_CLI = shutil.which("darktable-cli")


def chart(size: int = 96, seed: int = 0) -> np.ndarray:
    """An sRGB-encoded uint8 test chart ``(size, size*2, 3)``: a dense RGB cube sweep (every hue, chroma and
    lightness, shadows included), grey ramp rows and random photo-like colours."""
    rng = np.random.default_rng(seed)
    h, w = size, size * 2
    k = 16
    v = np.linspace(0, 255, k)
    cube = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 3)  # 4096 colours
    n = h * w
    pix = np.empty((n, 3))
    pix[: cube.shape[0]] = cube
    ramp = np.repeat(np.linspace(0, 255, 256)[:, None], 3, 1)
    pix[cube.shape[0]: cube.shape[0] + 256] = ramp
    rest = n - cube.shape[0] - 256
    pix[-rest:] = rng.beta(2, 2, (rest, 3)) * 255
    return np.round(pix).clip(0, 255).astype(np.uint8).reshape(h, w, 3)


def srgb_to_lab(enc: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0,1] ``(..., 3)`` -> CIELAB (D65 white)."""
    lin = srgb_to_linear(np.clip(enc, 0, 1), np.float64)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def delta_e(a_enc: np.ndarray, b_enc: np.ndarray) -> np.ndarray:
    """CIE76 dE between two sRGB-encoded images (per pixel)."""
    return np.linalg.norm(srgb_to_lab(a_enc) - srgb_to_lab(b_enc), axis=-1)


def write_png(path: Path, img_u8: np.ndarray) -> None:
    import cv2

    cv2.imwrite(str(path), img_u8[..., ::-1])


def read_image(path: Path) -> np.ndarray:
    """darktable's output (16-bit TIFF) as sRGB-encoded float [0,1] ``(H, W, 3)``."""
    import tifffile

    a = tifffile.imread(str(path))
    return a[..., :3].astype(np.float64) / (65535.0 if a.dtype == np.uint16 else 255.0)


def darktable_render(src: Path, xmp: Path, out: Path, lut_dir: Path | None = None,
                     extra_conf: tuple[str, ...] = ()) -> Path:
    """Render ``src`` with the history in ``xmp`` through darktable-cli to a 16-bit TIFF ``out``."""
    with tempfile.TemporaryDirectory(prefix="dtcfg") as cfg:
        cmd = [DARKTABLE_CLI, str(src), str(xmp), str(out), "--core", "--configdir", cfg, "--library", ":memory:",
               "--conf", "plugins/imageio/format/tiff/bpp=16", "--conf", "plugins/imageio/format/tiff/compress=0",
               "--conf", "plugins/darkroom/workflow=none", "--conf", "write_sidecar_files=never"]
        if lut_dir is not None:
            cmd += ["--conf", f"plugins/darkroom/lut3d/def_path={lut_dir}"]
        for c in extra_conf:
            cmd += ["--conf", c]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "OMP_NUM_THREADS": "2"})
        if r.returncode != 0 or not out.exists():
            raise RuntimeError(f"darktable-cli failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return out


def engine_render(img_u8: np.ndarray, sequence) -> np.ndarray:
    """exposure_engine.render on the PNG decoded to linear light: display-encoded float64 ``(H, W, 3)``."""
    from exposure_engine.renderer import render

    lin = srgb_to_linear(img_u8.astype(np.float64) / 255.0)
    return render(lin, sequence).astype(np.float64)
