// streamvqa console: plain JavaScript, same origin only (the server's CSP allows nothing else).
// The API key lives in sessionStorage (this tab only); HTTP calls send it as a Bearer header,
// WebSockets as the `bearer.<key>` subprotocol, and pictures are fetched with it into blob: URLs.
"use strict";

const KEY_ITEM = "streamvqa.key";
const REFRESH_MS = 1000;
const THUMB_MS = 2000;
const HISTORY = 120; // points per chart (two minutes at one refresh a second)

const $ = (id) => document.getElementById(id);
const state = {
  key: null,
  streams: new Map(), // id -> {card, info, lag: [], mem: [], thumbAt, thumbUrl, delivered}
  sockets: new Map(), // stream id -> WebSocket
  pending: new Map(), // request id -> {text}
  camera: null, // {pc, media, location}
  timer: null,
  seq: 0,
};

// -- HTTP ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h["Authorization"] = "Bearer " + state.key;
  return h;
}

async function api(path, opts) {
  opts = opts || {};
  const init = { method: opts.method || "GET", headers: authHeaders(opts.headers) };
  if (opts.json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.json);
  } else if (opts.body !== undefined) {
    init.body = opts.body;
  }
  const r = await fetch(path, init);
  if (!r.ok) {
    let code = "http_" + r.status, message = r.statusText;
    try {
      const body = await r.json();
      if (body && body.error) { code = body.error.code; message = body.error.message; }
    } catch (e) { /* not JSON */ }
    throw new ApiError(r.status, code, message);
  }
  return r;
}

async function fetchPicture(path) {
  const r = await api(path);
  return { url: URL.createObjectURL(await r.blob()), t: Number(r.headers.get("X-Frame-Time")) };
}

const enc = encodeURIComponent;
const showError = (id, e) => { $(id).textContent = e ? (e.code ? e.code + ": " : "") + e.message : ""; };

// -- sign in ------------------------------------------------------------------------------------

async function signIn(key) {
  state.key = key || null;
  try {
    await api("/v1/streams");
  } catch (e) {
    state.key = null;
    showError("signin-error", e.status === 401 ? { code: "unauthorized", message: "this key is not valid here" } : e);
    return false;
  }
  if (key) sessionStorage.setItem(KEY_ITEM, key); else sessionStorage.removeItem(KEY_ITEM);
  showError("signin-error", null);
  $("signin").hidden = true;
  $("main").hidden = false;
  $("signout").hidden = false;
  $("status").textContent = key ? "signed in" : "no key (auth off)";
  loadMethods();
  refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
  return true;
}

function signOut() {
  sessionStorage.removeItem(KEY_ITEM);
  location.reload();
}

async function loadMethods() {
  try {
    const m = await (await api("/v1/methods")).json();
    const sel = $("add-method");
    sel.replaceChildren();
    for (const name of m.methods) {
      const o = document.createElement("option");
      o.value = o.textContent = name;
      o.selected = name === m.default;
      sel.append(o);
    }
  } catch (e) { showError("add-error", e); }
}

// -- streams ------------------------------------------------------------------------------------

