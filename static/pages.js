// Behaviour of the Collections, Imports, Search, Duplicates and Settings pages beyond htmx.
// Loaded as a file: the Content-Security-Policy allows no inline script.
//
// Copy buttons: <button data-copy-target="ID" hidden> copies the text of the element ID.
// Hidden until this script shows it, so that without JavaScript no button does nothing (the
// text itself selects with one click). The clipboard API needs a secure context; elsewhere
// the text is selected for the person to copy.
(function () {
  "use strict";

  function reveal(root) {
    root.querySelectorAll("button[data-copy-target][hidden]").forEach(function (button) {
      button.hidden = false;
    });
  }

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function say(button, text) {
    var status = document.getElementById(button.getAttribute("aria-describedby") || "");
    button.textContent = text;
    if (status) status.textContent = text;
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy-target]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy-target"));
    if (!source) return;
    var text = source.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { say(button, "Copied"); },
        function () { selectText(source); say(button, "Selected: press Ctrl+C to copy"); }
      );
    } else {
      selectText(source);
      var copied = false;
      try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
      say(button, copied ? "Copied" : "Selected: press Ctrl+C to copy");
    }
  });

  // Search by image: a file dropped on the form goes into its file input, and the input's
  // change event makes htmx send the form (hx-trigger="change").
  document.addEventListener("dragover", function (event) {
    var zone = event.target.closest && event.target.closest(".search-drop");
    if (!zone) return;
    event.preventDefault();
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", function (event) {
    var zone = event.target.closest && event.target.closest(".search-drop");
    if (zone) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", function (event) {
    var zone = event.target.closest && event.target.closest(".search-drop");
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("dragging");
    var input = zone.querySelector("input[type=file]");
    if (!input || !event.dataTransfer || !event.dataTransfer.files.length) return;
    var one = new DataTransfer();
    one.items.add(event.dataTransfer.files[0]);
    input.files = one.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  });

  document.addEventListener("DOMContentLoaded", function () { reveal(document); });
  document.addEventListener("htmx:load", function (event) { reveal(event.target); });
})();
