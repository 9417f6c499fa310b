// The side panels: KPIs, the infraction feed, units, congestion, and the detail drawer.

import { formatTime, t } from "./i18n.js";

const FEED_MAX = 60;

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const number = (value) => (value === null || value === undefined ? "–" : Math.round(value).toLocaleString("fr-FR"));

export function renderKpis(stats, latencyP95) {
  document.getElementById("kpi-vehicles").textContent = number(stats.vehicles);
  document.getElementById("kpi-rate").textContent = number(stats.messages_per_s);
  document.getElementById("kpi-infractions").textContent = number(stats.infractions_per_min);
  document.getElementById("kpi-units").textContent = `${number(stats.units_available)}/${number(stats.units_total)}`;
  document.getElementById("kpi-latency").textContent = latencyP95 === null ? "–" : number(latencyP95);
}

export function what(item) {
  const label = t(item.type);
  if (item.type === "speeding") return `${label} ${Math.round(item.measured)}/${Math.round(item.limit)} km/h`;
  return label;
}

export function decisionText(decision) {
  if (!decision) return "";
  const parts = [`${t("class")} ${decision.class}`];
  if (decision.court) {
    parts.push(t("court"));
  } else {
    const reduced = decision.reduced_24h ? ` (${decision.reduced_24h} ${t("reduced_24h")})` : "";
    parts.push(`${decision.fine_mad} ${t("mad")}${reduced}`);
  }
  if (decision.points) parts.push(`−${decision.points} ${t("points")}`);
  return parts.join(" · ");
}

export class Feed {
  constructor(list, onSelect) {
    this.list = list;
    this.onSelect = onSelect;
    this.items = [];
  }

  set(items) {
    this.items = items.slice(-FEED_MAX).reverse();
    this.render();
  }

  add(items) {
    for (const item of items) this.items.unshift(item);
    this.items.length = Math.min(this.items.length, FEED_MAX);
    for (const item of items) this.list.prepend(this.row(item));
    while (this.list.children.length > FEED_MAX) this.list.lastChild.remove();
    this.list.querySelector(".empty")?.remove();
  }

  render() {
    this.list.replaceChildren(...this.items.map((item) => this.row(item)));
    if (!this.items.length) this.list.append(el("li", { class: "empty" }, t("no_infractions")));
  }

  row(item) {
    const d = item.decision || {};
    return el(
      "li",
      { onclick: () => this.onSelect(item) },
      el("span", { class: `badge c${d.class}` }, `C${d.class}`),
      el("span", { class: "what" }, what(item), " ", el("span", { class: "muted" }, item.vehicle?.plate || item.vehicle?.vehicle_id || "")),
      el("span", { class: "when" }, formatTime(item.event_ts)),
      el("span", { class: "decision" }, d.court ? el("span", { class: "court-tag" }, t("court")) : el("span", { class: "pay-tag" }, t("payable")), " · ", decisionText(d)),
    );
  }
}

export function renderUnits(list, units) {
  const order = { on_scene: 0, en_route: 1, assigned: 2, queued: 3, available: 4 };
  const sorted = [...units.values()].sort((a, b) => (order[a.status] ?? 5) - (order[b.status] ?? 5) || a.unit_id.localeCompare(b.unit_id));
  if (!sorted.length) {
    list.replaceChildren(el("li", { class: "empty" }, t("no_units")));
    return;
  }
  list.replaceChildren(
    ...sorted.map((u) =>
      el(
        "li",
        {},
        el("span", {}, u.unit_id, u.eta_s && u.status !== "on_scene" ? el("span", { class: "muted" }, ` ${t("eta")} ${Math.round(u.eta_s / 60)} min`) : null),
        el("span", { class: `chip ${u.status}` }, t(u.status)),
      ),
    ),
  );
}

export function renderCongestion(list, congestion, nameOf) {
  const rank = { severe: 0, moderate: 1, light: 2 };
  const items = [...congestion.values()]
    .filter((w) => w.level in rank)
    .sort((a, b) => rank[a.level] - rank[b.level] || a.avg_speed_kmh - b.avg_speed_kmh)
    .slice(0, 14);
  if (!items.length) {
    list.replaceChildren(el("li", { class: "empty" }, t("no_congestion")));
    return;
  }
  list.replaceChildren(
    ...items.map((w) =>
      el(
        "li",
        {},
        el("span", {}, nameOf(w), el("span", { class: "muted" }, ` ${Math.round(w.avg_speed_kmh)} km/h`), w.anomaly ? el("span", { class: "court-tag" }, ` ${t("anomaly")}`) : null),
        el("span", { class: `chip ${w.level}` }, t(w.level)),
      ),
    ),
  );
}

function rows(pairs) {
  const dl = el("dl");
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === "") continue;
    dl.append(el("dt", {}, k), el("dd", {}, v));
  }
  return dl;
}

function describeRecord(record) {
  return Object.entries(record || {})
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" · ");
}

export function renderDetail(body, item, timeline) {
  const d = item.decision || {};
  const shown = item.identity === "shown";
  body.replaceChildren(
    el("h2", {}, what(item)),
    rows([
      [t("when"), `${new Date(item.event_ts).toLocaleDateString()} ${formatTime(item.event_ts)}`],
      [t("where"), `${item.lat.toFixed(5)}, ${item.lon.toFixed(5)} ${item.segment_id || item.intersection_id || ""}`],
      [t("measured"), item.type === "speeding" ? `${item.measured} km/h` : item.measured],
      [t("limit"), item.type === "speeding" ? `${item.limit} km/h` : item.limit],
      [t("decision"), decisionText(d)],
      [t("legal_basis"), d.legal_basis],
      [t("vehicle"), describeRecord(item.vehicle)],
    ]),
    el(
      "div",
      { class: `identity ${shown ? "shown" : ""}` },
      el("strong", {}, t("driver")),
      el("div", {}, describeRecord(item.driver)),
      el("div", { class: shown ? "audit" : "muted" }, t(`identity_${item.identity || "masked"}`)),
    ),
    el("h3", {}, t("timeline")),
    timeline && timeline.length
      ? el("ol", {}, ...timeline.map((e) => el("li", {}, `${formatTime(e.ts)} — ${e.unit_id} ${t(e.status)}${e.eta_s ? ` (${t("eta")} ${Math.round(e.eta_s)} s)` : ""}`)))
      : el("p", { class: "muted" }, t("no_dispatch")),
  );
}
