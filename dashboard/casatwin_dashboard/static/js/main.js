// Wires the page: city geometry, the live connection, the map, the panels, login.

import { currentLanguage, formatTime, onLanguageChange, setLanguage, t } from "./i18n.js";
import { applyFrame, LatencyMeter, Live, Vehicles } from "./live.js";
import { MapView } from "./map.js";
import { decisionText, el, Feed, renderCongestion, renderDetail, renderKpis, renderUnits, what } from "./panels.js";
import { drawPlot } from "./plot.js";

const body = document.body;
const view = body.dataset.view === "kiosk" ? "kiosk" : "live";
const state = {
  vehicles: new Vehicles(),
  units: new Map(),
  congestion: new Map(),
  stats: null,
  latency: new LatencyMeter(),
  pendingLatency: [], // infractions received, waiting for the frame that paints them
  connectedAt: 0,
  lastFrameAt: 0,
  frameInterval: 500,
  frames: 0,
  frameBytes: 0,
  lastFrameTs: 0,
  connected: false,
  closeReason: "",
  operator: null,
};

const initialLanguage = view === "kiosk"
  ? body.dataset.language || "fr"
  : localStorage.getItem("casatwin.language") || body.dataset.language || "fr";
setLanguage(initialLanguage);
for (const button of document.querySelectorAll("[data-lang]")) {
  button.addEventListener("click", () => {
    setLanguage(button.dataset.lang);
    localStorage.setItem("casatwin.language", button.dataset.lang);
  });
}

function setConnection(up, text) {
  const dot = document.getElementById("conn-dot");
  dot.className = `dot ${up ? "up" : "down"}`;
  const label = document.getElementById("conn-text");
  label.dataset.i18n = text;
  label.textContent = t(text);
}

setInterval(() => {
  document.getElementById("clock").textContent = formatTime(Date.now());
}, 1000);

async function loadCity() {
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await fetch("/api/city");
      if (response.ok) return await response.json();
    } catch (error) {
      // the server is restarting: try again
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** attempt, 10000)));
  }
}

const city = await loadCity();
document.getElementById("city-title").textContent = city.title || "";
document.getElementById("attribution").textContent = city.attribution || "";
if (city.problem) {
  const box = document.getElementById("map-problem");
  box.hidden = false;
  box.textContent = `${t("no_city")} ${city.problem}`;
}
const map = new MapView(document.getElementById("map"), city, state.vehicles);
if (view === "live") map.enableInteraction();

function placeName(w) {
  if (w.scope === "segment") {
    const i = map.segIndex.get(w.key);
    if (i !== undefined) return city.roads[city.segments.road[i]] || w.key;
  }
  if (w.scope === "intersection") {
    const x = (city.intersections || []).find((it) => it.id === w.key);
    if (x) return x.name;
  }
  return w.key;
}

const feed = new Feed(document.getElementById("feed"), (item) => showDetail(item));
const unitsList = document.getElementById("units");
const congestionList = document.getElementById("congestion");
const plot = document.getElementById("plot");

function refreshPanels() {
  renderUnits(unitsList, state.units);
  renderCongestion(congestionList, state.congestion, placeName);
  if (state.stats) {
    renderKpis(state.stats, state.latency.percentile(95));
    drawPlot(plot, state.stats.history, { now: currentLanguage() === "fr" ? "maintenant" : "now" });
  }
}
onLanguageChange(() => { feed.render(); refreshPanels(); });

function setUnits(units) {
  for (const unit of units) {
    state.units.set(unit.unit_id, unit);
    map.setUnit(unit);
  }
}

function setCongestion(items) {
  for (const w of items) state.congestion.set(`${w.scope}:${w.key}`, w);
  map.setCongestion(items);
}

function callout(item) {
  if (!map.city) return;
  const [x, y] = map.screenPosition(item.lat, item.lon);
  const d = item.decision || {};
  const box = el(
    "div",
    { class: `callout c${d.class} ${d.court ? "court" : ""}` },
    el("div", { class: "title" }, what(item)),
    el("div", {}, decisionText(d)),
    el("div", { class: "meta" }, `${item.vehicle?.plate || item.vehicle?.vehicle_id || ""} · ${formatTime(item.event_ts)}`),
  );
  box.style.left = `${x}px`;
  box.style.top = `${y}px`;
  const layer = document.getElementById("callouts");
  layer.append(box);
  while (layer.children.length > 3) layer.firstChild.remove();
  setTimeout(() => { box.style.opacity = "0"; }, 7000);
  setTimeout(() => box.remove(), 8000);
}