async function refresh() {
  let list;
  try {
    list = (await (await api("/v1/streams")).json()).streams;
  } catch (e) {
    $("status").textContent = e.code === "not_ready" ? "server loading…" : "refresh failed: " + e.message;
    return;
  }
  $("status").textContent = state.key ? "signed in" : "no key (auth off)";
  const seen = new Set();
  for (const info of list) {
    seen.add(info.id);
    let s = state.streams.get(info.id);
    if (!s) {
      s = { card: streamCard(info.id), lag: [], mem: [], thumbAt: 0, thumbUrl: null, delivered: -1 };
      state.streams.set(info.id, s);
      $("stream-list").append(s.card.root);
    }
    s.info = info;
    s.lag.push(info.encode_lag_s || 0);
    s.mem.push(Object.values(info.memory_bytes || {}).reduce((a, b) => a + b, 0));
    if (s.lag.length > HISTORY) { s.lag.shift(); s.mem.shift(); }
    renderStream(s);
    maybeThumb(info.id, s);
  }
  for (const [id, s] of state.streams) {
    if (!seen.has(id)) {
      s.card.root.remove();
      if (s.thumbUrl) URL.revokeObjectURL(s.thumbUrl);
      state.streams.delete(id);
      const ws = state.sockets.get(id);
      if (ws) { ws.close(); state.sockets.delete(id); }
    }
  }
  $("no-streams").hidden = state.streams.size > 0;
  syncAskOptions();
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function chart(label) {
  const box = el("div", "chart");
  const cap = el("div", "muted", label);
  const canvas = el("canvas");
  canvas.width = 200;
  canvas.height = 44;
  box.append(cap, canvas);
  return { box, cap, canvas, label };
}

function drawChart(c, values, fmt) {
  const max = Math.max(...values, 1e-9);
  const n = values.length;
  const g = c.canvas.getContext("2d");
  const w = c.canvas.width, h = c.canvas.height;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = getComputedStyle(c.canvas).color;
  g.lineWidth = 1.5;
  g.beginPath();
  values.forEach((v, i) => {
    const x = n > 1 ? (i / (n - 1)) * (w - 2) + 1 : w - 1, y = h - 2 - (v / max) * (h - 4);
    if (i) g.lineTo(x, y); else g.moveTo(x, y);
  });
  g.stroke();
  c.cap.textContent = `${c.label}: ${fmt(values[n - 1] || 0)} (max ${fmt(max)})`;
}

function streamCard(id) {
  const root = el("div", "stream");
  root.dataset.id = id;
  const img = el("img", "thumb");
  img.alt = "latest frame";
  const body = el("div");
  const title = el("div", "title", id);
  const st = el("span", "state", "…");
  const dl = el("dl");
  const fields = {};
  for (const [k, label] of [["method", "method"], ["lag", "lag"], ["frames", "frames"], ["memory", "memory"],
                            ["error", "error"]]) {
    const dt = el("dt", null, label), dd = el("dd");
    dd.dataset.field = k;
    fields[k] = dd;
    dl.append(dt, dd);
  }
  body.append(title, st, dl);
  const charts = el("div", "charts");
  const lag = chart("lag (s)"), mem = chart("memory");
  charts.append(lag.box, mem.box);
  const actions = el("div", "actions");
  const ask = el("button", "secondary", "Ask");
  ask.type = "button";
  ask.addEventListener("click", () => { $("ask-stream").value = id; $("question").focus(); });
  const del = el("button", "secondary delete", "Delete");
  del.type = "button";
  del.addEventListener("click", () => deleteStream(id));
  actions.append(ask, del);
  root.append(img, body, charts, actions);
  return { root, img, title, st, fields, lag, mem };
}

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}

function renderStream(s) {
  const { info, card } = s;
  card.title.textContent = (info.name ? info.name + " · " : "") + info.url;
  card.title.title = info.id;
  card.st.textContent = info.state;
  card.st.className = "state " + info.state;
  card.fields.method.textContent = `${info.method} @ ${info.fps} fps`;
  card.fields.lag.textContent = info.encode_lag_s == null ? "–" : info.encode_lag_s.toFixed(2) + " s";
  const dropped = Object.values(info.frames_dropped || {}).reduce((a, b) => a + b, 0);
  card.fields.frames.textContent =
    `${info.frames_decoded} decoded · ${info.frames_encoded} encoded · ${dropped} dropped`;
  const tiers = Object.entries(info.memory_bytes || {}).filter(([, v]) => v > 0);
  card.fields.memory.textContent = tiers.length ? tiers.map(([k, v]) => `${k} ${bytes(v)}`).join(" · ") : "0";
  card.fields.error.textContent = info.last_error ? `${info.last_error.code}: ${info.last_error.message}` : "–";
  drawChart(card.lag, s.lag, (v) => v.toFixed(2) + " s");
  drawChart(card.mem, s.mem, bytes);
}

