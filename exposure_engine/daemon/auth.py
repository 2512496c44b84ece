"""Who may talk to the daemon: loopback by default, CURVE-authenticated clients for anything else.

``exposure-engine serve --gen-keys DIR`` writes (pyzmq's ZPL certificate files)::

    DIR/server.key           server public key: give it to every client
    DIR/server.key_secret    server secret key: stays on the daemon's machine (mode 0600)
    DIR/client.key           a client's public key
    DIR/client.key_secret    that client's secret key (mode 0600): copy it, with server.key, to the client
    DIR/authorized/          public keys of the clients the daemon accepts (client.key is put here)

A daemon started with ``--keys DIR`` encrypts and authenticates every connection (ZeroMQ CURVE, via
``zmq.auth.thread.ThreadAuthenticator``): a client whose public key is not in ``DIR/authorized/`` gets no
reply at all (the handshake fails; ZeroMQ does not tell it why).
"""
from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SERVER = "server"
CLIENT = "client"
AUTHORIZED = "authorized"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class KeyFileError(ValueError):
    """Missing or unreadable key files (the message names the file)."""


def is_loopback(url: str) -> bool:
    """True when ``url`` can only be reached from this machine: ``ipc://``, ``inproc://``, or TCP on a
    loopback address (127.0.0.0/8, ::1, localhost). ``tcp://*:5557`` or ``tcp://eth0:5557`` are not."""
    scheme, _, rest = url.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = urlsplit(f"tcp://{rest}").hostname or ""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name, a DNS name other than localhost
        return False


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    authorized_dir: Path


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server_public: bytes


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise KeyFileError(f"{path}: key file missing (make keys with `exposure-engine serve --gen-keys DIR`)")
    try:
        public, sec = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as e:
        raise KeyFileError(f"{path}: not a ZeroMQ certificate ({e})") from None
    if secret and not sec:
        raise KeyFileError(f"{path}: holds no secret key")
    return public, sec


def generate_keys(directory: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Path]:
    """Write a server key pair, one client key pair and the authorized folder (see the module doc)."""
    import zmq.auth

    d = Path(directory)
    if not overwrite and any((d / f"{n}.key_secret").exists() for n in (SERVER, CLIENT)):
        raise KeyFileError(f"{d}: keys already exist (delete them first; existing clients would stop working)")
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in (SERVER, CLIENT):
        public, secret = zmq.auth.create_certificates(str(d), name)
        os.chmod(secret, 0o600)
        out[f"{name}_public"], out[f"{name}_secret"] = Path(public), Path(secret)
    auth = d / AUTHORIZED
    auth.mkdir(exist_ok=True)
    shutil.copy(out["client_public"], auth / f"{CLIENT}.key")
    out["authorized"] = auth
    return out


def server_keys(directory: str | os.PathLike) -> ServerKeys:
    d = Path(directory)
    public, secret = _load(d / f"{SERVER}.key_secret", secret=True)
    auth = d / AUTHORIZED
    if not auth.is_dir() or not any(auth.glob("*.key")):
        raise KeyFileError(f"{auth}: no authorized client keys (*.key); every client would be refused")
    return ServerKeys(public, secret, auth)  # type: ignore[arg-type]


def client_keys(directory: str | os.PathLike, name: str = CLIENT) -> ClientKeys:
    d = Path(directory)
    public, secret = _load(d / f"{name}.key_secret", secret=True)
    server_public, _ = _load(d / f"{SERVER}.key", secret=False)
    return ClientKeys(public, secret, server_public)  # type: ignore[arg-type]


def start_authenticator(context, keys: ServerKeys):
    """Start ZAP on ``context``: only clients whose public key is in ``keys.authorized_dir`` get through.
    Returns the authenticator (call ``.stop()`` when the daemon exits)."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized_dir))
    return auth


def make_curve_server(socket, keys: ServerKeys) -> None:
    import zmq

    socket.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    socket.setsockopt(zmq.CURVE_SERVER, 1)


def make_curve_client(socket, keys: ClientKeys) -> None:
    import zmq

    socket.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    socket.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
