// The play page: keyboard -> unified actions over one WebSocket, generated frames -> canvas.
// Protocol: infworld/serve/server.py. Action ids: docs/actions.md
//   move = (forward + 1) * 3 + (right + 1), view = (yaw + 1) * 3 + (pitch + 1), each in 0..8.
"use strict";

const $ = (id) => document.getElementById(id);
const screen = $("screen");
const ctx = screen.getContext("2d");
ctx.imageSmoothingEnabled = false;
const refscreen = $("refscreen");
const rctx = refscreen.getContext("2d");
const timeline = $("timeline");
const tctx = timeline.getContext("2d");

const FPS_KEYS = {  // first-person games (ViZDoom): event.code -> [axis, value]
  KeyW: ["forward", 1], KeyS: ["forward", -1], KeyA: ["right", -1], KeyD: ["right", 1],
  ArrowLeft: ["yaw", -1], ArrowRight: ["yaw", 1], ArrowUp: ["pitch", 1], ArrowDown: ["pitch", -1],
  KeyE: ["interact", "use"], Space: ["interact", "attack"],
};
// Crafter (top-down, fixed camera): crafter's own keyboard layout (crafter/run_gui.py). W/S move up /
// down the screen (forward +-1), A/D left / right; every interaction by its vocabulary name.
const CRAFTER_KEYS = {
  KeyW: ["forward", 1], KeyS: ["forward", -1], KeyA: ["right", -1], KeyD: ["right", 1],
  Space: ["interact", "do"], Tab: ["interact", "sleep"], KeyR: ["interact", "place_stone"],
  KeyT: ["interact", "place_table"], KeyF: ["interact", "place_furnace"], KeyP: ["interact", "place_plant"],
  Digit1: ["interact", "make_wood_pickaxe"], Digit2: ["interact", "make_stone_pickaxe"],
  Digit3: ["interact", "make_iron_pickaxe"], Digit4: ["interact", "make_wood_sword"],
  Digit5: ["interact", "make_stone_sword"], Digit6: ["interact", "make_iron_sword"],
};
const KEY_LABELS = { Space: "Space", Tab: "Tab" };
let KEYS = FPS_KEYS;

const st = {
  ws: null, hello: null, lastError: "", inflight: false, pending: "", sentAt: 0, held: new Set(), tapped: new Set(),
  fps: 0, rtt: 0, frameCount: 0, window: 16,
};

function setStatus(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "status error" : "status";
}

function connect() {
  const url = new URL("ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  st.ws = ws;
  st.inflight = false;
  ws.onopen = () => setStatus("connected");
  ws.onclose = (ev) => {
    st.inflight = false;
    if (st.ws !== ws) return;
    // The server says why before it closes ("busy": every session is taken, "idle"): keep its words.
    const why = st.lastError || ev.reason;
    if (!st.hello) $("model").textContent = why || "could not connect";
    setStatus(why ? `${why} (reload to try again)` : `disconnected (${ev.code}); reload to play again`, true);
  };
  ws.onerror = () => setStatus("connection error", true);
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { setStatus("bad message from server", true); return; }
    if (msg.type === "hello") onHello(msg);
    else if (msg.type === "frame") onFrame(msg);
    else if (msg.type === "error") onError(msg);
  };
}

