// The last hour: infractions per minute as bars, congested places as a line. Plain canvas.

export function drawPlot(canvas, history, labels) {
  const ratio = window.devicePixelRatio || 1;
  const rect = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(rect.width * ratio));
  canvas.height = Math.max(1, Math.round(rect.height * ratio));
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (!history) return;
  const pad = { left: 30 * ratio, right: 30 * ratio, top: 8 * ratio, bottom: 16 * ratio };
  const pw = w - pad.left - pad.right;
  const ph = h - pad.top - pad.bottom;
  const inf = history.infractions;
  const con = history.congested;
  const n = inf.length;
  const maxInf = Math.max(4, ...inf);
  const maxCon = Math.max(4, ...con);
  ctx.font = `${10 * ratio}px DejaVu Sans, sans-serif`;
  ctx.fillStyle = "#56627a";
  ctx.strokeStyle = "#1c2740";
  ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) { // grid
    const y = pad.top + (ph * k) / 4;
    ctx.beginPath(); ctx.moveTo(pad.left, y); ctx.lineTo(w - pad.right, y); ctx.stroke();
  }
  ctx.textAlign = "right";
  ctx.fillText(String(maxInf), pad.left - 4 * ratio, pad.top + 8 * ratio);
  ctx.fillText("0", pad.left - 4 * ratio, pad.top + ph);
  ctx.textAlign = "left";
  ctx.fillStyle = "#f4a261";
  ctx.fillText(String(maxCon), w - pad.right + 4 * ratio, pad.top + 8 * ratio);
  ctx.fillStyle = "#56627a";
  ctx.textAlign = "center";
  for (const minutes of [60, 45, 30, 15, 0]) {
    const x = pad.left + pw * (1 - minutes / n);
    ctx.fillText(minutes ? `−${minutes} min` : labels.now, x, h - 3 * ratio);
  }
  const bw = pw / n;
  ctx.fillStyle = "#ff4d6d";
  for (let i = 0; i < n; i++) {
    if (!inf[i]) continue;
    const bh = (inf[i] / maxInf) * ph;
    ctx.fillRect(pad.left + i * bw + 0.5, pad.top + ph - bh, Math.max(1, bw - 1), bh);
  }
  ctx.beginPath();
  for (let i = 0; i < n; i++) {
    const x = pad.left + (i + 0.5) * bw;
    const y = pad.top + ph - (con[i] / maxCon) * ph;
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  }
  ctx.strokeStyle = "#f4a261";
  ctx.lineWidth = 2 * ratio;
  ctx.stroke();
}
