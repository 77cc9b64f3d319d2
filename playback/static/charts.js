// Line charts in plain SVG for the fleet page: no library. drawChart(card, chart, range) draws one chart
// ({name, title, unit: 'bit/s' | 'ratio', definition, series: [{name, points: [[t, v|null]], last}]}) into
// a card element: axes with a few round ticks, one path per series (a null value breaks the line), and a
// legend with each series' latest value. A name keeps the colour it first got, so a refresh never swaps them.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const PALETTE = ['#5ab0ff', '#ff9f43', '#7bd389', '#f368e0', '#feca57', '#48dbfb', '#ff6b6b', '#c8d6e5'];
const W = 480, H = 210, M = {left: 74, right: 12, top: 10, bottom: 24};
const colours = new Map();  // series name -> colour, for the page's lifetime

function colourOf(name) {
  if (!colours.has(name)) colours.set(name, PALETTE[colours.size % PALETTE.length]);
  return colours.get(name);
}

function formatValue(unit, v) {
  if (v == null) return '–';
  if (unit === 'ratio') { const pct = 100 * v; return pct.toFixed(Math.abs(pct - Math.round(pct)) < 0.05 ? 0 : 1) + '%'; }
  const units = [[1e9, 'Gbit/s'], [1e6, 'Mbit/s'], [1e3, 'kbit/s']];
  for (const [f, u] of units) if (Math.abs(v) >= f) return (v / f).toFixed(Number.isInteger(v / f) || v / f >= 100 ? 0 : 1) + ' ' + u;
  return v.toFixed(v > 0 && v < 10 ? 1 : 0) + ' bit/s';
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 8, 10]) if (m * p >= v) return m * p;  // a quarter of each is round too
  return 10 * p;
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false});
}

function pathOf(points, x, y) {
  let d = '', pen = false;
  for (const [t, v] of points) {
    if (v == null) { pen = false; continue; }
    d += (pen ? 'L' : 'M') + x(t).toFixed(1) + ',' + y(v).toFixed(1);
    pen = true;
  }
  return d;
}

function lonePoints(points) {  // values with a gap (or the edge) on both sides: a line can't show them
  return points.filter(([, v], i) => v != null && (points[i - 1] || [0, null])[1] == null
                                     && (points[i + 1] || [0, null])[1] == null);
}

function drawChart(card, chart, range) {
  card.dataset.chart = chart.name;
  card.replaceChildren();
  const head = document.createElement('h4'); head.textContent = chart.title;
  const def = document.createElement('div'); def.className = 'muted definition'; def.textContent = chart.definition;
  if (chart.query) def.title = chart.query;
  const svg = el('svg', {viewBox: `0 0 ${W} ${H}`, class: 'chart', 'data-chart': chart.name, role: 'img',
                         'aria-label': chart.title});
  const values = chart.series.flatMap(s => s.points.map(p => p[1]).filter(v => v != null));
  const peak = Math.max(0, ...values);  // an idle fleet still gets a readable axis: 0 to 1 Mbit/s
  const top = chart.unit === 'ratio' ? Math.max(1, niceCeil(peak)) : peak > 0 ? niceCeil(peak) : 1e6;
  const x = t => M.left + (t - range.start) / Math.max(1, range.end - range.start) * (W - M.left - M.right);
  const y = v => H - M.bottom - v / top * (H - M.top - M.bottom);
  for (let i = 0; i <= 4; i++) {  // y grid and labels
    const v = top * i / 4;
    svg.append(el('line', {x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), class: 'grid'}));
    svg.append(el('text', {x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick'}, formatValue(chart.unit, v)));
  }
  for (let i = 0; i <= 3; i++) {  // x labels
    const t = range.start + (range.end - range.start) * i / 3;
    svg.append(el('text', {x: x(t), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === 3 ? 'end' : 'middle',
                           class: 'tick'}, clock(t)));
  }
  const legend = document.createElement('div'); legend.className = 'legend';
  for (const s of chart.series) {
    const colour = colourOf(s.name);
    const d = pathOf(s.points, x, y);
    if (d.includes('L')) svg.append(el('path', {d, class: 'line', stroke: colour, 'data-series': s.name}));
    for (const [t, v] of lonePoints(s.points)) svg.append(el('circle', {cx: x(t), cy: y(v), r: 2.5, fill: colour}));
    const item = document.createElement('span');
    const swatch = document.createElement('i'); swatch.style.background = colour;
    item.append(swatch, `${s.name} ${formatValue(chart.unit, s.last)}`);
    item.dataset.series = s.name;
    legend.append(item);
  }
  if (!values.length) {
    svg.append(el('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty'},
                  chart.empty || 'no data in this range yet'));
  }
  card.append(head, svg, legend, def);
}

window.fleetCharts = {drawChart, formatValue};