function onHello(h) {
  st.hello = h;
  st.window = h.window || 16;
  const s = h.sampler || {};
  $("model").textContent = `${h.model} | memory ${h.memory} (budget ${h.budget}) | ${h.frame_size.join("x")} | ` +
    `${s.name} sampler, ${s.steps} steps | ${h.frames_per_action} frame(s) per action`;
  screen.width = refscreen.width = h.frame_size[1];
  screen.height = refscreen.height = h.frame_size[0];
  ctx.imageSmoothingEnabled = false;
  rctx.imageSmoothingEnabled = false;
  // The real game beside the model (infworld play --real-reference): same keys, both frames.
  const ref = h.reference;
  $("refbox").hidden = !ref;
  $("screencap").hidden = !ref;
  document.querySelector(".screens").classList.toggle("pair", !!ref);
  if (ref) $("refcap").textContent = `real game: ${ref.env} ${ref.scenario}`;
  const sel = $("start");
  sel.innerHTML = "";
  h.starts.forEach((name, i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = `${i}: ${name}`;
    sel.appendChild(o);
  });
  $("download").href = h.download;
  $("pitchhelp").style.display = h.has_pitch ? "" : "none";
  KEYS = h.env === "crafter" ? CRAFTER_KEYS : FPS_KEYS;
  $("fpshelp").hidden = KEYS !== FPS_KEYS;
  $("crafterhelp").hidden = KEYS !== CRAFTER_KEYS;
  if (KEYS === CRAFTER_KEYS) {
    $("crafterkeys").innerHTML = Object.entries(CRAFTER_KEYS).filter(([, k]) => k[0] === "interact")
      .map(([code, k]) => `<kbd>${KEY_LABELS[code] || code.replace(/^(Key|Digit)/, "")}</kbd> ${k[1]}`).join(", ");
  }
  screen.focus();
}

function interactId(name) {
  const vocab = (st.hello && st.hello.interact_vocab) || [];
  const i = vocab.indexOf(name);
  if (i > 0) return i;
  if (KEYS === CRAFTER_KEYS) return 0;  // Crafter keys name their action exactly: no stand-in
  return vocab.length > 1 ? 1 : 0;
}

function currentAction(codes) {
  const a = { forward: 0, right: 0, yaw: 0, pitch: 0, interact: 0 };
  let any = false;
  for (const code of codes) {
    const k = KEYS[code];
    if (!k) continue;
    if (k[0] === "pitch" && st.hello && !st.hello.has_pitch) continue;
    any = true;
    if (k[0] === "interact") a.interact = interactId(k[1]);
    else a[k[0]] = Math.max(-1, Math.min(1, a[k[0]] + k[1]));
  }
  if (!any) return null;
  return { move: (a.forward + 1) * 3 + (a.right + 1), view: (a.yaw + 1) * 3 + (a.pitch + 1),
           interact: a.interact, label: a };
}

function send(obj) {
  if (!st.ws || st.ws.readyState !== WebSocket.OPEN) return false;
  st.ws.send(JSON.stringify(obj));
  return true;
}

// Send the next action if keys are down (or were tapped) and no frame is pending.
function pump() {
  if (st.inflight) return;
  const codes = new Set([...st.held, ...st.tapped]);
  st.tapped.clear();
  const act = currentAction(codes);
  if (!act) return;
  st.sentAt = performance.now();
  if (send({ type: "action", move: act.move, view: act.view, interact: act.interact, t: st.sentAt })) {
    st.inflight = true;
    st.pending = "action";
    const l = act.label;
    $("action").textContent = `move ${act.move} view ${act.view} interact ${act.interact}` +
      ` (fwd ${l.forward}, right ${l.right}, yaw ${l.yaw}, pitch ${l.pitch})`;
  }
}

function resetTo(start) {
  st.sentAt = performance.now();
  if (send({ type: "reset", start: start, t: st.sentAt })) { st.inflight = true; st.pending = "reset"; }
}

function drawImages(msg, images, target, count) {
  const mime = msg.format === "jpeg" ? "image/jpeg" : "image/png";
  const gap = images.length > 1 ? Math.max(0, st.rtt / images.length) : 0;
  const c = target.getContext("2d");
  images.forEach((b64, i) => {
    const img = new Image();
    img.onload = () => {
      const draw = () => {
        c.drawImage(img, 0, 0, target.width, target.height);
        if (count) {
          st.frameCount += 1;
          target.dataset.frames = String(st.frameCount);
        }
      };
      if (i === 0 || gap === 0) draw(); else setTimeout(draw, i * gap);
    };
    img.src = `data:${mime};base64,${b64}`;
  });
}

