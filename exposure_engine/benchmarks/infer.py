"""``exposure-engine bench infer``: how long the main job takes, stage by stage.

* policy inference: one 64x64 proxy -> a 5-step edit sequence (:meth:`Policy.predict`), median and p90 over
  ``--runs`` runs; beside it the actor's forward pass alone (x n_steps), which says how much of ``predict`` is
  the network and how much is the loop around it;
* for a ``--megapixels`` image (default 24 MP, 6000x4000, the bundled example upscaled so no data set is needed):
  proxy making (area average of the whole frame), rendering the sequence at full resolution, the whole in-memory
  retouch (proxy + policy + render) and writing the 16-bit TIFF, each separately.

Medians are what to quote; p90 shows the noise of a shared machine (the load average is printed with them).
``--json PATH`` writes every number for docs and CI.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import TYPE_CHECKING, Callable

from . import cpu_name, torch_cpu

if TYPE_CHECKING:  # numpy, torch and the kernels load inside run(): `exposure-engine --help` stays fast
    import numpy as np


def register(bsub) -> None:
    p = bsub.add_parser("infer", help="policy inference, proxy, render and whole-retouch times",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", metavar="PATH", help="model folder (default: the 'default' style)")
    g.add_argument("--style", metavar="NAME", help="a model folder name under models/")
    g.add_argument("--random", action="store_true",
                   help="an untrained paper-size policy (same cost as a trained one; for machines without models)")
    p.add_argument("--widths", metavar="W1,W2,...", default=None,
                   help="with --random: the trunk widths (e.g. 16,32,64,128, the CPU recipe's); default the paper's")
    p.add_argument("--runs", type=int, default=50, help="policy inference runs (default 50)")
    p.add_argument("--image-runs", type=int, default=5, help="runs of each full-image stage (default 5)")
    p.add_argument("--megapixels", type=float, default=24.0, help="full-image size in MP, 3:2 (default 24)")
    p.add_argument("--variants", type=int, default=1, help="variants per prediction (batched; default 1)")
    p.add_argument("--batch", type=int, default=8,
                   help="also time a batch of this many different proxies, mean edits (the daemon's batch for as "
                        "many concurrent clients; default 8)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch threads for the policy (default 1, as exposure-engine retouch uses; 0 = torch's "
                        "default, all cores)")
    p.add_argument("--render-threads", type=int, default=0,
                   help="renderer threads (default 0 = all cores)")
    p.add_argument("--no-image", action="store_true", help="only the policy inference")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the actor's parts (trunks, heads) and a loop that runs only the chosen "
                        "filter's head: where predict's time goes")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=run)


def timed(fn: Callable[[], object], runs: int, warmup: int = 2) -> dict:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times: wall-clock median, p90, min and max, and the
    median CPU time of this process (all its threads), in milliseconds. On a busy machine the wall times
    wander with the load while the CPU time of a single-threaded stage stays close to its idle wall time."""
    import numpy as np

    for _ in range(warmup):
        fn()
    ts, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    a = np.asarray(ts)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min()),
            "max_ms": float(a.max()), "cpu_median_ms": float(np.median(cpu)), "runs": runs}


def _line(name: str, s: dict) -> str:
    return (f"  {name:<36} median {s['median_ms']:8.1f} ms  p90 {s['p90_ms']:8.1f} ms  "
            f"min {s['min_ms']:8.1f} ms  cpu {s['cpu_median_ms']:8.1f} ms  ({s['runs']} runs)")


