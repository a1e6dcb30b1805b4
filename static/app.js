// Likeness: the little the pages do beyond htmx. Loaded as a file: the Content-Security-Policy
// allows no inline script.
(function () {
  "use strict";

  // ---- Uploads: a progress bar per file, the tile in the grid as soon as the server has it.
  function csrfToken(form) {
    var input = form.querySelector("input[name=csrf_token]");
    return input ? input.value : "";
  }

  function addRow(list, file) {
    var row = document.createElement("li");
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    var state = document.createElement("span");
    state.className = "state";
    state.textContent = "waiting…";
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + file.name);
    row.append(name, state, bar);
    list.prepend(row);
    return { row: row, state: state, bar: bar };
  }

  function placeTile(html) {
    var grid = document.getElementById("grid");
    if (!grid) return;
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var tile = holder.content.firstElementChild;
    if (!tile || document.getElementById(tile.id)) return;
    var poller = document.getElementById("poller");
    if (poller && poller.parentNode === grid) poller.after(tile);
    else grid.prepend(tile);
    var empty = document.getElementById("empty");
    if (empty) empty.remove();
    if (window.htmx) window.htmx.process(tile);
  }

  function refusal(xhr, limitMb) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error) return body.error;
    } catch (e) { /* not JSON: a proxy's or the server's own page */ }
    if (xhr.status === 413) return "too large: the limit is " + limitMb + " MB";
    if (xhr.status === 403) return "your role in this team cannot upload";
    if (xhr.status === 0) return "the connection was lost";
    return "the upload failed (" + xhr.status + ")";
  }

  function uploadOne(form, file, list) {
    var ui = addRow(list, file);
    var data = new FormData();
    data.append("file", file, file.name);
    data.append("csrf_token", csrfToken(form));
    var collection = form.querySelector("input[name=collection]");
    if (collection) data.append("collection", collection.value);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-CSRFToken", csrfToken(form));
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        ui.bar.value = Math.round((event.loaded / event.total) * 100);
        ui.state.textContent = ui.bar.value + "%";
      }
    });
    return new Promise(function (done) {
      xhr.addEventListener("loadend", function () {
        ui.bar.value = 100;
        if (xhr.status >= 200 && xhr.status < 300) {
          var body = JSON.parse(xhr.responseText);
          body.items.forEach(function (item) { placeTile(item.html); });
          ui.state.textContent = body.items.map(function (i) { return i.message; }).join("; ");
          ui.row.classList.add(body.items.every(function (i) { return i.existing; }) ? "existing" : "done");
        } else {
          ui.state.textContent = refusal(xhr, form.dataset.limitMb);
          ui.row.classList.add("failed");
        }
        ui.state.setAttribute("role", "status");
        done();
      });
      xhr.send(data);
    });
  }

  function uploadAll(form, files) {
    var list = document.getElementById("uploads");
    // Two at a time: progress stays visible per file without flooding the server.
    var queue = Array.prototype.slice.call(files);
    function next() {
      var file = queue.shift();
      return file ? uploadOne(form, file, list).then(next) : Promise.resolve();
    }
    Promise.all([next(), next()]).then(function () {
      var poller = document.getElementById("poller");
      if (poller && window.htmx) window.htmx.trigger(poller, "refresh");
    });
  }

  function setUpDropzone() {
    var zone = document.getElementById("dropzone");
    if (!zone) return;
    var picker = zone.querySelector("input[type=file]");
    picker.addEventListener("change", function () {
      if (picker.files.length) uploadAll(zone, picker.files);
      picker.value = "";
    });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) uploadAll(zone, event.dataTransfer.files);
    });
    zone.addEventListener("submit", function (event) { event.preventDefault(); });
  }

  // ---- A tile placed by an upload may come again from the poller: keep the first.
  function dropRepeatedTiles() {
    var grid = document.getElementById("grid");
    if (!grid) return;
    var seen = {};
    grid.querySelectorAll(".tile").forEach(function (tile) {
      if (seen[tile.id]) tile.remove();
      seen[tile.id] = true;
    });
  }

  // ---- When the last badge in view settles, the counts catch up at once, not at the next poll.
  function refreshWhenSettled(event) {
    if (!event.target.classList || !event.target.classList.contains("status")) return;
    if (document.querySelector("#grid .badge[hx-trigger]")) return;
    var poller = document.getElementById("poller");
    if (poller && window.htmx) window.htmx.trigger(poller, "refresh");
  }

  // ---- Image page: the arrow keys go to the newer and older image.
  function onKey(event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    var target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    var rel = { ArrowLeft: "prev", ArrowRight: "next" }[event.key];
    if (!rel) return;
    var link = document.querySelector("a[rel=" + rel + "]");
    if (link) {
      event.preventDefault();
      window.location.assign(link.href);
    }
  }

  // ---- A refusal htmx does not swap (400, 403, 404, 5xx: see htmx-config in base.html) would
  // vanish without a word: its message goes to the flashes, until the next request.
  function refusalText(xhr) {
    var type = xhr.getResponseHeader("Content-Type") || "";
    try {
      if (type.indexOf("json") >= 0) return JSON.parse(xhr.responseText).error.message;
      var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var told = page.querySelector(".error-page h1");
      var said = page.querySelector(".error-page p:not(.code)");
      if (told) return told.textContent + (said ? ": " + said.textContent.trim() : "");
      // A fragment that carries its own refusal (a form's error line).
      var alert = page.querySelector("[role=alert]");
      if (alert) return alert.textContent.trim();
    } catch (e) { /* an answer of another shape: the plain words below */ }
    return "";
  }

  function showRefusal(text) {
    var flashes = document.getElementById("flashes");
    if (!flashes) return;
    clearRefusal();
    var note = document.createElement("p");
    note.className = "flash error refusal";
    note.setAttribute("role", "alert");
    note.textContent = text;
    flashes.appendChild(note);
  }

  function clearRefusal() {
    document.querySelectorAll("#flashes .refusal").forEach(function (note) { note.remove(); });
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    showRefusal(refusalText(xhr) || "That didn't work (" + xhr.status + "). Reload the page and try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    showRefusal("Likeness cannot be reached just now. Check the connection and try again.");
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    // Not for the pollers: a refusal stays until the person does something.
    if (!event.detail.elt.matches("[hx-trigger*='every']")) clearRefusal();
  });

  document.addEventListener("DOMContentLoaded", setUpDropzone);
  document.addEventListener("htmx:afterSettle", dropRepeatedTiles);
  document.addEventListener("htmx:afterSettle", refreshWhenSettled);
  document.addEventListener("keydown", onKey);
})();