function drawTimeline(msg) {
  const w = timeline.width, h = timeline.height;
  tctx.fillStyle = "#0d0f13";
  tctx.fillRect(0, 0, w, h);
  const now = Math.max(1, msg.frame);
  const x = (f) => 4 + (w - 8) * (f / now);
  tctx.fillStyle = "#3a5a8c";  // the local window (KV cache)
  const lo = Math.max(0, msg.frame - st.window + 1);
  tctx.fillRect(x(lo), 6, Math.max(2, x(msg.frame) - x(lo)), h - 12);
  tctx.fillStyle = "#f0b429";  // retrieved / remembered frames
  for (const s of msg.sources || []) {
    if (s >= 0) tctx.fillRect(x(s) - 1, 2, 3, h - 4);
  }
  if ((msg.sources || []).includes(-1)) { tctx.fillRect(0, h - 4, w, 3); }  // compressed summary
  tctx.fillStyle = "#e6e6e6";
  tctx.fillRect(x(msg.frame) - 1, 0, 2, h);
}

function onFrame(msg) {
  const now = performance.now();
  if (st.inflight && st.pending === "action") {
    st.rtt = now - st.sentAt;
    const inst = 1000 * msg.images.length / Math.max(st.rtt, 1e-3);
    st.fps = st.fps ? 0.8 * st.fps + 0.2 * inst : inst;  // smoothed frames per second, action in -> frame out
    $("fps").textContent = st.fps.toFixed(1);
    $("latency").textContent = `${st.rtt.toFixed(0)} ms`;
  }
  st.inflight = false;
  drawImages(msg, msg.images, screen, true);
  const ref = msg.reference;
  if (ref && ref.images) {
    drawImages(msg, ref.images, refscreen, false);
    const where = ref.from === "start" ? (ref.exact ? "from the same start" : "replayed start (differs)")
      : "from the scenario start (this start has no recorded game state)";
    $("refcap").textContent = `real game, ${where}` + (ref.ended ? " | episode ended: Reset" : "");
  }
  const t = msg.timing || {};
  $("server").textContent = `${msg.latency_ms.toFixed(0)} ms (${(t.generate_ms || 0).toFixed(0)} + ` +
    `${(t.encode_ms || 0).toFixed(1)}), engine ${msg.fps.toFixed(1)} fps`;
  $("frame").textContent = String(msg.frame);
  $("generated").textContent = String(msg.generated);
  $("memory").textContent = msg.memory;
  $("fill").textContent = `${msg.held} / ${msg.capacity}` +
    (msg.capacity !== msg.budget ? `, reads <= ${msg.budget}` : "");
  $("fillbar").style.width = `${Math.min(100, 100 * msg.fill).toFixed(0)}%`;
  const src = msg.sources || [];
  $("sources").textContent = src.length ? src.map((s) => (s < 0 ? "summary" : String(s))).join(", ")
    : "none beyond the local window";
  $("state").textContent = `${(msg.state_bytes / 1e6).toFixed(2)} MB`;
  if (String(msg.start) !== $("start").value && msg.generated === 0) $("start").value = String(msg.start);
  setStatus(msg.pose ? `pose (dead-reckoned): ${msg.pose.slice(0, 2).join(", ")}` : "connected");
  drawTimeline(msg);
  pump();
}

function onError(msg) {
  st.inflight = false;
  if (msg.code === "busy" || msg.code === "idle") st.lastError = msg.message;  // the server closes next
  setStatus(`error (${msg.code}): ${msg.message}`, true);
}

document.addEventListener("keydown", (ev) => {
  if (!(ev.code in KEYS) || ev.target.tagName === "SELECT") return;
  ev.preventDefault();
  if (!ev.repeat) { st.held.add(ev.code); st.tapped.add(ev.code); }
  pump();
});
document.addEventListener("keyup", (ev) => {
  st.held.delete(ev.code);
  if (ev.code in KEYS && ev.target.tagName !== "SELECT") ev.preventDefault();  // Space must not click buttons
});
window.addEventListener("blur", () => st.held.clear());
screen.addEventListener("click", () => screen.focus());
$("reset").addEventListener("click", () => { resetTo(Number($("start").value)); screen.focus(); });
$("start").addEventListener("change", () => { resetTo(Number($("start").value)); screen.focus(); });

connect();
