// The map: roads and congestion on a cached base layer, vehicles, units' routes and
// infractions drawn over it on every animation frame. Plain canvas 2D, no tiles: the
// geometry comes from the city pack (/api/city), so the kiosk works offline.

import { FLAG_INFRACTION, FLAG_SPEEDING, KIND } from "./live.js";

const R = 6371008.8;
const DEG = Math.PI / 180;
const ROAD_STYLE = {
  motorway: { color: "#3b4d70", width: 3.2 },
  arterial: { color: "#2e3d5c", width: 2.2 },
  centre: { color: "#2a3856", width: 1.6 },
  street: { color: "#1f2a42", width: 1.2 },
};
const LEVEL_COLOR = { light: "#e9c46a", moderate: "#f4a261", severe: "#e63946" };
const KIND_COLOR = ["#ff3b30", "#f3e5c0", "#3d8bff", "#7f8aa0"]; // petit, grand, police, private
const CLASS_COLOR = { 1: "#ff4d6d", 2: "#ff9f1c", 3: "#ffd166" };
const UNIT_COLOR = { assigned: "#e9c46a", queued: "#e9c46a", en_route: "#3d8bff", on_scene: "#e63946" };
const MARKER_LIFE_MS = 120000;

export class Projection {
  constructor(lat0, lon0) {
    this.lat0 = lat0;
    this.lon0 = lon0;
    this.kx = R * DEG * Math.cos(lat0 * DEG);
    this.ky = R * DEG;
    this.project = (lat, lon) => [(lon - this.lon0) * this.kx, (lat - this.lat0) * this.ky];
  }
}

