// The flow designer: a Drawflow canvas over an ordinary flow document.
//
// `model` is the flow document (the same object POST /v1/flows takes) and the only truth:
// the canvas and the side panel are views of it. Each step is a node; a message step has
// one output port per button (its `next`), questions and flushes one (`next`), ends none.
// Every change is sent to POST /console/flows/check, which runs the server's own rules
// and answers each problem with its step; those are drawn on the steps. Nothing here
// needs the canvas: the side panel edits every field and the YAML view edits the text.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("designer-data").textContent);
  var URLS = DATA.urls;
  var model = DATA.definition;
  var mode = DATA.mode; // new | edit | readonly
  var editor = null;
  var nodeOf = {}, stepOfNode = {};
  var selected = null, rebuilding = false, dirty = false;
  var errors = [], lastDocument = "", checkSeq = 0, checkTimer = null;
  var ACTIONS = [["", "none"], ["tel:", "tel:"], ["geo:", "geo:"], ["http", "http(s):"],
                 ["mailto:", "mailto:"], ["confirm:", "confirm:"]];
  var RING = [5, 15, 30, 60], REPEAT = [5, 15, 30, 60, 300, 900, 3600];

  function $(id) { return document.getElementById(id); }
  // Absolute URLs on this origin: a page opened as http://user:key@host/... would otherwise
  // resolve relative URLs with the credentials in them, which fetch refuses.
  function abs(path) { return window.location.origin + path; }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; }
      else if (k === "on") { Object.keys(attrs.on).forEach(function (ev) { node.addEventListener(ev, attrs.on[ev]); }); }
      else if (k in node && typeof attrs[k] !== "string") { node[k] = attrs[k]; }
      else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return node;
  }
  function status(text) { $("designer-status").textContent = text; }
  function stepById(id) { return model.steps.filter(function (s) { return s.id === id; })[0]; }
  function ids() { return model.steps.map(function (s) { return s.id; }); }
  function list(text) { return text.split(",").map(function (t) { return t.trim(); }).filter(Boolean); }

  // --- the graph of a step ------------------------------------------------------------------
  function outputsOf(step) {
    if (step.type === "message") { return (step.buttons || []).length; }
    return step.type === "end" ? 0 : 1;
  }
  function targetOf(step, k) {
    if (step.type === "message") { return ((step.buttons || [])[k] || {}).next || ""; }
    return step.next || "";
  }
  function setTarget(step, k, target) {
    var holder = step.type === "message" ? step.buttons[k] : step;
    if (!holder) { return; }
    if (target) { holder.next = target; } else { delete holder.next; }
  }

  // --- the canvas ---------------------------------------------------------------------------
  function nodeElement(stepId) { return document.getElementById("node-" + nodeOf[stepId]); }

  function fillNode(step) {
    var box = nodeElement(step.id);
    if (!box) { return; }
    var content = box.querySelector(".drawflow_content_node");
    content.textContent = "";
    content.appendChild(el("div", {"class": "step-kind", text: step.type}));
    content.appendChild(el("div", {"class": "step-id", text: step.id}));
    if (step.text) { content.appendChild(el("div", {"class": "step-text", text: step.text})); }
    var outs = el("ol", {"class": "step-outs"});
    if (step.type === "message") {
      (step.buttons || []).forEach(function (b) {
        outs.appendChild(el("li", {text: (b.caption || "?") + " → " + (b.next || "(no next)")}));
      });
    } else if (step.type !== "end") {
      outs.appendChild(el("li", {text: "→ " + (step.next || "(no next)")}));
    }
    if (step.on_timeout) { outs.appendChild(el("li", {text: "timeout " + step.on_timeout.after + " s → " + (step.on_timeout.next || "?")})); }
    if (step.on_failed) { outs.appendChild(el("li", {text: "failed → " + step.on_failed})); }
    content.appendChild(outs);
    content.appendChild(el("ul", {"class": "step-errors"}));
  }

  function render() {
    rebuilding = true;
    editor.clear();
    nodeOf = {}; stepOfNode = {};
    model.layout = model.layout || {};
    model.steps.forEach(function (step, i) {
      var pos = model.layout[step.id] || {x: 40 + (i % 4) * 260, y: 40 + Math.floor(i / 4) * 190};
      model.layout[step.id] = pos;
      var id = editor.addNode(step.type, 1, outputsOf(step), pos.x, pos.y, step.type,
                              {step: step.id}, "", false);
      nodeOf[step.id] = id; stepOfNode[id] = step.id;
      var box = nodeElement(step.id);
      box.dataset.step = step.id;
      box.setAttribute("aria-label", step.type + " step " + step.id);
      fillNode(step);
    });
    model.steps.forEach(function (step) {
      for (var k = 0; k < outputsOf(step); k++) {
        var target = targetOf(step, k);
        if (target && nodeOf[target] !== undefined && target !== step.id) {
          editor.addConnection(nodeOf[step.id], nodeOf[target], "output_" + (k + 1), "input_1");
        }
      }
    });
    rebuilding = false;
    markErrors();
    refreshPanels();
  }

  function canvasPoint(clientX, clientY) {
    var rect = editor.precanvas.getBoundingClientRect();
    return {x: (clientX - rect.x) / editor.zoom, y: (clientY - rect.y) / editor.zoom};
  }

  function newStep(type) {
    var n = 1;
    while (stepById(type + "_" + n)) { n++; }
    var step = {id: type + "_" + n, type: type};
    if (type === "message") { step.text = "New message"; step.buttons = [{id: "b1", caption: "Option 1"}]; }
    if (type === "question") { step.text = "New question"; }
    return step;
  }

  function addStep(type, point) {
    if (mode === "readonly") { return; }
    var step = newStep(type);
    var count = model.steps.length;
    model.steps.push(step);
    model.layout = model.layout || {};
    model.layout[step.id] = point || {x: 40 + (count % 4) * 260, y: 40 + Math.floor(count / 4) * 190};
    changed(true);
    select(step.id);
    status("Added " + type + " step " + step.id);
  }

  function removeStep(stepId, fromCanvas) {
    model.steps = model.steps.filter(function (s) { return s.id !== stepId; });
    delete model.layout[stepId];
    model.steps.forEach(function (s) {
      for (var k = 0; k < outputsOf(s); k++) { if (targetOf(s, k) === stepId) { setTarget(s, k, ""); } }
      if (s.on_failed === stepId) { delete s.on_failed; }
      if (s.on_timeout && s.on_timeout.next === stepId) { delete s.on_timeout.next; }
    });
    if (model.start === stepId) { delete model.start; }
    if (selected === stepId) { selected = null; }
    changed(!fromCanvas);
    if (fromCanvas) { model.steps.forEach(fillNode); }
    status("Deleted step " + stepId);
  }

  function renameStep(step, newId) {
    var old = step.id;
    if (!newId || newId === old) { return; }
    if (stepById(newId)) { status("There is already a step " + newId); return; }
    step.id = newId;
    model.steps.forEach(function (s) {
      (s.buttons || []).forEach(function (b) { if (b.next === old) { b.next = newId; } });
      if (s.next === old) { s.next = newId; }
      if (s.on_failed === old) { s.on_failed = newId; }
      if (s.on_timeout && s.on_timeout.next === old) { s.on_timeout.next = newId; }
    });
    if (model.start === old) { model.start = newId; }
    model.layout[newId] = model.layout[old]; delete model.layout[old];
    selected = newId;
    changed(true);
  }

  function wireCanvas() {
    editor = new Drawflow($("drawflow"));
    editor.reroute = false;
    editor.start();
    editor.on("nodeSelected", function (id) { if (!rebuilding) { select(stepOfNode[id], true); } });
    editor.on("nodeMoved", function (id) {
      var node = editor.getNodeFromId(id);
      model.layout[stepOfNode[id]] = {x: Math.round(node.pos_x), y: Math.round(node.pos_y)};
      dirty = true;
    });
    editor.on("nodeRemoved", function (id) {
      if (!rebuilding && stepOfNode[id]) { removeStep(stepOfNode[id], true); delete stepOfNode[id]; }
    });
    editor.on("connectionCreated", function (c) {
      if (rebuilding) { return; }
      var step = stepById(stepOfNode[c.output_id]), target = stepOfNode[c.input_id];
      var k = parseInt(c.output_class.split("_")[1], 10) - 1;
      rebuilding = true; // one next per port: drop the link it replaces
      editor.getNodeFromId(c.output_id).outputs[c.output_class].connections.forEach(function (other) {
        if (String(other.node) !== String(c.input_id)) {
          editor.removeSingleConnection(c.output_id, other.node, c.output_class, "input_1");
        }
      });
      rebuilding = false;
      setTarget(step, k, target);
      fillNode(step);
      changed(false);
      status("Linked " + step.id + " to " + target);
    });
    editor.on("connectionRemoved", function (c) {
      if (rebuilding) { return; }
      var step = stepById(stepOfNode[c.output_id]);
      var k = parseInt(c.output_class.split("_")[1], 10) - 1;
      if (step && targetOf(step, k) === stepOfNode[c.input_id]) {
        setTarget(step, k, "");
        fillNode(step);
        changed(false);
        status("Removed the link from " + step.id);
      }
    });
  }

  // --- dragging from the palette (pointer events: mouse, pen, touch and WebDriver) ------
  function wirePalette() {
    var drag = null, suppressClick = false;
    document.querySelectorAll(".palette-item").forEach(function (item) {
      item.addEventListener("pointerdown", function (e) {
        if (mode === "readonly" || e.button !== 0) { return; }
        drag = {type: item.dataset.type, x: e.clientX, y: e.clientY, ghost: null};
      });
      item.addEventListener("click", function () {
        if (suppressClick) { suppressClick = false; return; }
        addStep(item.dataset.type, null);
      });
    });
    document.addEventListener("pointermove", function (e) {
      if (!drag) { return; }
      if (!drag.ghost && Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 6) {
        drag.ghost = el("div", {"class": "palette-ghost", text: drag.type});
        document.body.appendChild(drag.ghost);
      }
      if (drag.ghost) { drag.ghost.style.left = e.clientX + 4 + "px"; drag.ghost.style.top = e.clientY + 4 + "px"; }
    });
    document.addEventListener("pointerup", function (e) {
      if (!drag) { return; }
      var done = drag; drag = null;
      if (!done.ghost) { return; } // a press without a move: the click adds the step
      done.ghost.remove();
      suppressClick = true;
      setTimeout(function () { suppressClick = false; }, 0);
      var rect = $("drawflow").getBoundingClientRect();
      if (e.clientX >= rect.left && e.clientX <= rect.right && e.clientY >= rect.top && e.clientY <= rect.bottom) {
        var p = canvasPoint(e.clientX, e.clientY);
        addStep(done.type, {x: Math.round(p.x - 20), y: Math.round(p.y - 20)});
      }
    });
  }

  // --- checking -----------------------------------------------------------------------------
  function changed(rerender) {
    dirty = true;
    if (rerender) { render(); } else { refreshPanels(); }
    scheduleCheck();
  }

  function scheduleCheck() {
    document.body.dataset.checking = "1"; // pending until the answer to the latest change
    clearTimeout(checkTimer);
    checkTimer = setTimeout(function () { check({definition: model}); }, 250);
  }

  function post(url, body) {
    return fetch(abs(url), {method: "POST", credentials: "same-origin",
                       headers: {"Content-Type": "application/json", "Accept": "application/json"},
                       body: JSON.stringify(body)})
      .then(function (r) { return r.json().then(function (b) { return {status: r.status, body: b}; }); });
  }

  function check(body) {
    var seq = ++checkSeq;
    document.body.dataset.checking = "1";
    return post(URLS.check, body).then(function (res) {
      if (seq !== checkSeq) { return res; }
      errors = res.body.errors || [];
      if (res.body.document !== null && res.body.document !== undefined) { lastDocument = res.body.document; }
      markErrors();
      refreshProblems();
      document.body.dataset.checking = "";
      document.body.dataset.checked = String(seq);
      return res;
    });
  }

  function friendly(e) {
    if (/(\.next|on_failed)$/.test(e.field) && /Field required|at least 1 character/.test(e.message)) {
      return "missing next: link " + (e.field.indexOf("buttons") >= 0 ? "this button" : "it") + " to a step (" + e.field + ")";
    }
    return e.message + " (" + e.field + ")";
  }

  function markErrors() {
    model.steps.forEach(function (step) {
      var box = nodeElement(step.id);
      if (!box) { return; }
      var mine = errors.filter(function (e) { return e.step === step.id; });
      box.classList.toggle("has-error", mine.length > 0);
      var ul = box.querySelector(".step-errors");
      if (ul) {
        ul.textContent = "";
        mine.forEach(function (e) { ul.appendChild(el("li", {text: friendly(e)})); });
      }
    });
  }

  function refreshProblems() {
    var ul = $("problems");
    ul.textContent = "";
    $("problem-count").textContent = errors.length ? String(errors.length) : "";
    if (!errors.length) { ul.appendChild(el("li", {"class": "muted ok", text: "No problems: ready to save."})); }
    errors.forEach(function (e) {
      var text = (e.step ? e.step + ": " : "") + friendly(e);
      ul.appendChild(el("li", {"data-step": e.step || ""}, [e.step && stepById(e.step)
        ? el("button", {type: "button", text: text, on: {click: function () { select(e.step); }}})
        : text]));
    });
    refreshStepList();
  }

  // --- side panel ---------------------------------------------------------------------------
  function refreshPanels() {
    refreshFlowPanel();
    refreshStepList();
    refreshEditor();
  }

  function refreshFlowPanel() {
    $("flow-name").value = model.name || "";
    $("flow-name").readOnly = mode !== "new";
    $("flow-description").value = model.description || "";
    $("flow-route").value = (model.route || []).join(", ");
    $("flow-native").checked = !!model.native;
    var triggers = model.triggers || {};
    $("flow-poke-tags").value = (triggers.poke_tags || []).join(", ");
    $("flow-keywords").value = (triggers.keywords || []).join(", ");
    var start = $("flow-start");
    start.textContent = "";
    start.appendChild(el("option", {value: "", text: "(the first step)"}));
    ids().forEach(function (id) { start.appendChild(el("option", {value: id, text: id, selected: model.start === id})); });
  }

  function wireFlowPanel() {
    function bind(id, apply) { $(id).addEventListener("change", function () { apply($(id)); changed(false); }); }
    bind("flow-name", function (i) { model.name = i.value.trim(); });
    bind("flow-description", function (i) { if (i.value.trim()) { model.description = i.value.trim(); } else { delete model.description; } });
    bind("flow-route", function (i) { model.route = list(i.value); });
    bind("flow-native", function (i) { if (i.checked) { model.native = true; } else { delete model.native; } });
    bind("flow-start", function (i) { if (i.value) { model.start = i.value; } else { delete model.start; } });
    function triggers() {
      var t = {poke_tags: list($("flow-poke-tags").value), keywords: list($("flow-keywords").value)};
      if (t.poke_tags.length || t.keywords.length) { model.triggers = t; } else { delete model.triggers; }
    }
    bind("flow-poke-tags", triggers);
    bind("flow-keywords", triggers);
  }

  function refreshStepList() {
    var ul = $("step-list");
    ul.textContent = "";
    model.steps.forEach(function (step) {
      var bad = errors.some(function (e) { return e.step === step.id; });
      ul.appendChild(el("li", {}, [el("button", {type: "button", "data-step": step.id,
        "class": (selected === step.id ? "selected " : "") + (bad ? "has-error" : ""),
        text: step.type + ": " + step.id, on: {click: function () { select(step.id); }}})]));
    });
  }

  function select(stepId, fromCanvas) {
    selected = stepById(stepId) ? stepId : null;
    document.querySelectorAll(".drawflow-node.selected").forEach(function (n) { if (!fromCanvas) { n.classList.remove("selected"); } });
    if (selected && !fromCanvas && nodeElement(selected)) { nodeElement(selected).classList.add("selected"); }
    refreshStepList();
    refreshEditor();
  }

  function field(label, input) { return el("label", {}, [label, input]); }

  function stepSelect(value, onChange, allowNone) {
    var s = el("select", {on: {change: function () { onChange(s.value); }}});
    if (allowNone !== false) { s.appendChild(el("option", {value: "", text: "(not set)"})); }
    ids().forEach(function (id) { s.appendChild(el("option", {value: id, text: id, selected: value === id})); });
    return s;
  }

  function textInput(value, onChange, attrs) {
    var i = el("input", Object.assign({value: value || "", autocomplete: "off"}, attrs || {}));
    i.addEventListener("change", function () { onChange(i.value); });
    return i;
  }

  function refreshEditor() {
    var box = $("step-editor");
    box.textContent = "";
    var step = selected && stepById(selected);
    if (!step) { box.appendChild(el("p", {"class": "muted", text: "Select a step on the canvas or in the list."})); return; }
    box.appendChild(el("p", {"class": "muted", text: step.type + " step"}));
    box.appendChild(field("Step id", textInput(step.id, function (v) { renameStep(step, v.trim()); }, {id: "step-id"})));
    if (step.type === "message" || step.type === "question") {
      var text = el("textarea", {id: "step-text", rows: 3});
      text.value = step.text || "";
      text.addEventListener("change", function () { step.text = text.value; fillNode(step); changed(false); });
      box.appendChild(field("Text", text));
    }
    if (step.type === "message") { box.appendChild(buttonsEditor(step)); messengerFields(box, step); }
    if (step.type === "question" || step.type === "flush") {
      box.appendChild(field("Next step", stepSelect(step.next, function (v) {
        setTarget(step, 0, v); changed(true); }, true)));
    }
    if (step.type === "message" || step.type === "question") { branchFields(box, step); }
    box.appendChild(el("button", {type: "button", id: "step-delete", text: "Delete step " + step.id,
      on: {click: function () { removeStep(step.id, false); }}}));
    box.querySelectorAll("input, select, textarea, button").forEach(function (i) { i.disabled = mode === "readonly"; });
  }

  function actionParts(action) {
    var a = (action || "").toLowerCase();
    if (!a) { return ["", ""]; }
    if (a.indexOf("http:") === 0 || a.indexOf("https:") === 0) { return ["http", action]; }
    for (var i = 1; i < ACTIONS.length; i++) {
      if (ACTIONS[i][0] !== "http" && a.indexOf(ACTIONS[i][0]) === 0) { return [ACTIONS[i][0], action.slice(ACTIONS[i][0].length)]; }
    }
    return ["", action];
  }

  function buttonsEditor(step) {
    var table = el("table", {"class": "buttons-table", id: "buttons-table"});
    table.appendChild(el("caption", {text: "Buttons (answers)"}));
    table.appendChild(el("tr", {}, ["Caption", "Id", "Next", "Action", "", ""].map(function (h) { return el("th", {text: h}); })));
    step.buttons = step.buttons || [];
    step.buttons.forEach(function (b, k) {
      var parts = actionParts(b.action);
      var kind = el("select", {"aria-label": "action of button " + (k + 1)});
      ACTIONS.forEach(function (a) { kind.appendChild(el("option", {value: a[0], text: a[1], selected: parts[0] === a[0]})); });
      var value = textInput(parts[1], function () { applyAction(); }, {"aria-label": parts[0] === "confirm:" ? "confirmation text" : "action target",
        placeholder: parts[0] === "confirm:" ? "confirmation text" : "target"});
      function applyAction() {
        var v = value.value.trim();
        if (!kind.value) { delete b.action; }
        else if (kind.value === "http") { b.action = /^https?:/i.test(v) ? v : "https://" + v; }
        else { b.action = kind.value + v; }
        changed(false);
      }
      kind.addEventListener("change", applyAction);
      table.appendChild(el("tr", {"data-button": String(k)}, [
        el("td", {}, [textInput(b.caption, function (v) { b.caption = v; fillNode(step); changed(false); }, {"aria-label": "caption of button " + (k + 1), "class": "button-caption"})]),
        el("td", {}, [textInput(b.id, function (v) { b.id = v.trim(); changed(false); }, {"aria-label": "id of button " + (k + 1), "class": "button-id"})]),
        el("td", {}, [stepSelect(b.next, function (v) { setTarget(step, k, v); changed(true); })]),
        el("td", {}, [kind]), el("td", {}, [value]),
        el("td", {}, [el("button", {type: "button", text: "×", "aria-label": "remove button " + (k + 1),
          on: {click: function () { step.buttons.splice(k, 1); changed(true); }}})])]));
    });
    var wrap = el("div", {}, [table, el("button", {type: "button", id: "button-add", text: "Add a button",
      on: {click: function () {
        var n = step.buttons.length + 1;
        while (step.buttons.some(function (b) { return b.id === "b" + n; })) { n++; }
        step.buttons.push({id: "b" + n, caption: "Option " + n});
        changed(true);
      }}})]);
    return wrap;
  }

  function messengerFields(box, step) {
    var branding = el("select", {id: "step-branding"});
    branding.appendChild(el("option", {value: "", text: "(none)"}));
    var known = DATA.brandings.map(function (b) { return b.id; });
    DATA.brandings.forEach(function (b) { branding.appendChild(el("option", {value: b.id, text: b.label, selected: step.branding === b.id})); });
    if (step.branding && known.indexOf(step.branding) < 0) { branding.appendChild(el("option", {value: step.branding, text: step.branding, selected: true})); }
    branding.addEventListener("change", function () { if (branding.value) { step.branding = branding.value; } else { delete step.branding; } changed(false); });
    box.appendChild(field("Branding (messenger)", branding));
    var alert = step.alert || {};
    function setAlert(key, value) {
      var a = Object.assign({}, step.alert || {});
      if (value === "" || value === false || value === null) { delete a[key]; } else { a[key] = value; }
      if (Object.keys(a).length) { step.alert = a; } else { delete step.alert; }
      changed(false);
    }
    var silent = el("input", {type: "checkbox", id: "alert-silent", checked: !!alert.silent});
    silent.addEventListener("change", function () { setAlert("silent", silent.checked); });
    var vibrate = el("input", {type: "checkbox", id: "alert-vibrate", checked: !!alert.vibrate});
    vibrate.addEventListener("change", function () { setAlert("vibrate", vibrate.checked); });
    function secondsSelect(id, values, current, key) {
      var s = el("select", {id: id});
      s.appendChild(el("option", {value: "", text: "no"}));
      values.forEach(function (v) { s.appendChild(el("option", {value: String(v), text: v + " s", selected: current === v})); });
      s.addEventListener("change", function () { setAlert(key, s.value ? parseInt(s.value, 10) : ""); });
      return s;
    }
    box.appendChild(el("fieldset", {}, [el("legend", {text: "Alert"}),
      el("label", {"class": "inline"}, [silent, "silent"]),
      el("label", {"class": "inline"}, [vibrate, "vibrate"]),
      field("Ring", secondsSelect("alert-ring", RING, alert.ring_seconds, "ring_seconds")),
      field("Repeat every", secondsSelect("alert-repeat", REPEAT, alert.repeat_seconds, "repeat_seconds"))]));
    var lock = el("input", {type: "checkbox", id: "step-auto-lock", checked: step.auto_lock !== false});
    lock.addEventListener("change", function () { if (lock.checked) { delete step.auto_lock; } else { step.auto_lock = false; } changed(false); });
    box.appendChild(el("label", {"class": "inline"}, [lock, "Auto-lock after the first answer"]));
  }

  function branchFields(box, step) {
    var timeout = step.on_timeout || {};
    var after = textInput(timeout.after ? String(timeout.after) : "", function (v) { applyTimeout(v, next.value); },
                          {type: "number", min: "1", id: "step-timeout-after"});
    var next = stepSelect(timeout.next, function (v) { applyTimeout(after.value, v); });
    next.id = "step-timeout-next";
    function applyTimeout(seconds, target) {
      if (!seconds && !target) { delete step.on_timeout; }
      else { step.on_timeout = {after: parseInt(seconds, 10) || 0, next: target}; if (!target) { delete step.on_timeout.next; } }
      fillNode(step); changed(false);
    }
    box.appendChild(el("fieldset", {}, [el("legend", {text: "No answer (on_timeout)"}),
      field("After seconds", after), field("Go to", next)]));
    var failed = stepSelect(step.on_failed, function (v) {
      if (v) { step.on_failed = v; } else { delete step.on_failed; } fillNode(step); changed(false); });
    failed.id = "step-on-failed";
    box.appendChild(field("Undeliverable (on_failed): go to", failed));
  }

  // --- YAML view, saving, versions ----------------------------------------------------------
  function showTab(yaml) {
    $("tab-canvas").setAttribute("aria-pressed", String(!yaml));
    $("tab-yaml").setAttribute("aria-pressed", String(yaml));
    $("canvas-pane").hidden = yaml;
    $("yaml-pane").hidden = !yaml;
    if (yaml) {
      check({definition: model}).then(function () { $("yaml-text").value = lastDocument; $("yaml-text").focus(); });
    }
  }

  function applyYaml() {
    return check({document: $("yaml-text").value}).then(function (res) {
      if (res.body.definition) {
        model = res.body.definition;
        dirty = true;
        render();
        status(errors.length ? "Applied, with problems: see the list" : "Applied to the canvas");
      } else {
        status("Not applied: " + (errors[0] ? errors[0].message : "unreadable"));
      }
    });
  }

  function save() {
    var yaml = !$("yaml-pane").hidden;
    status("Saving…");
    post(URLS.save, yaml ? {document: $("yaml-text").value} : {definition: model}).then(function (res) {
      if (res.status === 201) {
        dirty = false;
        status("Saved version " + res.body.version);
        window.location.assign(res.body.url);
        return;
      }
      errors = (res.body.errors || []).map(function (e) { return Object.assign({step: null}, e); });
      markErrors(); refreshProblems();
      status("Not saved: " + res.body.message);
    });
  }

  // --- trying a run -------------------------------------------------------------------------
  // "tester@example.com", "+32470123456", or both (comma-separated) for a route with the
  // messenger and a phone channel.
  function contactOf(text) {
    var to = {};
    text.split(/[,;\s]+/).filter(Boolean).forEach(function (part) {
      if (part.indexOf("@") > 0) { to.email = part; } else { to.phone = part; }
    });
    return {to: to};
  }

  function tryRun() {
    var out = $("try-status");
    if (!DATA.version) { out.textContent = "Save the flow first: a run uses a saved version."; return; }
    if (!$("try-contact").value.trim()) { out.textContent = "Enter a test contact."; $("try-contact").focus(); return; }
    out.textContent = "Starting v" + DATA.version + (dirty ? " (the saved version, not your unsaved changes)" : "") + "…";
    $("try-result").hidden = true;
    document.querySelectorAll(".drawflow-node").forEach(function (n) { n.classList.remove("visited", "current"); });
    post(URLS["try"].replace("__name__", encodeURIComponent(model.name)),
         {contact: contactOf($("try-contact").value), version: DATA.version}).then(function (res) {
      if (res.status !== 202) {
        out.textContent = "Not started: " + res.body.message + " " + (res.body.errors || []).map(function (e) { return e.field + ": " + e.message; }).join("; ");
        return;
      }
      document.body.dataset.tryRun = res.body.run_id;
      poll(res.body.url);
    });
  }

  function poll(url) {
    fetch(abs(url), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (run) {
        var visited = (run.steps || []).map(function (s) { return s.step_id; });
        if (run.end_id) { visited.push(run.end_id); }
        model.steps.forEach(function (step) {
          var box = nodeElement(step.id);
          if (!box) { return; }
          box.classList.toggle("visited", visited.indexOf(step.id) >= 0);
          box.classList.toggle("current", run.status === "running" && run.current_step === step.id);
        });
        var out = $("try-status");
        if (run.status === "starting" || run.status === "running") {
          out.textContent = "Running: at step " + (run.current_step || "…") + ". Answer on the test contact's device.";
          setTimeout(function () { poll(url); }, 600);
          return;
        }
        out.textContent = "Run " + run.status + (run.end_id ? " at end " + run.end_id : "") + (run.timed_out ? " (timed out)" : "");
        var result = $("try-result");
        result.textContent = JSON.stringify({status: run.status, end_id: run.end_id, timed_out: run.timed_out,
          answers: (run.steps || []).map(function (s) { return {step: s.step_id, outcome: s.outcome, answer: s.answer}; })}, null, 2);
        result.hidden = false;
        document.body.dataset.tryDone = run.status;
      });
  }

  // A flow wider or taller than the canvas opens zoomed out to show every step (down to
  // half size); Ctrl+wheel zooms and dragging the background pans, as Drawflow does.
  function fitToView() {
    var box = $("drawflow").getBoundingClientRect(), right = 0, bottom = 0;
    Object.keys(model.layout || {}).forEach(function (id) {
      right = Math.max(right, model.layout[id].x + 260);
      bottom = Math.max(bottom, model.layout[id].y + 180);
    });
    var scale = Math.min(1, box.width / (right || 1), box.height / (bottom || 1));
    if (scale < 1) {
      editor.zoom = Math.max(0.5, Math.floor(scale * 20) / 20);
      editor.zoom_refresh();
    }
  }

  // --- start --------------------------------------------------------------------------------
  function setMode(next) {
    mode = next;
    editor.editor_mode = mode === "readonly" ? "fixed" : "edit";
    $("save").hidden = mode === "readonly";
    document.querySelectorAll(".palette-item, #yaml-apply").forEach(function (b) { b.disabled = mode === "readonly"; });
    $("yaml-text").readOnly = mode === "readonly";
    document.querySelectorAll("#flow-panel input, #flow-panel select").forEach(function (i) { i.disabled = mode === "readonly"; });
    refreshPanels();
  }

  function init() {
    model.steps = model.steps || [];
    wireCanvas();
    wirePalette();
    wireFlowPanel();
    // Keys typed in the panel are the panel's: Drawflow would delete the selected step on Delete.
    $("side-panel").addEventListener("keydown", function (e) { e.stopPropagation(); });
    $("yaml-pane").addEventListener("keydown", function (e) { e.stopPropagation(); });
    $("tab-canvas").addEventListener("click", function () { showTab(false); });
    $("tab-yaml").addEventListener("click", function () { showTab(true); });
    $("yaml-apply").addEventListener("click", applyYaml);
    $("save").addEventListener("click", save);
    $("try-start").addEventListener("click", tryRun);
    if ($("new-version")) {
      $("new-version").addEventListener("click", function () {
        setMode("edit");
        $("new-version").hidden = true;
        if ($("readonly-badge")) { $("readonly-badge").textContent = "new version from v" + DATA.version + " (unsaved)"; }
        status("Editing a new version based on v" + DATA.version + "; saving makes v" + (DATA.latest + 1));
      });
    }
    render();
    fitToView();
    setMode(mode);
    check({definition: model});
    document.body.dataset.designerReady = "1";
    window.switchboardDesigner = {model: function () { return model; }, editor: function () { return editor; }};
  }

  init();
})();
