// actors dashboard: confirmations for actions, and live updates over server-sent events.
// On each `change` event from /events the page is fetched again and every element marked
// data-live is replaced by its new version (by id) when it differs. No build step, no CDN.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  var source = document.body.getAttribute("data-events");
  if (!source || !window.EventSource || !document.querySelector("[data-live]")) return;
  var dot = document.getElementById("live-dot");
  var busy = false, again = false;

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    document.querySelectorAll("[data-live]").forEach(function (old) {
      var next = old.id && fresh.getElementById(old.id);
      if (!next || next.innerHTML === old.innerHTML) return;
      old.querySelectorAll("details[open][id]").forEach(function (d) {  // keep what was opened
        var same = next.querySelector("#" + CSS.escape(d.id));
        if (same) same.open = true;
      });
      old.replaceWith(document.importNode(next, true));
    });
    document.body.setAttribute("data-updated", String(Date.now()));
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, {credentials: "same-origin", headers: {"X-Live": "1"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html) swap(html); })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; window.setTimeout(refresh, 250); }
      });
  }

  var events = new EventSource(source);
  events.addEventListener("hello", function () { if (dot) dot.className = "dot on"; });
  events.addEventListener("change", refresh);
  events.onerror = function () { if (dot) dot.className = "dot off"; };
})();
