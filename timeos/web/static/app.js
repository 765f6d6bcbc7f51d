// TimeOS dashboard: times in the browser's zone, live-update pause and connection state,
// confirmation of destructive forms. Loaded as a file: the CSP allows no inline script.
(function () {
  "use strict";
  var paused = false;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function offset(d) {
    var m = -d.getTimezoneOffset();
    var sign = m >= 0 ? "+" : "-";
    m = Math.abs(m);
    return "UTC" + sign + pad(Math.floor(m / 60)) + ":" + pad(m % 60);
  }

  function localise(root) {
    var nodes = root.querySelectorAll("time[datetime]:not([data-local])");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) { continue; }
      el.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) +
        " " + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) +
        " " + offset(d);
      el.title = el.getAttribute("datetime");
      el.setAttribute("data-local", "1");
    }
  }

  function setConnection(state, text) {
    var el = document.getElementById("connection");
    if (!el) { return; }
    el.className = "conn conn-" + state;
    el.textContent = text;
  }

  function refreshAll() {
    var regions = document.querySelectorAll("[data-live]");
    for (var i = 0; i < regions.length; i++) { window.htmx.trigger(regions[i], "sse:update"); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    localise(document);
    var pause = document.getElementById("pause");
    if (pause) {
      pause.addEventListener("click", function () {
        paused = !paused;
        pause.setAttribute("aria-pressed", paused ? "true" : "false");
        pause.textContent = paused ? "Resume live" : "Pause live";
        if (paused) { setConnection("paused", "paused"); }
        else { setConnection("live", "live"); refreshAll(); }
      });
    }
    document.addEventListener("submit", function (e) {
      var form = e.target;
      var question = form.getAttribute && form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) { e.preventDefault(); }
    });
    document.body.addEventListener("htmx:sseOpen", function () {
      if (!paused) { setConnection("live", "live"); }
    });
    document.body.addEventListener("htmx:sseError", function () {
      setConnection("down", "disconnected, retrying");
    });
    document.body.addEventListener("htmx:beforeRequest", function (e) {
      // A paused page keeps its content; so does a region holding the keyboard focus (a field
      // being filled in, a button tabbed to): a swap would throw the focus back to the top.
      var elt = e.detail && e.detail.elt;
      var focused = document.activeElement;
      if (elt && elt.hasAttribute("data-live") &&
          (paused || (focused && focused !== elt && elt.contains(focused)))) {
        e.preventDefault();
      }
    });
    document.body.addEventListener("htmx:afterSettle", function (e) { localise(e.target); });
  });
})();
