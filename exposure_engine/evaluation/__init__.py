"""Evaluation: the paper's metrics, baselines, hidden "artist" styles and the quality benchmark's plumbing.

* :mod:`.metrics`   histogram intersection (Exposure, Tables 2-4), paired PSNR and CIE76 dE;
* :mod:`.baselines` what a user gets without the agent (identity, GIMP auto white balance, histogram matching,
  LibRaw's default development);
* :mod:`.styles`    deterministic retouching programs that stand in for an artist's hidden style;
* :mod:`.images`    reading display-encoded images for ``exposure-engine eval``;
* :mod:`.report`    tables and contact sheets.

All images here are ``(H, W, 3)`` float32 numpy arrays: *linear* light where a name says ``linear``, otherwise
display-encoded sRGB in [0, 1].
"""
