// The console's dashboard: one fetch of GET /v1/stats/overview, five Chart.js charts and
// the same numbers as small tables (for screen readers and for copying).
(function () {
  "use strict";
  var form = document.getElementById("dashboard-window");
  var statusLine = document.getElementById("dashboard-status");
  var charts = {};
  var PALETTE = ["#2a55a5", "#3aa76d", "#e0a100", "#d2452f", "#7d4fb3", "#1c9cb0",
                 "#8c6d46", "#5f6b7a", "#c2185b", "#00897b"];
  var STATUS_COLOURS = {seen: "#2e7d32", delivered: "#3aa76d", submitted: "#e0a100",
    sending: "#f2c14e", queued: "#9aa5b1", pending: "#c4cbd4", undelivered: "#ef8354",
    failed: "#d2452f", expired: "#8d2b1f", retrying: "#e0a100"};

  function colour(name, i) { return STATUS_COLOURS[name] || PALETTE[i % PALETTE.length]; }

  function draw(id, config) {
    if (charts[id]) { charts[id].destroy(); }
    config.options = Object.assign({responsive: true, maintainAspectRatio: false,
                                    animation: false}, config.options || {});
    charts[id] = new Chart(document.getElementById(id), config);
  }

  function table(id, head, rows) {
    var t = document.getElementById(id);
    t.textContent = "";
    var tr = t.insertRow();
    head.forEach(function (h) { var th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
    if (!rows.length) {
      var empty = t.insertRow().insertCell();
      empty.colSpan = head.length; empty.textContent = "nothing in this window"; empty.className = "muted";
    }
    rows.forEach(function (r) {
      var row = t.insertRow();
      r.forEach(function (v) { row.insertCell().textContent = v === null ? "–" : String(v); });
    });
  }

  function render(data) {
    var byStatus = data.messages.by_status;
    var statuses = Object.keys(byStatus);
    draw("chart-status", {type: "doughnut", data: {labels: statuses, datasets: [{
      data: statuses.map(function (s) { return byStatus[s]; }),
      backgroundColor: statuses.map(colour)}]}});
    table("table-status", ["status", "messages"], statuses.map(function (s) { return [s, byStatus[s]]; }));

    var byChannel = data.messages.by_channel, channels = Object.keys(byChannel), seen = {};
    channels.forEach(function (c) { Object.keys(byChannel[c]).forEach(function (s) { seen[s] = 1; }); });
    var attemptStatuses = Object.keys(seen);
    draw("chart-channel", {type: "bar", data: {labels: channels, datasets: attemptStatuses.map(function (s, i) {
      return {label: s, backgroundColor: colour(s, i),
              data: channels.map(function (c) { return byChannel[c][s] || 0; })};
    })}, options: {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true}}}});
    var channelRows = [];
    channels.forEach(function (c) { attemptStatuses.forEach(function (s) {
      if (byChannel[c][s]) { channelRows.push([c, s, byChannel[c][s]]); } }); });
    table("table-channel", ["channel", "status", "attempts"], channelRows);

    draw("chart-fallback", {type: "bar", data: {labels: data.fallback.map(function (f) { return f.route; }),
      datasets: [{label: "fell back (%)", backgroundColor: "#ef8354",
                  data: data.fallback.map(function (f) { return Math.round(f.rate * 1000) / 10; })}]},
      options: {scales: {y: {beginAtZero: true, max: 100}}}});
    table("table-fallback", ["route", "messages", "fell back", "rate"], data.fallback.map(function (f) {
      return [f.route, f.messages, f.fell_back, (Math.round(f.rate * 1000) / 10) + " %"]; }));

    draw("chart-latency", {type: "bar", data: {labels: data.latency.map(function (l) { return l.provider; }),
      datasets: ["p50", "p90", "p99"].map(function (p, i) {
        return {label: p, backgroundColor: PALETTE[i], data: data.latency.map(function (l) { return l[p]; })};
      })}, options: {scales: {y: {beginAtZero: true}}}});
    table("table-latency", ["provider", "reports", "p50", "p90", "p99"], data.latency.map(function (l) {
      return [l.provider, l.reports, l.p50, l.p90, l.p99]; }));

    var hooks = data.webhooks, kinds = ["delivered", "pending", "retrying", "failed"];
    draw("chart-webhooks", {type: "bar", data: {labels: kinds, datasets: [{label: "deliveries",
      backgroundColor: kinds.map(colour), data: kinds.map(function (k) { return hooks[k]; })}]},
      options: {plugins: {legend: {display: false}}, scales: {y: {beginAtZero: true}}}});
    table("table-webhooks", ["failing URL", "failed", "retrying"], hooks.failing_urls.map(function (u) {
      return [u.url, u.failed, u.retrying]; }));
  }

  function load() {
    var hours = document.getElementById("hours").value;
    statusLine.textContent = "Loading…";
    fetch(window.location.origin + form.dataset.endpoint + "?hours=" + encodeURIComponent(hours),
          {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json().then(function (body) { return {ok: r.ok, body: body}; }); })
      .then(function (res) {
        if (!res.ok) { statusLine.textContent = "Could not load: " + (res.body.message || "error"); return; }
        render(res.body);
        document.body.dataset.dashboard = "drawn";
        statusLine.textContent = res.body.messages.total + " messages from " +
          res.body.since.replace("T", " ").replace("Z", " UTC") + " to " +
          res.body.until.replace("T", " ").replace("Z", " UTC");
      })
      .catch(function (err) { statusLine.textContent = "Could not load: " + err; });
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); load(); });
  document.getElementById("hours").addEventListener("change", load);
  load();
})();