async function maybeThumb(id, s) {
  const now = Date.now();
  if (s.info.frames_delivered === s.delivered || now - s.thumbAt < THUMB_MS || s.loading) return;
  s.loading = true;
  try {
    const pic = await fetchPicture(`/v1/streams/${enc(id)}/frames/latest.jpg`);
    if (s.thumbUrl) URL.revokeObjectURL(s.thumbUrl);
    s.thumbUrl = pic.url;
    s.card.img.src = pic.url;
    s.card.img.title = `t = ${pic.t.toFixed(1)} s`;
    s.delivered = s.info.frames_delivered;
    s.thumbAt = now;
  } catch (e) {
    s.thumbAt = now; // not_found before the first frame: try again later
  } finally {
    s.loading = false;
  }
}

async function addStream(ev) {
  ev.preventDefault();
  showError("add-error", null);
  const body = { url: $("add-url").value.trim(), fps: Number($("add-fps").value) || undefined };
  if ($("add-method").value) body.method = $("add-method").value;
  if ($("add-name").value.trim()) body.name = $("add-name").value.trim();
  try {
    await api("/v1/streams", { method: "POST", json: body });
    $("add-url").value = "";
    refresh();
  } catch (e) { showError("add-error", e); }
}

async function deleteStream(id) {
  try {
    await api(`/v1/streams/${enc(id)}`, { method: "DELETE" });
    if (state.camera && state.camera.id === id) stopCamera(false);
    refresh();
  } catch (e) { showError("add-error", e); }
}

function syncAskOptions() {
  const sel = $("ask-stream");
  const current = sel.value;
  const ids = [...state.streams.keys()];
  if (ids.join() !== [...sel.options].map((o) => o.value).join()) {
    sel.replaceChildren(...ids.map((id) => {
      const o = el("option", null, (state.streams.get(id).info.name || "") + " " + id);
      o.value = id;
      return o;
    }));
  }
  if (ids.includes(current)) sel.value = current;
}

// -- camera over WHIP ---------------------------------------------------------------------------

function iceGathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs); // what was gathered by then is enough on a LAN
  });
}

async function startCamera() {
  showError("add-error", null);
  $("camera").disabled = true;
  $("camera-state").textContent = "asking for the camera…";
  let media = null, pc = null;
  try {
    media = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    $("preview").srcObject = media;
    $("preview").hidden = false;
    pc = new RTCPeerConnection({ iceServers: [] }); // host candidates: the server is reachable directly
    pc.addEventListener("connectionstatechange", () => {
      $("camera-state").textContent = "camera: " + pc.connectionState;
    });
    for (const track of media.getVideoTracks()) pc.addTransceiver(track, { direction: "sendonly" });
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 2000);
    const fps = Number($("add-fps").value) || 1;
    const method = $("add-method").value;
    const q = `?fps=${enc(fps)}&name=camera` + (method ? `&method=${enc(method)}` : "");
    const r = await api("/v1/whip" + q, { method: "POST", headers: { "Content-Type": "application/sdp" },
                                           body: pc.localDescription.sdp });
    const location = r.headers.get("Location");
    const id = r.headers.get("X-Stream-Id");
    await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
    state.camera = { pc, media, location, id };
    $("camera").textContent = "Stop camera";
    $("camera-state").textContent = "camera: publishing as " + id;
    refresh();
  } catch (e) {
    if (pc) pc.close();
    if (media) media.getTracks().forEach((t) => t.stop());
    $("preview").hidden = true;
    $("camera-state").textContent = "";
    showError("add-error", e instanceof ApiError ? e : { code: "camera", message: String(e.message || e) });
  } finally {
    $("camera").disabled = false;
  }
}

async function stopCamera(sendDelete) {
  const cam = state.camera;
  state.camera = null;
  $("camera").textContent = "Use my camera";
  $("camera-state").textContent = "";
  $("preview").hidden = true;
  if (!cam) return;
  if (sendDelete && cam.location) {
    // the WHIP session ends; the stream stays (ended, answerable) until deleted
    try { await api(cam.location, { method: "DELETE" }); } catch (e) { showError("add-error", e); }
  }
  cam.pc.close();
  cam.media.getTracks().forEach((t) => t.stop());
  refresh();
}

