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

  document.addEventListener("DOMContentLoaded", function () { reveal(document); });
  document.addEventListener("htmx:load", function (event) { reveal(event.target); });
})();
