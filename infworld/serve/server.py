"""The play server: an ASGI app (Starlette) with one page and one WebSocket per browser tab.

``create_app(model, memory)`` loads the network once (session.EngineFactory); every WebSocket
connection opens an isolated :class:`~infworld.serve.session.Session` with its own rollout state.

Protocol (JSON text messages, at most ``max_message_bytes``, 4 KB by default):

client -> server
  {"type": "reset", "start": i}                        restart from starting context i
  {"type": "action", "move": m, "view": v, "interact": k, "t": any}
                                                       one unified action (docs/actions.md): move and
                                                       view 0..8, interact 0..N-1; "t" is echoed back
  {"type": "ping", "t": any}                           -> {"type": "pong", "t": ...}
server -> client
  {"type": "hello", "session": id, "model": ..., "memory": ..., "starts": [names], ...} on connect
  {"type": "frame", "images": [base64 PNG/JPEG, ...], "format": "png", "frame": index,
   "generated": n, "fps": engine fps, "latency_ms": server time for this message,
   "timing": {"generate_ms", "encode_ms"}, "memory": name, "held": frames held, "capacity": most it
   holds, "budget": most frames a read returns, "fill": held / capacity, "sources": [frame indices
   the memory read], "state_bytes": ..., "t": echo,
   "reference": {"images": [...], "from": "start" | "scenario start", "exact", "ended", "pose",
                 "applied"}}                           only with a real-game reference (reference.py)
  {"type": "error", "code": ..., "message": ...}       the session lives on (except busy / idle)

With ``real_reference`` every session also runs the real game (serve/reference.py) with the same
actions; "hello" then carries ``"reference": {"env", "scenario", "replay"}`` and each frame the
game's frames, and the MP4 shows both side by side.

``GET /download.mp4?session=ID`` returns the session's frames (the last ``max_log_frames`` since the
last reset) as MP4. The session id is a random token only its own tab learns (in "hello").

Sessions are capped (``max_sessions``, more get a "busy" error, then close code 1013 with the same
message as its reason; the page shows that message) and a session
idle for ``idle_timeout_s`` is closed. Generation runs in a worker thread under one lock: on a
2-core CPU, one engine step at a time with all cores is faster than several competing ones, and
the event loop stays free to answer pings, errors and downloads meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infworld.errors import ConfigError, InfWorldError
from infworld.serve.session import EngineFactory, Session, SessionConfig
from infworld.serve.starts import Starts, load_or_make_starts

STATIC_DIR = Path(__file__).resolve().parent / "static"
IMAGE_FORMATS = ("png", "jpeg")
CLOSE_TRY_AGAIN = 1013  # WebSocket close code "try again later" (RFC 6455 registry)
CLOSE_GOING_AWAY = 1001
log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """Limits of the play server and how frames are sent."""

    max_sessions: int = 4
    idle_timeout_s: float = 300.0
    max_message_bytes: int = 4096
    image_format: str = "png"  # png (lossless) | jpeg
    jpeg_quality: int = 90
    real_reference: bool = False  # run the real game beside the model in every session
    session: SessionConfig = field(default_factory=SessionConfig)

    def check(self) -> None:
        if self.max_sessions < 1:
            raise ConfigError(f"server.max_sessions: expected >= 1, got {self.max_sessions}")
        if self.idle_timeout_s <= 0:
            raise ConfigError(f"server.idle_timeout_s: expected > 0, got {self.idle_timeout_s}")
        if self.max_message_bytes < 64:
            raise ConfigError(f"server.max_message_bytes: expected >= 64, got {self.max_message_bytes}")
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"server.image_format: expected one of {IMAGE_FORMATS}, "
                              f"got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"server.jpeg_quality: expected 1..100, got {self.jpeg_quality}")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to ``host``:``port`` (0 = any free port).

    Bound before anything is announced or served, so a port out of range, one another program
    holds, or an address this machine does not have is a ConfigError naming it, not a traceback
    from inside the event loop after the page's address was already printed.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port}: expected 0..65535")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"host {host!r}: cannot resolve it ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart right after a stop
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        hint = {errno.EADDRINUSE: "; another program is using it, pick another --port",
                errno.EACCES: "; ports below 1024 need root, pick another --port",
                errno.EADDRNOTAVAIL: "; this machine has no such address, check --host"}.get(exc.errno, "")
        raise ConfigError(f"cannot listen on {host} port {port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


class ProtocolError(InfWorldError):
    """A client message that breaks the protocol; ``code`` goes into the error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def encode_image(frame: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """uint8 RGB frame (H, W, 3) -> PNG or JPEG bytes."""
    import cv2

    bgr = np.ascontiguousarray(frame[..., ::-1])
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:  # pragma: no cover - cv2 fails only on invalid arrays
        raise ConfigError(f"could not encode a {frame.shape} frame as {fmt}")
    return buf.tobytes()


def parse_message(raw: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """An ASGI websocket.receive event -> a JSON object with a string "type", or ProtocolError."""
    text = raw.get("text")
    if text is None:
        size = len(raw.get("bytes") or b"")
        if size > max_bytes:
            raise ProtocolError("too_large", f"message of {size} bytes; the limit is {max_bytes}")
        raise ProtocolError("bad_message", "binary messages are not accepted; send JSON text")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError("too_large", f"message of {size} bytes; the limit is {max_bytes}")
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"not valid JSON ({exc})") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_message", 'expected a JSON object with a string "type"')
    return msg


class SessionRegistry:
    """Open sessions by id, at most ``limit`` of them."""

    def __init__(self, limit: int):
        self.limit = limit
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def add(self, make) -> Session | None:
        """``make()`` a session and register it, or None when the cap is reached."""
        with self._lock:
            if len(self._sessions) >= self.limit:
                return None
            session = make()
            self._sessions[session.id] = session
            return session

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def remove(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


class PlayServer:
    """The state behind the ASGI app: factory, starts, sessions, the compute lock."""

    def __init__(self, factory: EngineFactory, starts: Starts, config: ServerConfig):
        config.check()
        config.session.check(factory.chunk)
        starts.check_model(factory.frame_size, factory.action_sizes,
                           interact_vocab=factory.template.interact_vocab)
        self.factory = factory
        self.starts = starts
        self.config = config
        self.sessions = SessionRegistry(config.max_sessions)
        self.compute = threading.Lock()
        self.reference_info: dict[str, Any] | None = None
        if config.real_reference:  # open one game now: a starts file no game can replay fails at start-up
            probe = self.open_reference()
            game = probe.game.spec_game
            self.reference_info = {"env": game.name, "scenario": game.scenario, "replay": starts.has_replay}
            probe.close()

    def open_reference(self):
        """A new real-game reference for one session (serve/reference.py)."""
        from infworld.serve.reference import RealReference

        num_interact = self.factory.accepted_actions["interact"]
        return RealReference.open(self.starts, self.factory.frame_size, num_interact,
                                  seed=self.config.session.seed)

    def new_session(self) -> Session:
        reference = self.open_reference() if self.config.real_reference else None
        return Session(self.factory, self.starts, self.config.session, reference=reference)

    def hello(self, session: Session) -> dict[str, Any]:
        meta = self.starts.meta
        vocab = meta.get("interact_vocab") or [str(i) for i in range(self.factory.action_sizes["interact"])]
        return {"type": "hello", "session": session.id, **self.factory.describe(),
                "starts": list(self.starts.names), "interact_vocab": list(vocab), "env": meta.get("env"),
                "has_pitch": bool(meta.get("has_pitch", True)), "frames_per_action":
                session.config.frames_per_action, "max_message_bytes": self.config.max_message_bytes,
                "image_format": self.config.image_format, "download": f"download.mp4?session={session.id}",
                "reference": self.reference_info}

    async def run(self, fn, *args: Any) -> Any:
        """Run a blocking engine call in a worker thread, one at a time."""
        def locked():
            with self.compute:
                return fn(*args)

        return await asyncio.to_thread(locked)

    def frame_message(self, session: Session, frames: np.ndarray, t_recv: float, gen_s: float,
                      echo: Any = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        fmt, q = self.config.image_format, self.config.jpeg_quality
        images = [base64.b64encode(encode_image(f, fmt, q)).decode("ascii") for f in frames]
        enc_s = time.perf_counter() - t0
        msg = {"type": "frame", "images": images, "format": fmt, **session.status(),
               "timing": {"generate_ms": round(gen_s * 1e3, 3), "encode_ms": round(enc_s * 1e3, 3)}}
        if session.reference_frames is not None:
            msg["reference"]["images"] = [base64.b64encode(encode_image(f, fmt, q)).decode("ascii")
                                          for f in session.reference_frames]
        msg["latency_ms"] = round((time.perf_counter() - t_recv) * 1e3, 3)
        if echo is not None:
            msg["t"] = echo
        return msg

    async def handle(self, session: Session, msg: dict[str, Any], t_recv: float) -> dict[str, Any]:
        """The reply to one parsed message (errors raise ProtocolError / InfWorldError)."""
        kind = msg["type"]
        echo = msg.get("t") if isinstance(msg.get("t"), (int, float, str)) else None
        if kind == "ping":
            return {"type": "pong", "t": echo, "frame": session.frame_index}
        if kind == "reset":
            start = msg.get("start", session.start)
            t0 = time.perf_counter()
            frames = await self.run(session.reset, start)
            return self.frame_message(session, frames, t_recv, time.perf_counter() - t0, echo)
        if kind == "action":
            args = (msg.get("move", 4), msg.get("view", 4), msg.get("interact", 0))
            t0 = time.perf_counter()
            frames = await self.run(session.step, *args)
            return self.frame_message(session, frames, t_recv, time.perf_counter() - t0, echo)
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected reset, action or ping")

    async def websocket(self, ws) -> None:
        """One tab: open a session, answer messages until it disconnects or idles out."""
        from starlette.websockets import WebSocketDisconnect

        await ws.accept()
        cfg = self.config
        try:
            session = self.sessions.add(self.new_session)
        except InfWorldError as exc:  # the real game failed to start
            await ws.send_text(json.dumps({"type": "error", "code": "internal", "message": str(exc)}))
            await ws.close(code=CLOSE_TRY_AGAIN, reason=str(exc)[:120])
            return
        if session is None:
            busy = f"all {cfg.max_sessions} play sessions are in use; try later"
            await ws.send_text(json.dumps({"type": "error", "code": "busy", "message": busy}))
            await ws.close(code=CLOSE_TRY_AGAIN, reason=busy)  # and as the reason
            return
        try:
            await ws.send_text(json.dumps(self.hello(session)))
            t0 = time.perf_counter()
            frames = await self.run(session.reset, 0)
            await ws.send_text(json.dumps(self.frame_message(session, frames, t0, time.perf_counter() - t0)))
            while True:
                try:
                    raw = await asyncio.wait_for(ws.receive(), timeout=cfg.idle_timeout_s)
                except asyncio.TimeoutError:
                    idle = f"no message for {cfg.idle_timeout_s:g} s; session closed"
                    await ws.send_text(json.dumps({"type": "error", "code": "idle", "message": idle}))
                    await ws.close(code=CLOSE_GOING_AWAY)
                    return
                if raw["type"] == "websocket.disconnect":
                    return
                t_recv = time.perf_counter()
                try:
                    reply = await self.handle(session, parse_message(raw, cfg.max_message_bytes), t_recv)
                except ProtocolError as exc:
                    reply = {"type": "error", "code": exc.code, "message": str(exc)}
                except InfWorldError as exc:  # bad action ids or start, a memory over its budget...
                    reply = {"type": "error", "code": "bad_request", "message": str(exc)}
                except Exception as exc:  # a bug or a model/memory mismatch: report it, keep the tab
                    log.exception("play session %s: engine error", session.id)
                    reply = {"type": "error", "code": "internal", "message":
                             f"{type(exc).__name__}: {exc} (reset to continue)"}
                await ws.send_text(json.dumps(reply))
        except WebSocketDisconnect:  # the tab went away mid-reply: nothing to tell it
            pass
        finally:
            self.sessions.remove(session.id)
            session.close()


def create_app(model: str | EngineFactory, memory: str = "window", *, starts: Starts | str | None = None,
               config: ServerConfig | None = None, memory_cfg: dict[str, Any] | None = None,
               **overrides: Any):
    """The ASGI app. ``model``: an exported world model (name or folder) or a loaded EngineFactory;
    ``starts``: a Starts, a starts.npz path, or None for the model's own (or a collector run);
    ``overrides``: WorldModel.from_pretrained settings (steps, name, chunk, seed...)."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles

    factory = model if isinstance(model, EngineFactory) else EngineFactory.load(
        model, memory, memory_cfg=memory_cfg, **overrides)
    if starts is None:
        starts = load_or_make_starts(factory.model_dir, factory.frame_size,
                                     interact_vocab=factory.template.interact_vocab)
    elif not isinstance(starts, Starts):
        starts = Starts.load(starts)
    server = PlayServer(factory, starts, config or ServerConfig())

    async def index(request):
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def info(request):
        # "actions": ids a client may send per field (0..n-1); "model_actions": the model's label tables
        return JSONResponse({**factory.describe(), "starts": list(starts.names),
                             "sessions": len(server.sessions), "max_sessions": server.config.max_sessions})

    async def download(request):
        session = server.sessions.get(request.query_params.get("session", ""))
        if session is None:
            return JSONResponse({"error": "unknown or closed session"}, status_code=404)
        try:
            data = await asyncio.to_thread(session.mp4_bytes)
        except InfWorldError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        name = f"infworld-{factory.model_name}-{session.frame_index}.mp4"
        return Response(data, media_type="video/mp4",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def favicon(request):  # the page carries an inline icon; this answers browsers that ask anyway
        return Response(status_code=204)

    app = Starlette(routes=[
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/info", info),
        Route("/download.mp4", download),
        WebSocketRoute("/ws", server.websocket),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ])
    app.state.play = server
    return app