// -- questions over the WebSocket ---------------------------------------------------------------

function socketFor(id) {
  const open = state.sockets.get(id);
  if (open && open.readyState <= WebSocket.OPEN) return Promise.resolve(open);
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + `/v1/streams/${enc(id)}/ws`;
  const ws = state.key ? new WebSocket(url, ["bearer." + state.key]) : new WebSocket(url);
  state.sockets.set(id, ws);
  ws.addEventListener("message", (ev) => onMessage(id, JSON.parse(ev.data)));
  ws.addEventListener("close", (ev) => {
    if (state.sockets.get(id) === ws) state.sockets.delete(id);
    if (ev.code !== 1000 && ev.code !== 1005 && state.pending.size) {
      showError("ask-error", { code: "closed", message: `the connection closed (${ev.code} ${ev.reason})` });
    }
  });
  return new Promise((resolve, reject) => {
    ws.addEventListener("open", () => resolve(ws), { once: true });
    ws.addEventListener("error", () => reject(new Error("WebSocket failed")), { once: true });
  });
}

function onMessage(streamId, msg) {
  const p = msg.request_id ? state.pending.get(msg.request_id) : null;
  if (msg.type === "token" && p) {
    p.text += msg.text;
    $("answer").textContent = p.text;
  } else if (msg.type === "answer" && p) {
    state.pending.delete(msg.request_id);
    $("answer").textContent = msg.answer;
    $("answer-meta").textContent =
      `${msg.tokens} token${msg.tokens === 1 ? "" : "s"} · ${msg.finish_reason}` +
      (msg.timings && msg.timings.ttft_s != null ? ` · first token ${msg.timings.ttft_s.toFixed(2)} s` : "");
    showEvidence(streamId, msg.evidence || []);
  } else if (msg.type === "error") {
    if (msg.request_id) state.pending.delete(msg.request_id);
    showError("ask-error", msg.error);
  }
}

async function showEvidence(streamId, ranges) {
  const box = $("evidence");
  for (const img of box.querySelectorAll("img")) URL.revokeObjectURL(img.src);
  box.replaceChildren();
  for (const r of ranges) {
    const fig = el("figure");
    const img = el("img");
    img.alt = `frame near ${r.t_start.toFixed(1)} s`;
    const cap = el("figcaption", null, `${r.t_start.toFixed(1)}–${r.t_end.toFixed(1)} s`);
    fig.append(img, cap);
    box.append(fig);
    try {
      const pic = await fetchPicture(`/v1/streams/${enc(streamId)}/frames/at.jpg?t=${enc(r.t_start)}`);
      img.src = pic.url;
      img.title = `frame at ${pic.t.toFixed(2)} s`;
    } catch (e) {
      cap.textContent += " (no picture kept)";
    }
  }
}

async function ask(ev) {
  ev.preventDefault();
  showError("ask-error", null);
  const id = $("ask-stream").value;
  if (!id) return;
  const rid = "q" + ++state.seq;
  const msg = { type: "question", request_id: rid, question: $("question").value,
                max_tokens: Number($("ask-max").value) || 32 };
  if ($("ask-at").value !== "") msg.at = Number($("ask-at").value);
  $("answer").textContent = "";
  $("answer-meta").textContent = "";
  $("evidence").replaceChildren();
  state.pending.clear();
  state.pending.set(rid, { text: "" });
  try {
    (await socketFor(id)).send(JSON.stringify(msg));
  } catch (e) {
    state.pending.delete(rid);
    showError("ask-error", { code: "connection", message: e.message });
  }
}

// -- wiring -------------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("key").value.trim()); });
$("signout").addEventListener("click", signOut);
$("add-form").addEventListener("submit", addStream);
$("ask-form").addEventListener("submit", ask);
$("camera").addEventListener("click", () => (state.camera ? stopCamera(true) : startCamera()));
window.addEventListener("pagehide", () => { if (state.camera) stopCamera(true); });

const saved = sessionStorage.getItem(KEY_ITEM);
if (saved) signIn(saved);