const live = new Live(view, {
  open() {
    state.connected = true;
    state.connectedAt = Date.now();
    setConnection(true, "connected");
  },
  close(code, reason) {
    state.connected = false;
    state.closeReason = reason || `code ${code}`;
    setConnection(false, "reconnecting");
  },
  hello(message) {
    state.frameInterval = 1000 / message.position_hz;
  },
  snapshot(message) {
    state.vehicles.reset();
    state.vehicles.register(message.vehicles);
    feed.set(message.infractions);
    for (const item of message.infractions) map.addInfraction(item, live.serverNow() - item.event_ts);
    state.units.clear();
    setUnits(message.units);
    state.congestion.clear();
    map.congestion.clear();
    setCongestion(message.congestion);
    state.stats = message.stats;
    refreshPanels();
  },
  vehicles(message) {
    state.vehicles.register(message.items);
  },
  gone(message) {
    for (const i of message.items) state.vehicles.alive[i] = 0;
  },
  frame(buffer) {
    const now = performance.now();
    const alpha = state.lastFrameAt ? Math.min(1, (now - state.lastFrameAt) / state.frameInterval) : 1;
    const { frameTs } = applyFrame(state.vehicles, buffer, map.projection.project, alpha);
    state.lastFrameAt = now;
    state.lastFrameTs = frameTs;
    state.frames += 1;
    state.frameBytes = buffer.byteLength;
    if (!map.nodeX.length && !map.userMoved && state.frames < 5) map.fit();
  },
  infractions(message) {
    feed.add(message.items);
    for (const item of message.items) {
      map.addInfraction(item, live.serverNow() - item.event_ts);
      if (item.event_ts >= state.connectedAt - 10000) state.pendingLatency.push(item.event_ts);
    }
    callout(message.items[message.items.length - 1]);
  },
  units(message) {
    setUnits(message.items);
    renderUnits(unitsList, state.units);
    renderKpis(state.stats || {}, state.latency.percentile(95));
  },
  congestion(message) {
    setCongestion(message.items);
    renderCongestion(congestionList, state.congestion, placeName);
  },
  stats(message) {
    state.stats = message;
    refreshPanels();
  },
});
live.connect();

// The render loop: interpolate positions between frames, at most 30 paints a second (the
// kiosk is an old desktop; vehicles move a few pixels a second).
const PAINT_EVERY_MS = 1000 / 30;
let lastPaint = 0;
function frameLoop() {
  requestAnimationFrame(frameLoop);
  const now = performance.now();
  if (now - lastPaint < PAINT_EVERY_MS - 2 && !map.baseDirty) return;
  lastPaint = now;
  const alpha = state.lastFrameAt ? Math.min(1, (now - state.lastFrameAt) / state.frameInterval) : 1;
  map.draw(alpha, now);
  if (state.pendingLatency.length) {
    const painted = live.serverNow();
    for (const eventTs of state.pendingLatency) state.latency.add(painted - eventTs);
    state.pendingLatency = [];
  }
}
requestAnimationFrame(frameLoop);

// -- the operator page: detail drawer and login ------------------------------------------------

const detail = document.getElementById("detail");
document.getElementById("detail-close").addEventListener("click", () => { detail.hidden = true; });

async function showDetail(item) {
  if (view === "kiosk") return;
  let full = item;
  let timeline = [];
  try {
    const [a, b] = await Promise.all([
      fetch(`/api/infractions/${encodeURIComponent(item.infraction_id)}`),
      fetch(`/api/incidents/${encodeURIComponent(item.infraction_id)}/timeline`),
    ]);
    if (a.ok) full = await a.json();
    else if (a.status === 404) full = { ...item, identity: "unavailable" };
    if (b.ok) timeline = (await b.json()).events;
  } catch (error) {
    // the read model may be behind the live feed: show what the feed had
  }
  renderDetail(document.getElementById("detail-body"), full, timeline);
  detail.hidden = false;
}

const loginDialog = document.getElementById("login-dialog");
const loginButton = document.getElementById("login-button");

function setOperator(name) {
  state.operator = name;
  document.getElementById("operator-name").textContent = name || "";
  loginButton.dataset.i18n = name ? "logout" : "login";
  loginButton.textContent = t(loginButton.dataset.i18n);
}

if (view === "live") {
  fetch("/api/me").then((r) => r.json()).then((me) => setOperator(me.operator)).catch(() => {});
  loginButton.addEventListener("click", async () => {
    if (state.operator) {
      await fetch("/api/logout", { method: "POST" });
      setOperator(null);
      return;
    }
    document.getElementById("login-error").textContent = "";
    loginDialog.showModal();
  });
  document.getElementById("login-cancel").addEventListener("click", () => loginDialog.close());
  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const response = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: form.get("name"), password: form.get("password") }),
    });
    if (response.ok) {
      setOperator((await response.json()).operator);
      loginDialog.close();
      event.target.reset();
    } else {
      document.getElementById("login-error").textContent = t(response.status === 429 ? "too_many" : "wrong_login");
    }
  });
}

// For tests and benchmarks (read through the DevTools protocol).
window.__casatwin = {
  state,
  map,
  live,
  vehiclesOnMap: () => state.vehicles.count(),
  renderStats: () => {
    const times = [...map.renderTimes].sort((a, b) => a - b);
    const p = (q) => (times.length ? times[Math.min(times.length - 1, Math.floor(q * times.length))] : null);
    return { frames: state.frames, samples: times.length, p50: p(0.5), p95: p(0.95), vehicles: state.vehicles.count() };
  },
};
