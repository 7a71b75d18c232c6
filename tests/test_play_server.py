"""The play server (in-process, Starlette TestClient), sessions, starting frames and ``infworld play``."""

from __future__ import annotations

import base64
import json

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from synthetic import make_dataset
from test_rollout_cli import train_and_export

from infworld.cli import main
from infworld.cli.play import is_loopback, loop_length, walk_script
from infworld.errors import ConfigError, DataError
from infworld.memory.deadreckon import DeadReckonConfig, DeadReckoner
from infworld.serve.server import ServerConfig, create_app
from infworld.serve.session import EngineFactory, Session, SessionConfig
from infworld.serve.starts import Starts, starts_from_dataset

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402


def build_play_model(base):
    """A synthetic dataset (32x32), a tiny world model trained on it for a few steps and exported,
    and 3 starting contexts of 3 frames cut from the dataset."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = make_dataset(base / "data")
        train_and_export("tiny-test-world", data, base / "run", base / "model", "train.steps=4")
    finally:
        torch.set_num_threads(prev)
    return base / "model", starts_from_dataset(data, count=3, context=3), data


@pytest.fixture(scope="module")
def play(tmp_path_factory):
    model, starts, data = build_play_model(tmp_path_factory.mktemp("play"))
    return {"model": model, "starts": starts, "data": data,
            "factory": EngineFactory.load(str(model), "window")}


def app_for(play, **server):
    session = server.pop("session", SessionConfig(max_log_frames=5))
    return create_app(play["factory"], starts=play["starts"], config=ServerConfig(session=session, **server))


def decode(b64: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
    return img[..., ::-1]  # BGR -> RGB


def opened(ws) -> tuple[dict, dict]:
    """The hello and the first frame every new connection gets."""
    hello = ws.receive_json()
    first = ws.receive_json()
    assert hello["type"] == "hello" and first["type"] == "frame"
    return hello, first


def act(ws, move=7, view=4, interact=0) -> dict:
    ws.send_text(json.dumps({"type": "action", "move": move, "view": view, "interact": interact, "t": 1}))
    return ws.receive_json()


def test_two_sessions_are_isolated(play):
    with TestClient(app_for(play)) as client:
        with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
            ha, fa = opened(a)
            hb, _ = opened(b)
            assert ha["session"] != hb["session"]
            assert fa["frame"] == play["starts"].context - 1 and fa["generated"] == 0
            a_frames = [act(a, move=1) for _ in range(3)]  # walk backwards
            got_b = act(b, move=7)
            assert [f["generated"] for f in a_frames] == [1, 2, 3] and got_b["generated"] == 1
            assert got_b["frame"] == fa["frame"] + 1
            assert all(f["type"] == "frame" and len(f["images"]) == 1 for f in a_frames)
        # The same actions in a session of its own give B's frame bit for bit: A's stepping in between
        # changed nothing of B's state.
        with client.websocket_connect("/ws") as c:
            opened(c)
            solo = act(c, move=7)
        assert np.array_equal(decode(solo["images"][0]), decode(got_b["images"][0]))
        assert not np.array_equal(decode(a_frames[0]["images"][0]), decode(got_b["images"][0]))


def test_bad_messages_get_error_replies_and_the_session_lives_on(play):
    bad = [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        (json.dumps({"kind": "action"}), "bad_message"),
        (json.dumps({"type": "fly"}), "unknown_type"),
        (json.dumps({"type": "action", "move": 1, "pad": "x" * 5000}), "too_large"),
        (json.dumps({"type": "action", "move": 9}), "bad_request"),  # 9 = uncertain: a label, not a key
        (json.dumps({"type": "action", "view": -1}), "bad_request"),
        (json.dumps({"type": "action", "interact": 2}), "bad_request"),  # vocab is none/use
        (json.dumps({"type": "action", "move": "7"}), "bad_request"),
        (json.dumps({"type": "action", "move": True}), "bad_request"),
        (json.dumps({"type": "reset", "start": 3}), "bad_request"),
    ]
    with TestClient(app_for(play)) as client, client.websocket_connect("/ws") as ws:
        opened(ws)
        for text, code in bad:
            ws.send_text(text)
            reply = ws.receive_json()
            assert reply["type"] == "error" and reply["code"] == code, (text[:40], reply)
            assert reply["message"]
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["code"] == "bad_message"
        ws.send_text(json.dumps({"type": "ping", "t": 42}))
        assert ws.receive_json() == {"type": "pong", "t": 42, "frame": play["starts"].context - 1}
        ok = act(ws)
        assert ok["type"] == "frame" and ok["generated"] == 1 and ok["t"] == 1
        assert ok["memory"] == "window" and ok["budget"] >= 1 and 0 < ok["fill"] <= 1
        assert ok["latency_ms"] > 0 and ok["timing"]["generate_ms"] > 0


def test_an_engine_failure_is_reported_and_the_tab_can_go_on(play, monkeypatch):
    calls = []
    real = Session.step_actions

    def flaky(self, *a):
        calls.append(1)
        if len(calls) == 1:
            raise IndexError("index out of range in self")
        return real(self, *a)

    monkeypatch.setattr(Session, "step_actions", flaky)
    with TestClient(app_for(play)) as client, client.websocket_connect("/ws") as ws:
        opened(ws)
        err = act(ws)
        assert err["type"] == "error" and err["code"] == "internal" and "IndexError" in err["message"]
        ws.send_text(json.dumps({"type": "reset", "start": 0}))
        assert ws.receive_json()["type"] == "frame"
        assert act(ws)["generated"] == 1


def test_reset_restarts_from_the_chosen_start(play):
    starts = play["starts"]
    with TestClient(app_for(play)) as client, client.websocket_connect("/ws") as ws:
        _, first = opened(ws)
        assert np.array_equal(decode(first["images"][0]), starts.frames[0, -1])  # PNG is lossless
        for _ in range(2):
            act(ws)
        ws.send_text(json.dumps({"type": "reset", "start": 2}))
        r = ws.receive_json()
        assert r["type"] == "frame" and r["start"] == 2 and r["generated"] == 0
        assert r["frame"] == starts.context - 1
        assert np.array_equal(decode(r["images"][0]), starts.frames[2, -1])
        assert act(ws)["generated"] == 1


def test_download_returns_the_last_frames_as_mp4(play):
    with TestClient(app_for(play)) as client, client.websocket_connect("/ws") as ws:
        hello, _ = opened(ws)
        for _ in range(7):
            act(ws)
        r = client.get("/download.mp4", params={"session": hello["session"]})
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        assert r.content[4:8] == b"ftyp"
        path = play["model"].parent / "dl.mp4"
        path.write_bytes(r.content)
        video = imageio.mimread(path)
        assert len(video) == 5  # bounded: the last max_log_frames frames
        assert video[0].shape == (32 * 4, 32 * 4, 3)  # scaled x4
        assert hello["download"].endswith(hello["session"])
        assert client.get("/download.mp4", params={"session": "nope"}).status_code == 404
    # the session is gone once its socket closes
    assert client.get("/download.mp4", params={"session": hello["session"]}).status_code == 404


def test_session_cap_and_idle_timeout(play):
    with TestClient(app_for(play, max_sessions=2)) as client:
        with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
            opened(a)
            opened(b)
            with client.websocket_connect("/ws") as c:
                busy = c.receive_json()
                assert busy["type"] == "error" and busy["code"] == "busy"
                assert busy["message"] == "all 2 play sessions are in use; try later"
                with pytest.raises(WebSocketDisconnect) as closed:
                    c.receive_json()
                assert closed.value.code == 1013 and closed.value.reason == busy["message"]
            assert act(a)["type"] == "frame"
        with client.websocket_connect("/ws") as d:  # room again once the others left
            opened(d)
            assert client.get("/info").json()["sessions"] == 1
    with TestClient(app_for(play, idle_timeout_s=0.3)) as client, client.websocket_connect("/ws") as ws:
        opened(ws)
        assert ws.receive_json()["code"] == "idle"


def test_info_reports_the_action_ids_the_server_accepts(play):
    """/info and hello name the ids a client may send; the largest of each is accepted, one more is not."""
    with TestClient(app_for(play)) as client:
        info = client.get("/info").json()
        assert info["actions"] == {"move": 9, "view": 9, "interact": 2}  # move/view 0..8, interact none/use
        assert info["model_actions"]["move"] == 10  # the model also knows 9 = uncertain, a label only
        assert client.get("/favicon.ico").status_code < 400
        assert 'rel="icon"' in client.get("/").text
        with client.websocket_connect("/ws") as ws:
            hello, _ = opened(ws)
            assert hello["actions"] == info["actions"]
            top = {k: n - 1 for k, n in info["actions"].items()}
            assert act(ws, top["move"], top["view"], top["interact"])["type"] == "frame"
            for field in top:
                ids = {**top, field: top[field] + 1}
                assert act(ws, ids["move"], ids["view"], ids["interact"])["code"] == "bad_request"


def test_page_and_chunked_actions(play):
    cfg = SessionConfig(frames_per_action=2, max_log_frames=5)
    with TestClient(app_for(play, session=cfg, image_format="jpeg")) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<canvas" in page.text and "app.js" in page.text
        assert client.get("/static/app.js").status_code == 200
        with client.websocket_connect("/ws") as ws:
            hello, _ = opened(ws)
            assert hello["frames_per_action"] == 2 and hello["starts"] == play["starts"].names
            r = act(ws)
            assert r["format"] == "jpeg" and len(r["images"]) == 2 and r["generated"] == 2
            assert decode(r["images"][1]).shape == (32, 32, 3)


def test_sources_name_the_past_frames_the_memory_reads(play):
    factory = EngineFactory.load(str(play["model"]), "full", memory_cfg={"budget": 40})
    s = Session(factory, play["starts"])
    s.reset(0)
    window = factory.template.window
    assert s.status()["sources"] == []
    for _ in range(window + 2):
        s.step(7, 4, 0)
    src = s.status()["sources"]
    assert src and all(0 <= i < s.engine.index - (window - 1) for i in src)
    st = s.status()
    assert st["held"] >= len(src) and st["capacity"] >= st["held"] and st["budget"] == 40


def test_sessions_share_weights_not_state(play):
    factory = play["factory"]
    a, b = Session(factory, play["starts"]), Session(factory, play["starts"])
    assert a.engine.net is b.engine.net and a.engine.memory is not b.engine.memory
    assert a.engine is not b.engine and a.engine.generator is not b.engine.generator


def test_the_walk_comes_back_to_the_start():
    reckoner = DeadReckoner(DeadReckonConfig(forward=10.0, yaw=15.0))
    moves, views = walk_script(3 * loop_length(15.0), turn_deg=15.0)
    track = reckoner.track(np.zeros(5), moves, views)
    far = float(np.hypot(track[:, 0], track[:, 1]).max())
    assert far >= 100 and np.allclose(track[-1], 0, atol=1e-3)  # went away, came back, faces the same way
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")


def test_session_poses_are_the_one_dead_reckoner(play):
    """A memory that insists on poses while playing gets them from DeadReckoner, step by step."""
    factory = EngineFactory.load(str(play["model"]), "vrag", memory_cfg={"poses": "given"})
    session = Session(factory, play["starts"], SessionConfig(max_log_frames=0))
    assert session.needs_poses
    session.reset(0)
    start = session.pose.copy()
    moves, views = [7, 7, 3, 4, 8], [4, 7, 7, 1, 4]  # walks, turns, both at once, strafes
    for m, v in zip(moves, views, strict=True):
        session.step(m, v)
    np.testing.assert_allclose(session.pose, DeadReckoner().track(start, moves, views)[-1], atol=1e-3)


def test_starts_round_trip_and_checks(play, tmp_path):
    starts = play["starts"]
    assert len(starts) == 3 and starts.frames.shape == (3, 3, 32, 32, 3) and starts.context == 3
    assert starts.meta["interact_vocab"] == ["none", "use"] and starts.meta["move_scale"] > 0
    path = starts.save(tmp_path / "s.npz")
    back = Starts.load(path)
    assert np.array_equal(back.frames, starts.frames) and back.names == starts.names
    assert all(np.array_equal(back.actions[k], starts.actions[k]) for k in starts.actions)
    with pytest.raises(DataError, match="model generates"):
        back.check_model((64, 64), {"move": 10, "view": 10, "interact": 2})
    with pytest.raises(DataError, match=r"\[interact\]: ids must be in 0\.\.0 \(the model's range\)"):
        back.check_model((32, 32), {"move": 10, "view": 10, "interact": 1})
    (tmp_path / "bad.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="bad.npz"):
        Starts.load(tmp_path / "bad.npz")
    # a few bytes overwritten inside the compressed frames: one DataError naming the file, not zlib.error
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3 : len(raw) // 3 + 8] = b"\xff" * 8
    (tmp_path / "damaged.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"damaged\.npz: corrupt or truncated starts file"):
        Starts.load(tmp_path / "damaged.npz")


def test_cli_make_starts_and_headless_walk(play, tmp_path, capsys):
    out = tmp_path / "starts.npz"
    assert main(["play", "--make-starts", str(play["data"]), "--model", str(play["model"]), "--out", str(out),
                 "--count", "2", "--context", "2"]) == 0
    assert Starts.load(out).frames.shape == (2, 2, 32, 32, 3)
    video = tmp_path / "walk.mp4"
    assert main(["play", "--headless", "--model", str(play["model"]), "--starts", str(out), "--frames", "9",
                 "--frames-per-action", "2", "--out", str(video), "--scale", "1"]) == 0
    printed = capsys.readouterr().out
    assert "9 frames" in printed and "fps" in printed
    assert len(imageio.mimread(video)) == 10  # the start frame + 9 generated
    assert main(["play", "--headless", "--model", str(play["model"]), "--starts", str(out), "--frames", "3",
                 "--frames-per-action", "5", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "frames_per_action" in capsys.readouterr().err


def doom_starts(size=(32, 32), count=2, context=3, lead=4) -> Starts:
    """Starts recorded in the real ViZDoom at ``size`` with interact ids 0/1 only (the tiny model's
    vocabulary none/use), each with the replay (seed + every action) that reaches it."""
    from infworld.envs.gym_real import RealGameEnv

    game = RealGameEnv("vizdoom", size=size)
    pattern = [(7, 4, 0), (7, 7, 0), (4, 7, 1), (5, 4, 0), (7, 1, 0)]
    fields = ("move", "view", "interact")
    frames, acts, replay = [], {k: [] for k in fields}, {k: [] for k in fields}
    try:
        for k in range(count):
            shown = [game.reset(options={"game_seed": 11 + k})[0]]
            seq = [pattern[(k + t) % len(pattern)] for t in range(lead + context - 1)]
            shown += [game.step(np.array(a))[0] for a in seq]
            frames.append(np.stack(shown[lead:lead + context]))
            for j, name in enumerate(fields):
                acts[name].append([a[j] for a in seq[lead:]])
                replay[name].append([a[j] for a in seq])
    finally:
        game.close()
    meta = {"env": "vizdoom", "scenario": "my_way_home", "interact_vocab": ["none", "use"], "frame_skip": 4,
            "monsters": False, "turn_deg": 14.0}
    return Starts(np.stack(frames), {k: np.array(v) for k, v in acts.items()},
                  np.full((count, context, 5), np.nan, np.float32), [f"doom {k}" for k in range(count)], meta,
                  replay={"seed": np.arange(11, 11 + count), **{k: np.array(v) for k, v in replay.items()}})


def test_real_reference_plays_the_game_beside_the_model(play, tmp_path, capsys):
    pytest.importorskip("vizdoom")
    from infworld.envs.gym_real import RealGameEnv

    starts = doom_starts()
    app = create_app(play["factory"], starts=starts,
                     config=ServerConfig(real_reference=True, session=SessionConfig(max_log_frames=5)))
    twin = RealGameEnv("vizdoom", size=(32, 32), starts=starts)  # what the reference must show
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        hello, first = opened(ws)
        assert hello["reference"] == {"env": "vizdoom", "scenario": "my_way_home", "replay": True}
        ref = first["reference"]
        assert ref["from"] == "start" and ref["exact"] is True and not ref["ended"]
        assert np.array_equal(decode(ref["images"][0]), starts.frames[0, -1])  # the model's start frame
        twin.reset(options={"start": 0})
        for a in ([7, 4, 0], [4, 7, 1]):
            got = act(ws, *a)
            assert len(got["reference"]["images"]) == 1 and got["reference"]["applied"] == a
            assert np.array_equal(decode(got["reference"]["images"][0]), twin.step(np.array(a))[0])
        ws.send_text(json.dumps({"type": "reset", "start": 1}))
        r = ws.receive_json()
        assert np.array_equal(decode(r["reference"]["images"][0]), starts.frames[1, -1])
        act(ws)
        video = client.get("/download.mp4", params={"session": hello["session"]})
        path = tmp_path / "pair.mp4"
        path.write_bytes(video.content)
        assert imageio.mimread(path)[0].shape == (32 * 4, 64 * 4, 3)  # model | game
    twin.close()
    # a start without a recorded game state: the game begins at the scenario start, and says so
    bare = Starts(starts.frames, starts.actions, starts.poses, starts.names, starts.meta)
    app = create_app(play["factory"], starts=bare, config=ServerConfig(real_reference=True))
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        hello, first = opened(ws)
        assert hello["reference"]["replay"] is False and first["reference"]["from"] == "scenario start"
    # starts of a game infworld cannot run: refused when the app is made
    with pytest.raises(ConfigError, match="real-reference"):
        create_app(play["factory"], starts=play["starts"], config=ServerConfig(real_reference=True))
    # headless: the video is side by side, and the printout compares model and game
    out = starts.save(tmp_path / "doom_starts.npz")
    video = tmp_path / "walk.mp4"
    assert main(["play", "--headless", "--real-reference", "--model", str(play["model"]), "--starts",
                 str(out), "--frames", "4", "--out", str(video), "--scale", "1"]) == 0
    assert "real game beside the model (from the same start" in capsys.readouterr().out
    frames = imageio.mimread(video)
    assert len(frames) == 5 and frames[0].shape == (32, 64, 3)
