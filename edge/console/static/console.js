// Draws each chart of the page from its JSON data block (no inline script: the CSP allows none).
// <div data-chart="NAME"> is drawn from <script type="application/json" id="NAME-data">.
"use strict";
const COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d"];

function draw(target) {
  const source = document.getElementById(target.dataset.chart + "-data");
  if (!source || typeof uPlot === "undefined") return;
  const data = JSON.parse(source.textContent);
  const options = {
    width: Math.max(target.clientWidth, 480),
    height: 280,
    scales: { x: { time: true } },
    axes: [{}, { label: data.unit || "" }],
    series: [{}].concat(data.series.map((s, i) => ({
      label: s.label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: false,
      points: { show: true, size: 5, fill: COLOURS[i % COLOURS.length] },
    }))),
  };
  new uPlot(options, [data.x].concat(data.series.map((s) => s.values)), target);
  target.dataset.drawn = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-chart]").forEach(draw);
});
