// The WebSocket connection and the live state it feeds.
//
// Protocol (see hub.py): JSON text messages (hello, snapshot, vehicles, gone, infractions,
// units, congestion, stats) and binary positions frames (see positions.py for the layout).
// The connection reconnects by itself with a capped backoff; a new snapshot replaces the
// state, so nothing is lost across a reconnect but the positions in between.

const HEADER_BYTES = 24;
export const KIND = { taxi_petit: 0, taxi_grand: 1, police: 2, private: 3 };
export const FLAG_SPEEDING = 1;
export const FLAG_INFRACTION = 2;

export class Vehicles {
  constructor(capacity = 16384) {
    this.n = 0; // highest index + 1
    this.ids = [];
    this.allocate(capacity);
  }

  allocate(capacity) {
    const old = this;
    const grow = (Type, prev) => {
      const a = new Type(capacity);
      if (prev) a.set(prev.subarray(0, Math.min(prev.length, capacity)));
      return a;
    };
    this.capacity = capacity;
    this.lat = grow(Float32Array, old.lat);
    this.lon = grow(Float32Array, old.lon);
    this.x = grow(Float32Array, old.x); // target position, metres east of the map origin
    this.y = grow(Float32Array, old.y);
    this.px = grow(Float32Array, old.px); // position at the previous frame (interpolation)
    this.py = grow(Float32Array, old.py);
    this.kind = grow(Uint8Array, old.kind);
    this.flags = grow(Uint8Array, old.flags);
    this.speed = grow(Uint8Array, old.speed);
    this.alive = grow(Uint8Array, old.alive);
  }

  register(items) {
    for (const [index, id, kind] of items) {
      if (index >= this.capacity) this.allocate(Math.max(this.capacity * 2, index + 1));
      this.ids[index] = id;
      this.kind[index] = kind;
      this.n = Math.max(this.n, index + 1);
    }
  }

  reset() {
    this.alive.fill(0);
    this.n = 0;
    this.ids = [];
  }

  count() {
    let c = 0;
    for (let i = 0; i < this.n; i++) c += this.alive[i];
    return c;
  }
}

// Decode a positions frame into the vehicles; `project(lat, lon) -> [x, y]` in metres.
export function applyFrame(vehicles, buffer, project, alpha) {
  const view = new DataView(buffer);
  const count = view.getUint32(4, true);
  const frameTs = view.getFloat64(8, true);
  let offset = HEADER_BYTES;
  const index = new Uint32Array(buffer, offset, count); offset += 4 * count;
  const lat = new Float32Array(buffer, offset, count); offset += 4 * count;
  const lon = new Float32Array(buffer, offset, count); offset += 4 * count;
  const speed = new Uint8Array(buffer, offset, count); offset += count;
  offset += count; // heading: not drawn (vehicles are dots at this scale)
  const flags = new Uint8Array(buffer, offset, count);
  const v = vehicles;
  // Every vehicle restarts its interpolation from where it is drawn now.
  for (let i = 0; i < v.n; i++) {
    v.px[i] = v.px[i] + (v.x[i] - v.px[i]) * alpha;
    v.py[i] = v.py[i] + (v.y[i] - v.py[i]) * alpha;
  }
  for (let k = 0; k < count; k++) {
    const i = index[k];
    if (i >= v.n) continue; // not announced yet (cannot happen with an ordered socket)
    const [x, y] = project(lat[k], lon[k]);
    const jump = !v.alive[i] || Math.abs(x - v.px[i]) + Math.abs(y - v.py[i]) > 400;
    v.lat[i] = lat[k];
    v.lon[i] = lon[k];
    v.x[i] = x;
    v.y[i] = y;
    if (jump) { v.px[i] = x; v.py[i] = y; }
    v.speed[i] = speed[k];
    v.flags[i] = flags[k];
    v.alive[i] = 1;
  }
  return { count, frameTs };
}

export class Live {
  constructor(view, handlers) {
    this.view = view;
    this.handlers = handlers; // {open, close, hello, snapshot, frame, infractions, units, congestion, stats}
    this.backoff = 500;
    this.clockOffset = 0; // server clock − this clock (ms)
    this.offsetSamples = [];
    this.stopped = false;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws?view=${this.view}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => { this.backoff = 500; this.handlers.open(); };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => {
      this.handlers.close(event.code, event.reason);
      if (!this.stopped) setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    };
  }

  receive(data) {
    if (typeof data !== "string") {
      this.handlers.frame(data);
      return;
    }
    const message = JSON.parse(data);
    if (message.server_ts) this.sampleClock(message.server_ts);
    const handler = this.handlers[message.type];
    if (handler) handler(message);
  }

  // The largest (server − local) sample is the one with the least transit time.
  sampleClock(serverTs) {
    this.offsetSamples.push(serverTs - Date.now());
    if (this.offsetSamples.length > 30) this.offsetSamples.shift();
    this.clockOffset = Math.max(...this.offsetSamples);
  }

  serverNow() {
    return Date.now() + this.clockOffset;
  }
}

export class LatencyMeter {
  constructor(size = 500) {
    this.size = size;
    this.samples = [];
  }

  add(ms) {
    this.samples.push(ms);
    if (this.samples.length > this.size) this.samples.shift();
  }

  percentile(p) {
    if (!this.samples.length) return null;
    const sorted = [...this.samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  }
}