export class MapView {
  constructor(canvas, city, vehicles) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.city = city;
    this.vehicles = vehicles;
    this.base = document.createElement("canvas");
    this.baseDirty = true;
    this.congestion = new Map(); // segment id → level
    this.markers = []; // {x, y, cls, court, at}
    this.units = new Map(); // unit id → {status, route: [[x, y]...]}
    this.view = { scale: 1, tx: 0, ty: 0 };
    this.fitted = false;
    this.renderTimes = [];
    const bounds = city.bounds;
    const [lat0, lon0] = bounds ? [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2] : [33.57, -7.6];
    this.projection = new Projection(lat0, lon0);
    this.prepareGeometry();
    this.resize();
    window.addEventListener("resize", () => this.resize());
  }

  prepareGeometry() {
    const { nodes, segments } = this.city;
    const n = nodes.length;
    this.nodeX = new Float32Array(n);
    this.nodeY = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const [x, y] = this.projection.project(nodes[i][0], nodes[i][1]);
      this.nodeX[i] = x;
      this.nodeY[i] = y;
    }
    this.segIndex = new Map(segments.id.map((id, i) => [id, i]));
    this.intersectionNode = new Map((this.city.intersections || []).map((x) => [x.id, x.node]));
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const rect = this.canvas.getBoundingClientRect();
    this.width = Math.max(1, Math.round(rect.width * ratio));
    this.height = Math.max(1, Math.round(rect.height * ratio));
    this.ratio = ratio;
    this.canvas.width = this.width;
    this.canvas.height = this.height;
    this.base.width = this.width;
    this.base.height = this.height;
    if (!this.fitted || !this.userMoved) this.fit();
    this.baseDirty = true;
  }

  // Fit the city's bounds (or the vehicles', without a pack) to the canvas.
  fit() {
    let box = null;
    if (this.nodeX.length) { // the road network, which is what there is to see
      box = [Infinity, Infinity, -Infinity, -Infinity];
      for (let i = 0; i < this.nodeX.length; i++) {
        box = [Math.min(box[0], this.nodeX[i]), Math.min(box[1], this.nodeY[i]), Math.max(box[2], this.nodeX[i]), Math.max(box[3], this.nodeY[i])];
      }
    } else if (this.vehicles.count() > 0) {
      const v = this.vehicles;
      box = [Infinity, Infinity, -Infinity, -Infinity];
      for (let i = 0; i < v.n; i++) {
        if (!v.alive[i]) continue;
        box = [Math.min(box[0], v.x[i]), Math.min(box[1], v.y[i]), Math.max(box[2], v.x[i]), Math.max(box[3], v.y[i])];
      }
    }
    if (!box) return;
    const pad = 0.04;
    const w = (box[2] - box[0]) || 1000;
    const h = (box[3] - box[1]) || 1000;
    const scale = Math.min(this.width / (w * (1 + 2 * pad)), this.height / (h * (1 + 2 * pad)));
    this.view.scale = scale;
    this.view.tx = this.width / 2 - ((box[0] + box[2]) / 2) * scale;
    this.view.ty = this.height / 2 + ((box[1] + box[3]) / 2) * scale;
    this.fitted = true;
    this.baseDirty = true;
  }

  toScreen(x, y) {
    return [x * this.view.scale + this.view.tx, -y * this.view.scale + this.view.ty];
  }

  enableInteraction() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const factor = Math.exp(-e.deltaY * 0.0015);
      const mx = e.offsetX * this.ratio;
      const my = e.offsetY * this.ratio;
      this.view.tx = mx - (mx - this.view.tx) * factor;
      this.view.ty = my - (my - this.view.ty) * factor;
      this.view.scale *= factor;
      this.userMoved = true;
      this.baseDirty = true;
    }, { passive: false });
    c.addEventListener("pointerdown", (e) => { drag = [e.clientX, e.clientY]; c.classList.add("dragging"); c.setPointerCapture(e.pointerId); });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      this.view.tx += (e.clientX - drag[0]) * this.ratio;
      this.view.ty += (e.clientY - drag[1]) * this.ratio;
      drag = [e.clientX, e.clientY];
      this.userMoved = true;
      this.baseDirty = true;
    });
    c.addEventListener("pointerup", () => { drag = null; c.classList.remove("dragging"); });
    c.addEventListener("dblclick", () => { this.userMoved = false; this.fit(); });
  }

  setCongestion(items) {
    for (const w of items) {
      if (w.scope === "segment" || w.scope === "intersection") this.congestion.set(`${w.scope}:${w.key}`, w.level);
    }
    this.baseDirty = true;
  }

  // `ageMs`: how long ago it happened; markers show the last two minutes, by event time.
  addInfraction(item, ageMs) {
    if (ageMs > MARKER_LIFE_MS) return;
    const [x, y] = this.projection.project(item.lat, item.lon);
    const at = performance.now() - Math.max(0, ageMs);
    this.markers.push({ x, y, cls: item.decision?.class ?? 3, court: !!item.decision?.court, at });
    if (this.markers.length > 300) this.markers.shift();
  }

  setUnit(unit) {
    const route = (unit.route || []).map(([lat, lon]) => this.projection.project(lat, lon));
    this.units.set(unit.unit_id, { status: unit.status, route });
  }

  // -- drawing ------------------------------------------------------------------------------

  drawBase() {
    const ctx = this.base.getContext("2d");
    ctx.clearRect(0, 0, this.width, this.height);
    const { segments, classes = [] } = this.city;
    const s = this.view.scale;
    const widthScale = Math.max(0.6, Math.min(2.5, s * 40)) * this.ratio;
    ctx.lineCap = "round";
    this.drawDistricts(ctx);
    // One path per road class: a few strokes for the whole network.
    for (const [ci, name] of classes.entries()) {
      const style = ROAD_STYLE[name] || ROAD_STYLE.street;
      ctx.beginPath();
      for (let i = 0; i < segments.a.length; i++) {
        if (segments.class[i] !== ci) continue;
        this.segmentPath(ctx, segments.a[i], segments.b[i]);
      }
      ctx.strokeStyle = style.color;
      ctx.lineWidth = style.width * widthScale;
      ctx.stroke();
    }
    for (const level of ["light", "moderate", "severe"]) {
      ctx.beginPath();
      let any = false;
      for (const [key, l] of this.congestion) {
        if (l !== level) continue;
        const [scope, id] = [key.slice(0, key.indexOf(":")), key.slice(key.indexOf(":") + 1)];
        if (scope === "segment") {
          const i = this.segIndex.get(id);
          if (i === undefined) continue;
          this.segmentPath(ctx, segments.a[i], segments.b[i]);
          any = true;
        } else {
          const node = this.intersectionNode.get(id);
          if (node === undefined) continue;
          const [x, y] = this.toScreen(this.nodeX[node], this.nodeY[node]);
          ctx.moveTo(x + 6 * this.ratio, y);
          ctx.arc(x, y, 6 * this.ratio, 0, 2 * Math.PI);
          any = true;
        }
      }
      if (!any) continue;
      ctx.strokeStyle = LEVEL_COLOR[level];
      ctx.globalAlpha = 0.9;
      ctx.lineWidth = (level === "severe" ? 4 : 3) * widthScale;
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    this.baseDirty = false;
  }

  // Arrondissements: faint outlines and names under the roads, for orientation.
  drawDistricts(ctx) {
    const districts = this.city.districts || [];
    if (!districts.length) return;
    ctx.save();
    ctx.setLineDash([4 * this.ratio, 6 * this.ratio]);
    ctx.lineWidth = 1 * this.ratio;
    ctx.strokeStyle = "rgba(120, 150, 200, 0.22)";
    ctx.fillStyle = "rgba(150, 175, 215, 0.28)";
    ctx.font = `600 ${12 * this.ratio}px DejaVu Sans, sans-serif`;
    ctx.textAlign = "center";
    for (const d of districts) {
      ctx.beginPath();
      let cx = 0;
      let cy = 0;
      d.polygon.forEach(([lat, lon], k) => {
        const [x, y] = this.projection.project(lat, lon);
        const [sx, sy] = this.toScreen(x, y);
        cx += sx;
        cy += sy;
        if (k === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
      });
      ctx.closePath();
      ctx.stroke();
      ctx.fillText(d.name.toUpperCase(), cx / d.polygon.length, cy / d.polygon.length);
    }
    ctx.restore();
  }

  segmentPath(ctx, a, b) {
    const [x0, y0] = this.toScreen(this.nodeX[a], this.nodeY[a]);
    const [x1, y1] = this.toScreen(this.nodeX[b], this.nodeY[b]);
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
  }

  draw(alpha, now) {
    const started = performance.now();
    if (!this.fitted) this.fit();
    if (this.baseDirty) this.drawBase();
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.width, this.height);
    ctx.drawImage(this.base, 0, 0);
    this.drawVehicles(ctx, alpha);
    this.drawRoutes(ctx);
    this.drawMarkers(ctx, now);
    const took = performance.now() - started;
    this.renderTimes.push(took);
    if (this.renderTimes.length > 300) this.renderTimes.shift();
    return took;
  }

  drawVehicles(ctx, alpha) {
    const v = this.vehicles;
    const { scale, tx, ty } = this.view;
    const size = Math.max(3, Math.min(7, scale * 30)) * this.ratio; // readable from afar
    const half = size / 2;
    // One pass per colour: the fill style changes four times per frame, not 13,000 times.
    for (let kind = 0; kind < KIND_COLOR.length; kind++) {
      ctx.fillStyle = KIND_COLOR[kind];
      const s = kind === KIND.police ? size * 1.5 : size;
      const h = s / 2;
      for (let i = 0; i < v.n; i++) {
        if (!v.alive[i] || v.kind[i] !== kind) continue;
        const x = (v.px[i] + (v.x[i] - v.px[i]) * alpha) * scale + tx;
        const y = -(v.py[i] + (v.y[i] - v.py[i]) * alpha) * scale + ty;
        ctx.fillRect(x - h, y - h, s, s);
      }
    }
    // Speeders and vehicles with a fresh infraction: a ring that reads from afar.
    ctx.lineWidth = 2 * this.ratio;
    for (const [flag, color] of [[FLAG_SPEEDING, "#ffd60a"], [FLAG_INFRACTION, "#ff4d6d"]]) {
      ctx.beginPath();
      for (let i = 0; i < v.n; i++) {
        if (!v.alive[i] || !(v.flags[i] & flag)) continue;
        const x = (v.px[i] + (v.x[i] - v.px[i]) * alpha) * scale + tx;
        const y = -(v.py[i] + (v.y[i] - v.py[i]) * alpha) * scale + ty;
        ctx.moveTo(x + half + 4 * this.ratio, y);
        ctx.arc(x, y, half + 4 * this.ratio, 0, 2 * Math.PI);
      }
      ctx.strokeStyle = color;
      ctx.stroke();
    }
  }

  drawRoutes(ctx) {
    // A police unit's route: a dark casing under a dashed line, so it reads over traffic.
    for (const unit of this.units.values()) {
      if (unit.route.length < 2 || !UNIT_COLOR[unit.status]) continue;
      ctx.beginPath();
      unit.route.forEach(([x, y], k) => {
        const [sx, sy] = this.toScreen(x, y);
        if (k === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
      });
      ctx.setLineDash([]);
      ctx.lineWidth = 7 * this.ratio;
      ctx.strokeStyle = "rgba(7, 11, 20, 0.85)";
      ctx.stroke();
      ctx.setLineDash([10 * this.ratio, 6 * this.ratio]);
      ctx.lineWidth = 3.5 * this.ratio;
      ctx.strokeStyle = UNIT_COLOR[unit.status];
      ctx.stroke();
      const [ex, ey] = this.toScreen(...unit.route[unit.route.length - 1]);
      const [bx, by] = this.toScreen(...unit.route[0]);
      ctx.setLineDash([]);
      ctx.fillStyle = UNIT_COLOR[unit.status];
      ctx.beginPath();
      ctx.arc(bx, by, 6 * this.ratio, 0, 2 * Math.PI);
      ctx.fill();
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 1.5 * this.ratio;
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(ex, ey, 9 * this.ratio, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }

  drawMarkers(ctx, now) {
    this.markers = this.markers.filter((m) => now - m.at < MARKER_LIFE_MS);
    for (const m of this.markers) {
      const age = (now - m.at) / 1000;
      const [x, y] = this.toScreen(m.x, m.y);
      const r = (5 + 3 * Math.sin(age * 4) * Math.exp(-age / 20)) * this.ratio;
      ctx.beginPath();
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fillStyle = CLASS_COLOR[m.cls] || CLASS_COLOR[3];
      ctx.globalAlpha = Math.max(0.35, 1 - age / (MARKER_LIFE_MS / 1000));
      ctx.fill();
      if (m.court) {
        ctx.lineWidth = 2.5 * this.ratio;
        ctx.strokeStyle = "#b388ff";
        ctx.stroke();
      }
      if (age < 6) { // a ripple on arrival
        ctx.beginPath();
        ctx.arc(x, y, r + age * 10 * this.ratio, 0, 2 * Math.PI);
        ctx.strokeStyle = CLASS_COLOR[m.cls] || CLASS_COLOR[3];
        ctx.lineWidth = 2 * this.ratio;
        ctx.globalAlpha = 1 - age / 6;
        ctx.stroke();
      }
      ctx.globalAlpha = 1;
    }
  }

  screenPosition(lat, lon) {
    const [x, y] = this.projection.project(lat, lon);
    const [sx, sy] = this.toScreen(x, y);
    return [sx / this.ratio, sy / this.ratio];
  }
}
