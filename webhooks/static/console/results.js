// Flow results: per version a funnel bar chart, per step a pie of its answers (message
// steps) or bars (free-text questions), from the numbers the page already shows as tables.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("results-data").textContent);
  var PALETTE = ["#2a55a5", "#3aa76d", "#e0a100", "#7d4fb3", "#1c9cb0", "#c2185b", "#8c6d46",
                 "#00897b", "#5f6b7a", "#ef8354"];
  var BASE = {responsive: true, maintainAspectRatio: false, animation: false};

  function stepChart(version, step) {
    var labels = [], values = [];
    Object.keys(step.answers).forEach(function (id) { labels.push(step.answers[id].caption + " (" + id + ")"); values.push(step.answers[id].count); });
    if (step.type === "question" || step.text_answers) { labels.push("free text"); values.push(step.text_answers); }
    labels.push("no answer"); values.push(step.timeouts);
    labels.push("undeliverable"); values.push(step.failed);
    var canvas = document.getElementById("chart-" + version + "-" + step.step);
    if (!canvas) { return; }
    var pie = step.type === "message";
    new Chart(canvas, {type: pie ? "pie" : "bar", data: {labels: labels, datasets: [{
      label: "answers", data: values,
      backgroundColor: labels.map(function (l, i) { return l === "no answer" ? "#c4cbd4" : l === "undeliverable" ? "#d2452f" : PALETTE[i % PALETTE.length]; })}]},
      options: Object.assign({}, BASE, pie ? {} : {plugins: {legend: {display: false}}, scales: {y: {beginAtZero: true, ticks: {precision: 0}}}})});
  }

  DATA.versions.forEach(function (v) {
    var funnel = document.getElementById("funnel-" + v.version);
    new Chart(funnel, {type: "bar", data: {labels: ["started", "finished", "timed out", "failed"],
      datasets: [{label: "runs", data: [v.started, v.finished, v.timed_out, v.failed],
                  backgroundColor: ["#2a55a5", "#3aa76d", "#e0a100", "#d2452f"]}]},
      options: Object.assign({}, BASE, {plugins: {legend: {display: false}}, scales: {y: {beginAtZero: true, ticks: {precision: 0}}}})});
    v.steps.forEach(function (step) { stepChart(v.version, step); });
  });
  document.body.dataset.resultsDrawn = "1";
})();
