// The message page's cancel button: POST JSON to this origin, then show the new state.
(function () {
  "use strict";
  var button = document.getElementById("cancel-message");
  if (!button) { return; }
  var note = document.getElementById("cancel-result");
  button.addEventListener("click", function () {
    if (!window.confirm("Cancel this message? Nothing has been sent yet; it never will be.")) {
      return;
    }
    button.disabled = true;
    fetch(button.getAttribute("data-url"), {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: "{}"
    }).then(function (r) {
      return r.json().then(function (body) { return {status: r.status, body: body}; });
    }).then(function (answer) {
      if (answer.status === 200) {
        window.location.reload();
        return;
      }
      button.disabled = false;
      note.textContent = answer.body.message || ("refused (" + answer.status + ")");
    }).catch(function (err) {
      button.disabled = false;
      note.textContent = "could not reach the server: " + err;
    });
  });
}());
