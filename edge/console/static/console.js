// Draws the page's chart from its JSON data block (no inline script: the CSP allows none).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const source = document.getElementById("chart-data");
  const target = document.getElementById("chart");
  if (!source || !target || typeof uPlot === "undefined") return;
  const data = JSON.parse(source.textContent);
  const colours = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d"];
  const options = {
    width: Math.max(target.clientWidth, 480),
    height: 300,
    scales: { x: { time: true } },
    series: [{}].concat(data.series.map((s, i) => ({
      label: s.label, stroke: colours[i % colours.length], width: 2,
    }))),
  };
  new uPlot(options, [data.x].concat(data.series.map((s) => s.values)), target);
  target.dataset.drawn = "true";
});
