"""Measure the cost of one training iteration of a recipe on this machine (synthetic data, no files).

    python -m exposure_engine.training.timing --recipe cpu-fast --recipe paper [--iterations 6] [--threads 2]
                                              [--device auto|cpu|cuda]

One iteration = the recipe's critic steps (each with the gradient penalty's double backward) + one actor/value
step (filters, D and V in the graph). Reports the median milliseconds per iteration after one warm-up, and the
load average, because on a shared machine the number depends on what else runs (docs/training.md). On a GPU the
clock stops after the device has finished (``torch.cuda.synchronize``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from ..devices import DEVICE_CHOICES


def measure(recipe_name: str, iterations: int = 6, threads: int | None = None, device: str = "cpu") -> dict:
    import torch

    from ..agent.networks import Actor, Arch, Discriminator, Value
    from . import recipes
    from .loop import agent_step, critic_loss

    r = recipes.get(recipe_name)
    torch.set_num_threads(threads or r.threads)
    torch.manual_seed(0)
    arch = Arch.from_dict(r.arch_dict())
    dev = torch.device(device)
    actor, value, disc = Actor(arch).to(dev), Value(arch, r.value_heads).to(dev), Discriminator(arch).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    opt = torch.optim.Adam(list(actor.parameters()) + list(value.parameters()), lr=1e-5)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-5)
    b = r.batch
    times = []
    for i in range(iterations + 1):
        real, fake = torch.rand(b, 3, 64, 64, device=dev), torch.rand(b, 3, 64, 64, device=dev)
        img = torch.rand(b, 3, 64, 64, device=dev) * 0.2
        sync()
        t0 = time.perf_counter()
        for _ in range(r.critic_steps):
            loss, _ = critic_loss(disc, real, fake, r.gp_weight)
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()
        loss, *_ = agent_step(actor, value, disc, img, torch.randint(0, r.n_steps, (b,), device=dev),
                              torch.zeros(b, 8, device=dev), r, 0.5, torch.full((b,), -2.0, device=dev))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if i:  # the first iteration warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    return {"recipe": r.name, "widths": list(r.widths), "network_input": r.proxy, "batch": b,
            "critic_steps": r.critic_steps, "threads": torch.get_num_threads(), "device": str(dev),
            "ms_per_iteration": round(ms, 1),
            "iterations_per_30_min": int(1800 / (ms / 1000)), "load_average_1min": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see docs/training.md)
    p = argparse.ArgumentParser(prog="python -m exposure_engine.training.timing", description=__doc__.split("\n")[0])
    p.add_argument("--recipe", action="append", help="recipe name or .json (repeatable; default cpu-fast)")
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="auto (default): a CUDA GPU when torch sees one, else the CPU")
    a = p.parse_args(argv)
    import json

    from ..devices import resolve_device

    device = resolve_device(a.device)
    for name in a.recipe or ["cpu-fast"]:
        print(json.dumps(measure(name, a.iterations, a.threads, device)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
