"""``exposure-engine serve``: the local inference daemon (docs/protocol.md)."""
from __future__ import annotations

import argparse

from ..devices import DEVICE_CHOICES


def register(sub) -> None:
    from ..daemon.protocol import DEFAULT_URL

    p = sub.add_parser(
        "serve", help="run the inference daemon that the GIMP/darktable plug-ins talk to (ZeroMQ)",
        description="Serve predict / render / export requests over ZeroMQ (protocol 1, docs/protocol.md). "
                    "Binds loopback only unless --allow-remote is given with --keys (CURVE authentication). "
                    "SIGTERM or Ctrl-C drains the requests in progress, then exits.",
        epilog="examples:\n"
               f"  exposure-engine serve                                  # {DEFAULT_URL}\n"
               "  exposure-engine serve --bind ipc:///tmp/exposure.sock --idle-exit 600\n"
               "  exposure-engine serve --gen-keys ~/.config/exposure-engine/keys\n"
               "  exposure-engine serve --bind tcp://0.0.0.0:5557 --allow-remote --keys ~/.config/exposure-engine/keys",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bind", default=DEFAULT_URL, metavar="URL",
                   help=f"ZeroMQ endpoint: tcp://HOST:PORT or ipc://PATH (default {DEFAULT_URL}; "
                        "tcp://127.0.0.1:* picks a free port and prints it)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="where the models run: auto (the GPU when torch sees one, else the CPU)")
    p.add_argument("--models", metavar="DIR", help="an extra folder of model folders, searched first")
    p.add_argument("--untrained", action="store_true",
                   help="also serve an untrained, deterministic policy as style 'untrained' (tests, plug-in work)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --bind (requires --keys)")
    p.add_argument("--keys", metavar="DIR", help="CURVE keys folder (from --gen-keys): only authorized clients get in")
    p.add_argument("--gen-keys", metavar="DIR", help="write a server and a client key pair into DIR and exit")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS", help="exit after this long without requests")
    p.add_argument("--drain-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="on SIGTERM, wait at most this long for requests in progress (default 60)")
    p.add_argument("--max-frame-mb", type=float, default=1024, metavar="MB",
                   help="largest message frame accepted (default 1024 MB; a 4000x3000 float32 image is 144 MB)")
    p.add_argument("--batch-window-ms", type=float, metavar="MS",
                   help="wait this long to batch concurrent predicts (default: 3 on a GPU; on a CPU 10, "
                        "only while several clients are predicting at once)")
    p.add_argument("--render-workers", type=int, default=1, metavar="N",
                   help="renders run at once (default 1; each already uses every core)")
    p.add_argument("--predict-workers", type=int, default=1, metavar="N",
                   help="threads running predict batches side by side (default 1: batching pays more on 2 cores)")
    p.add_argument("--predict-helper", choices=["auto", "on", "off"], default="auto",
                   help="a helper process predicting half of each batch of concurrent predicts on the second core "
                        "(default auto: on a CPU with 2+ cores)")
    p.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch intra-op threads (default 1 on a CPU: concurrent predicts are batched instead)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import sys
    from dataclasses import replace
    from pathlib import Path

    from ..cli import CLIError, device_arg
    from ..daemon import auth

    if args.gen_keys:
        try:
            files = auth.generate_keys(args.gen_keys)
        except auth.KeyFileError as e:
            raise CLIError(str(e)) from None
        print(f"server keys: {files['server_public']} (public, give to clients), {files['server_secret']} (secret)")
        print(f"client keys: {files['client_public']}, {files['client_secret']} (copy both, with the server's "
              f"public key, to the client); authorized clients: {files['authorized']}/")
        return 0

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s exposure-engine daemon: %(message)s")
    from ..daemon.protocol import Limits
    from ..daemon.server import Server, ServerConfig, ServerError, check_bind
    from ..daemon.styles import Styles, model_roots

    if args.max_frame_mb <= 0 or args.render_workers < 1 or args.predict_workers < 1:
        raise CLIError("--max-frame-mb, --render-workers and --predict-workers must be positive")
    config = ServerConfig(bind=args.bind, device=args.device, allow_remote=args.allow_remote,
                          keys_dir=Path(args.keys) if args.keys else None, idle_exit=args.idle_exit,
                          limits=replace(Limits(), max_frame_bytes=int(args.max_frame_mb * 2**20)),
                          batch_window_ms=args.batch_window_ms, render_workers=args.render_workers,
                          predict_workers=args.predict_workers,
                          predict_helper={"auto": None, "on": True, "off": False}[args.predict_helper],
                          torch_threads=args.torch_threads, drain_timeout=args.drain_timeout)
    try:
        check_bind(config)  # before torch is imported: a refused bind answers at once
    except ServerError as e:
        raise CLIError(str(e)) from None
    device = device_arg(args.device)
    policies = {}
    if args.untrained:
        from ..agent.policy import Policy

        policies["untrained"] = Policy.random(seed=0)
    styles = Styles(model_roots(Path(args.models) if args.models else None), device, policies)
    server = Server(config, styles)
    try:
        endpoint = server.start()
    except ServerError as e:
        raise CLIError(str(e)) from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.request_stop())
    print(f"exposure-engine daemon listening on {endpoint} (device {device}, styles: "
          f"{', '.join(styles.names()) or 'none'})", flush=True)
    reason = server.serve_forever()
    return 1 if reason == "drain timeout" else 0
