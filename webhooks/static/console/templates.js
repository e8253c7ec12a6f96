/* The template editor's live preview: every edit is rendered by POST
   /console/templates/preview (the API's preview on the unsaved YAML); the answer fills the
   channels, the SMS encoding, length and segments, or the errors naming locale/field/line. */
(function () {
  "use strict";
  var root = document.getElementById("template-editor");
  if (!root) { return; }
  var docEl = document.getElementById("tpl-document");
  var dataEl = document.getElementById("tpl-data");
  var localeEl = document.getElementById("tpl-locale");
  var timer = null, seq = 0;

  function post(url, body) {
    return fetch(window.location.origin + url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify(body)
    }).then(function (r) { return r.json().then(function (b) { return {status: r.status, body: b}; }); });
  }

  function text(el, value) { el.textContent = value; return el; }

  function showErrors(errors) {
    var box = document.getElementById("tpl-errors");
    box.replaceChildren();
    box.hidden = !errors.length;
    errors.forEach(function (e) {
      box.appendChild(text(document.createElement("div"), e.field + ": " + e.message));
    });
  }

  function showPreview(body) {
    var list = document.getElementById("tpl-channels");
    list.replaceChildren();
    Object.keys(body.channels).forEach(function (channel) {
      var content = body.channels[channel];
      list.appendChild(text(document.createElement("dt"), channel));
      var shown = content.text || "";
      if (content.button) { shown += "\n[" + content.button.text + "]"; }
      (content.buttons || []).forEach(function (b) { shown += "\n[" + b.caption + "]"; });
      list.appendChild(text(document.createElement("dd"), shown || "(nothing)"));
    });
    text(document.getElementById("tpl-locale-used"), "(" + body.locale + ")");
    var sms = body.sms;
    text(document.getElementById("tpl-sms"), sms
      ? sms.encoding + " · " + sms.length + " units · " + sms.segments + " segment(s) of " +
        sms.per_segment + " · " + sms.remaining + " left" +
        (sms.not_gsm7.length ? " · not GSM-7: " + sms.not_gsm7.join(" ") : "")
      : "no SMS text");
  }

  function refresh() {
    var data;
    try { data = JSON.parse(dataEl.value || "{}"); } catch (err) {
      showErrors([{field: "sample data", message: "not JSON: " + err.message}]); return;
    }
    var mine = ++seq;
    root.dataset.previewing = "1";
    post(root.dataset.previewUrl, {document: docEl.value, data: data, locale: localeEl.value})
      .then(function (res) {
        if (mine !== seq) { return; }
        delete root.dataset.previewing;
        if (res.status === 200) { showErrors([]); showPreview(res.body); }
        else { showErrors(res.body.errors || [{field: "", message: res.body.message}]); }
      });
  }

  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 250); }

  [docEl, dataEl, localeEl].forEach(function (el) { el.addEventListener("input", schedule); });
  document.getElementById("tpl-save").addEventListener("click", function () {
    post(root.dataset.saveUrl, {document: docEl.value}).then(function (res) {
      if (res.status === 201) {
        text(document.getElementById("tpl-saved"), "saved version " + res.body.version);
        window.location.assign(res.body.url);
      } else { showErrors(res.body.errors || []); }
    });
  });
  refresh();
}());
