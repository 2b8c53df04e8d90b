// The batching trade-off curve of bench/serving's --rates sweep: for each mode, one point per
// arrival rate at (throughput, latency), drawn as hand-written SVG — two panels, TTFT p50 and
// inter-token latency p99 against output throughput, one polyline per mode, each point labelled
// with its rate. No plotting library: axes, ticks and labels are plain SVG text.

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** About five round tick values from at most lo to at least hi (lo, hi >= 0): the last tick is the axis end. */
function ticks(lo, hi) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out = [];
  for (let v = Math.floor(lo / step) * step; ; v += step) {
    out.push(Number(v.toPrecision(12)));
    if (v >= hi - step * 1e-9) break;
  }
  return out;
}

function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1).replace(/\.0$/, "") : String(Number(v.toPrecision(3)));
}

function panel(points, modes, { x0, y0, w, h, xLabel, yLabel, yOf }) {
  const xs = points.map((p) => p.throughput).filter(Number.isFinite);
  const ys = points.map(yOf).filter(Number.isFinite);
  if (!xs.length || !ys.length) return "";
  const xt = ticks(0, Math.max(...xs) * 1.05);
  const yt = ticks(0, Math.max(...ys) * 1.05);
  const [xmax, ymax] = [xt[xt.length - 1], yt[yt.length - 1]];
  const X = (v) => x0 + (v / xmax) * w;
  const Y = (v) => y0 + h - (v / ymax) * h;
  const out = [];
  out.push(`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="none" stroke="#444"/>`);
  for (const t of xt) {
    out.push(`<line x1="${X(t)}" y1="${y0 + h}" x2="${X(t)}" y2="${y0 + h + 5}" stroke="#444"/>`);
    out.push(`<line x1="${X(t)}" y1="${y0}" x2="${X(t)}" y2="${y0 + h}" stroke="#eee"/>`);
    out.push(`<text x="${X(t)}" y="${y0 + h + 18}" text-anchor="middle">${fmt(t)}</text>`);
  }
  for (const t of yt) {
    out.push(`<line x1="${x0 - 5}" y1="${Y(t)}" x2="${x0}" y2="${Y(t)}" stroke="#444"/>`);
    out.push(`<line x1="${x0}" y1="${Y(t)}" x2="${x0 + w}" y2="${Y(t)}" stroke="#eee"/>`);
    out.push(`<text x="${x0 - 8}" y="${Y(t) + 4}" text-anchor="end">${fmt(t)}</text>`);
  }
  out.push(`<text x="${x0 + w / 2}" y="${y0 + h + 38}" text-anchor="middle">${esc(xLabel)}</text>`);
  out.push(
    `<text x="${x0 - 48}" y="${y0 + h / 2}" text-anchor="middle" transform="rotate(-90 ${x0 - 48} ${y0 + h / 2})">${esc(yLabel)}</text>`,
  );
  modes.forEach((mode, i) => {
    const pts = points
      .filter((p) => p.mode === mode && Number.isFinite(p.throughput) && Number.isFinite(yOf(p)))
      .sort((a, b) => a.rate - b.rate);
    if (!pts.length) return;
    const c = COLORS[i % COLORS.length];
    const line = pts.map((p) => `${X(p.throughput).toFixed(1)},${Y(yOf(p)).toFixed(1)}`).join(" ");
    out.push(`<polyline points="${line}" fill="none" stroke="${c}" stroke-width="2"/>`);
    for (const p of pts) {
      const [px, py] = [X(p.throughput).toFixed(1), Y(yOf(p)).toFixed(1)];
      out.push(`<circle cx="${px}" cy="${py}" r="3.5" fill="${c}"/>`);
      out.push(
        `<text x="${Number(px) + 5}" y="${Number(py) - 5}" fill="${c}" font-size="10">${esc(p.rateLabel)}</text>`,
      );
    }
  });
  return out.join("\n");
}

/**
 * The SVG text of the curve. points: { mode, label, rate, rateLabel, throughput (out tok/s),
 * ttftP50 (ms), itlP99 (ms) }; title and subtitle lines go on top (machine, load average).
 */
export function curveSvg(points, { title, subtitle = [] }) {
  const modes = [...new Set(points.map((p) => p.mode))];
  const labels = Object.fromEntries(points.map((p) => [p.mode, p.label]));
  const W = 1000;
  const top = 56 + 16 * subtitle.length;
  const ph = 320;
  const H = top + ph + 90;
  const body = [
    panel(points, modes, {
      x0: 80,
      y0: top,
      w: 380,
      h: ph,
      xLabel: "throughput (output tok/s)",
      yLabel: "TTFT p50 (s)",
      yOf: (p) => p.ttftP50 / 1000,
    }),
    panel(points, modes, {
      x0: 580,
      y0: top,
      w: 380,
      h: ph,
      xLabel: "throughput (output tok/s)",
      yLabel: "inter-token latency p99 (ms)",
      yOf: (p) => p.itlP99,
    }),
  ];
  const legend = modes.map(
    (m, i) =>
      `<rect x="${80 + i * 200}" y="${H - 24}" width="14" height="4" fill="${COLORS[i % COLORS.length]}"/>` +
      `<text x="${100 + i * 200}" y="${H - 18}">${esc(labels[m] ?? m)}</text>`,
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    ...subtitle.map(
      (s, i) => `<text x="${W / 2}" y="${44 + 16 * i}" text-anchor="middle" fill="#555">${esc(s)}</text>`,
    ),
    ...body,
    ...legend,
    `<text x="${W - 10}" y="${H - 6}" text-anchor="end" fill="#777" font-size="10">point labels: arrival rate (requests/s)</text>`,
    "</svg>",
    "",
  ].join("\n");
}