def synthetic_image(megapixels: float) -> np.ndarray:
    """The bundled example (linear) upscaled to ``megapixels`` at 3:2: real photo content, no data set needed."""
    import cv2

    from ..imageio import load_image
    from ..retouch import EXAMPLE_IMAGE

    w = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    h = int(round(w / 1.5))
    small = load_image(EXAMPLE_IMAGE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def breakdown(policy, proxy: np.ndarray, runs: int) -> dict:
    """Time the actor's parts for one state, and a prediction loop that picks the filter first and then runs
    only that filter's parameter head (the same sequence as ``predict``'s argmax choice; not used by it)."""
    import torch

    from .. import filters as F
    from ..agent.networks import PROB_FLOOR, network_input, state_planes

    actor, a = policy.actor, policy.arch
    img = torch.from_numpy(proxy).permute(2, 0, 1)[None].contiguous()
    used = torch.zeros(1, F.N_FILTERS)
    out: dict = {}
    with torch.inference_mode():
        small = network_input(img, a.proxy)
        x = torch.cat([small, state_planes(torch.zeros(1, dtype=torch.long), used, a.proxy, a.n_steps)], 1)
        feat = actor.param_trunk(x)
        parts = {
            "input planes": lambda: torch.cat([network_input(img, a.proxy), state_planes(
                torch.zeros(1, dtype=torch.long), used, a.proxy, a.n_steps)], 1),
            "parameter trunk": lambda: actor.param_trunk(x),
            "selection trunk": lambda: actor.select_trunk(x),
            "all 8 parameter heads": lambda: [h(feat) for h in actor.heads],
            "one parameter head": lambda: actor.heads[F.COLOR_CURVES.index](feat),
            "selection head": lambda: actor.select(feat),
        }
        # What predict_batch runs instead of the two trunks (agent/fused.py), for a batch of 8 states.
        from ..agent.fused import FusedTrunks
        from ..agent.networks import plane_values

        plain, packed = FusedTrunks(actor), FusedTrunks(actor)
        chosen = "prepacked oneDNN" if FusedTrunks(actor).prepack() else "plain conv2d"  # what predict uses here
        on = packed.prepack(only_if_faster=False)  # timed whichever is faster, to show both
        rgb8 = small.repeat(8, 1, 1, 1).contiguous()
        planes8 = plane_values(torch.zeros(8, dtype=torch.long), torch.zeros(8, F.N_FILTERS), a.n_steps)
        parts["fused trunks x8, plain conv2d"] = lambda: plain(rgb8, planes8)
        if on:
            parts["fused trunks x8, prepacked oneDNN"] = lambda: packed(rgb8, planes8)
        for name, fn in parts.items():
            out[name] = timed(fn, runs, 3)
            print(_line(f"  {name}", out[name]))
        out["fused trunks path"] = chosen
        print(f"  (predict uses the {chosen} path on this machine: FusedTrunks.prepack keeps the faster)")

    gen = torch.Generator()

    @torch.inference_mode()
    def chosen_head_only() -> list[int]:
        gen.manual_seed(0)
        keep = 1.0 - a.dropout
        masks = (torch.rand(a.n_steps, 2, a.flat, generator=gen) < keep).float() / keep
        x_img, u = img, torch.zeros(1, F.N_FILTERS)
        chosen = []
        for t in range(a.n_steps):
            inp = torch.cat([network_input(x_img, a.proxy), state_planes(torch.full((1,), t), u, a.proxy,
                                                                          a.n_steps)], 1)
            probs = torch.softmax(actor.select(actor.select_trunk(inp) * masks[t, 1]), 1)
            probs = probs * (1.0 - PROB_FLOOR) + PROB_FLOOR / F.N_FILTERS
            k = int((probs * (1.0 - u)).argmax())
            f = F.FILTERS[k]
            params = f.params_from_raw(actor.heads[k](actor.param_trunk(inp) * masks[t, 0]))
            x_img = f.apply(x_img, params)
            u[0, k] = 1.0
            chosen.append(k)
        return chosen

    out["predict, chosen head only"] = timed(chosen_head_only, runs, 3)
    # Same seed-0 dropout masks as predict draws: the sketch must choose the same filters.
    same = chosen_head_only() == [s.definition.index for s in policy.predict(proxy, seed=0)[0].sequence.steps]
    out["sketch_matches_predict"] = same
    print(_line("predict, chosen head only (sketch)", out["predict, chosen head only"])
          + ("" if same else "  [chose other filters than predict]"))
    return out


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from .. import retouch as R
    from ..agent.policy import STATE_SIZE, ModelError, Policy
    from ..cli import CLIError
    from ..imageio import make_proxy, save_image
    from ..renderer import render, set_threads

    if args.runs < 1 or args.image_runs < 1 or args.variants < 1 or args.batch < 1:
        raise CLIError("--runs, --image-runs, --variants and --batch must be at least 1")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    set_threads(args.render_threads or None)
    try:
        if args.random:
            widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else None
            policy = Policy.random(0, **({"widths": widths} if widths else {}))
        else:
            policy = R.load_policy(args.model, args.style)
    except (R.ModelNotFound, ModelError) as e:
        raise CLIError(f"{e} (or use --random for an untrained policy of the same size)") from None
    except ValueError as e:  # a bad --widths (ModelError, also a ValueError, is caught above)
        raise CLIError(f"--widths {args.widths}: {e}") from None

    load = os.getloadavg()
    res: dict = {
        "model": {"name": policy.name, "sha256": policy.content_hash, "arch": policy.arch.to_dict()},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "processor": cpu_name(), "torch_cpu": torch_cpu(),
                    "loadavg_1min_before": load[0]},
        "variants": args.variants,
    }
    print(f"model {policy.name} ({policy.content_hash[:12]}), widths {list(policy.arch.widths)}, "
          f"proxy {policy.arch.proxy}, {policy.arch.n_steps} steps; {os.cpu_count()} CPUs ({cpu_name()}, "
          f"torch kernels {torch_cpu()}), torch {torch.get_num_threads()} threads, load average {load[0]:.2f}")

    example = synthetic_image(0.25)  # any linear image: the proxy is all the policy sees
    proxy = make_proxy(example, STATE_SIZE)
    seeds = iter(range(10**9))
    # A seed: dropout sampled, as the paper's test time (and --variants).
    res["predict"] = timed(lambda: policy.predict(proxy, variants=args.variants, seed=next(seeds)), args.runs, 3)
    print(_line(f"policy inference ({args.variants} variant{'s' * (args.variants > 1)}, seeded)", res["predict"]))

    # The network alone, one step: predict = n_steps of these + filters on the proxy + bookkeeping.
    a = policy.arch
    img = torch.from_numpy(proxy).permute(2, 0, 1)[None].repeat(args.variants, 1, 1, 1).contiguous()
    step = torch.zeros(args.variants, dtype=torch.long)
    used = torch.zeros(args.variants, 8)
    masks = (torch.ones(args.variants, a.flat), torch.ones(args.variants, a.flat))

    def forward() -> None:
        with torch.inference_mode():
            policy.actor(img, step, used, masks=masks)

    res["actor_forward"] = timed(forward, args.runs, 3)
    print(_line("  of which actor forward, per step", res["actor_forward"]))
    share = a.n_steps * res["actor_forward"]["median_ms"] / res["predict"]["median_ms"]
    res["forward_share_of_predict"] = share
    print(f"  {'':<34} {a.n_steps} forwards = {100 * share:.0f}% of predict's median")
    res["predict_mean_edit"] = timed(lambda: policy.predict(proxy), args.runs, 3)  # retouch's default
    print(_line("policy inference (mean edit)", res["predict_mean_edit"]))
    if policy.level_rule is not None:  # the same call without the model's level rule, for its cost
        res["predict_mean_edit_no_level"] = timed(lambda: policy.predict(proxy, level=False), args.runs, 3)
        print(_line("  the same without the level rule", res["predict_mean_edit_no_level"]))
    # What the daemon runs for --batch concurrent clients: different proxies, each its mean edit.
    h, w = example.shape[:2]  # different crops of the example: offsets wrap within its top-left quarter
    batch = np.stack([make_proxy(example[i * 37 % (h // 2):, i * 53 % (w // 2):], STATE_SIZE)
                      for i in range(args.batch)])
    res["batch"] = args.batch
    res["predict_batch_mean_edit"] = timed(lambda: policy.predict_batch(batch, dropout=False), args.runs, 3)
    print(_line(f"batch of {args.batch} proxies (mean edits)", res["predict_batch_mean_edit"]))
    if policy.level_rule is not None:
        res["predict_batch_mean_edit_no_level"] = timed(lambda: policy.predict_batch(batch, dropout=False, level=False),
                                                        args.runs, 3)
        print(_line("  the same without the level rule", res["predict_batch_mean_edit_no_level"]))

    if args.breakdown:
        res["breakdown"] = breakdown(policy, proxy, args.runs)

    if not args.no_image:
        big = synthetic_image(args.megapixels)
        h, w = big.shape[:2]
        res["image"] = {"width": w, "height": h}
        print(f"full image {w}x{h} ({w * h / 1e6:.1f} MP):")
        n = args.image_runs
        res["proxy"] = timed(lambda: make_proxy(big, STATE_SIZE), n, 1)
        print(_line("proxy (area average)", res["proxy"]))
        seq = policy.predict(make_proxy(big, STATE_SIZE), seed=0)[0].sequence
        out = np.empty_like(big)
        res["render"] = timed(lambda: render(big, seq, out=out), n, 1)
        print(_line("render 5 steps", res["render"]))
        res["retouch"] = timed(lambda: R.retouch_image(big, policy, seed=0), n, 1)
        print(_line("whole retouch (proxy+policy+render)", res["retouch"]))
        with tempfile.TemporaryDirectory() as tmp:
            dst = Path(tmp) / "out.tif"
            res["save_tiff16"] = timed(lambda: save_image(dst, out, bits=16), max(1, min(n, 3)), 0)
        print(_line("write 16-bit TIFF", res["save_tiff16"]))
        del big, out

    res["machine"]["loadavg_1min_after"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
