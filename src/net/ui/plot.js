// plot.js - a small hand-written time series plot on a <canvas>, for the
// dashboard's rate plots (app.js). No library: a line over the last N
// samples, a zero baseline, the maximum as a label; null samples are gaps.
'use strict';

// Draws values (oldest first, null for "no data") over the canvas' width,
// one slot per sample of a window of `slots` samples, newest on the right.
function drawPlot(canvas, values, slots, unit) {
  const ratio = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || canvas.width;
  const cssH = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(cssW * ratio)) canvas.width = Math.round(cssW * ratio);
  if (canvas.height !== Math.round(cssH * ratio)) canvas.height = Math.round(cssH * ratio);
  const g = canvas.getContext('2d');
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, cssW, cssH);

  const padL = 4, padR = 4, padT = 16, padB = 4;
  const w = cssW - padL - padR, h = cssH - padT - padB;
  let max = 0;
  for (const v of values) if (v != null && v > max) max = v;
  // A round ceiling: 1, 2 or 5 times a power of ten.
  let top = 1;
  if (max > 0) {
    const p = Math.pow(10, Math.floor(Math.log10(max)));
    top = [1, 2, 5, 10].map((m) => m * p).find((t) => t >= max);
  }

  g.strokeStyle = '#d0d4da';
  g.lineWidth = 1;
  g.beginPath();
  for (const f of [0, 0.5, 1]) {
    const y = padT + h - f * h + 0.5;
    g.moveTo(padL, y);
    g.lineTo(padL + w, y);
  }
  g.stroke();
  g.fillStyle = '#5f6b7a';
  g.font = '11px system-ui, sans-serif';
  g.textBaseline = 'top';
  g.fillText(`${fmtNum(top)} ${unit}`, padL, 1);

  // How many samples hold data (tests wait on it).
  canvas.setAttribute('data-points', String(values.filter((v) => v != null).length));

  const n = slots > 1 ? slots : 2;
  const x0 = padL + w - ((values.length - 1) / (n - 1)) * w;
  g.strokeStyle = '#1f6feb';
  g.lineWidth = 1.5;
  g.beginPath();
  let pen = false;
  values.forEach((v, i) => {
    if (v == null) { pen = false; return; }
    const x = x0 + (i / (n - 1)) * w;
    const y = padT + h - (Math.min(v, top) / top) * h;
    if (pen) g.lineTo(x, y); else g.moveTo(x, y);
    pen = true;
  });
  g.stroke();
}

function fmtNum(v) {
  if (v == null || Number.isNaN(v)) return '-';
  if (v >= 1e9) return `${(v / 1e9).toFixed(1)}G`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2).replace(/\.?0+$/, '') || '0';
}

window.drawPlot = drawPlot;
window.fmtNum = fmtNum;
