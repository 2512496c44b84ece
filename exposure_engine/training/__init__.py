"""Training the Exposure agent: data (proxies + cache), unprocessing, replay memory, recipes, the loop, reports.

Entry point: :func:`exposure_engine.training.loop.train` (``exposure-engine train`` on the command line).
Submodules are imported on demand; importing this package does not import torch.
"""
