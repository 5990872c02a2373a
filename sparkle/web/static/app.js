// Sparkle dashboard: live updates by server-sent events, confirmations. No libraries.
"use strict";

(function () {
  var body = document.body;
  var page = body.getAttribute("data-page");

  // Buttons with data-confirm ask before their form is sent (no inline handlers: CSP).
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-confirm]") : null;
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(function () { timer = null; fn(); }, ms);
    };
  }

  // -- the runs page: watch the rows shown, refresh the table when one changes ----------
  function runsPage() {
    var holder = document.getElementById("runs-table");
    var source = null;
    function ids() {
      var table = holder.querySelector("table");
      return table ? table.getAttribute("data-ids") : "";
    }
    function connect() {
      if (source) { source.close(); }
      source = new EventSource("/api/runs/changes?ids=" + encodeURIComponent(ids()));
      source.addEventListener("change", refresh);
    }
    var refresh = debounce(function () {
      var before = ids();
      fetch("/runs/table" + window.location.search, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          holder.innerHTML = html;
          if (ids() !== before) { connect(); }
        })
        .catch(function () {});
    }, 250);
    connect();
  }

  // -- the run page: follow the manifest, re-render the parts that changed -------------
  function runPage() {
    var runId = body.getAttribute("data-run-id");
    var log = document.getElementById("live-log");
    var refresh = debounce(function () {
      fetch("/runs/" + encodeURIComponent(runId) + "/live", {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (data) {
          body.setAttribute("data-status", data.status);
          Object.keys(data.blocks).forEach(function (name) {
            var block = document.querySelector('[data-block="' + name + '"]');
            var fresh = data.blocks[name];
            if (block && block.getAttribute("data-version") !== fresh.version) {
              block.innerHTML = fresh.html;
              block.setAttribute("data-version", fresh.version);
            }
          });
        })
        .catch(function () {});
    }, 150);
    var start = body.getAttribute("data-manifest-events") || "0";
    var source = new EventSource("/api/runs/" + encodeURIComponent(runId) + "/events?from=" + start);
    source.addEventListener("manifest", function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      var item = document.createElement("li");
      var when = new Date((event.timestamp || 0) * 1000).toLocaleTimeString();
      item.textContent = when + "  " + (event.stage || "?") + "  " + (event.status || "?") +
        (event.attempt ? " (attempt " + event.attempt + ")" : "") + (event.error ? ": " + event.error : "");
      item.className = "e-" + (event.status || "other");
      log.insertBefore(item, log.firstChild);
      while (log.children.length > 200) { log.removeChild(log.lastChild); }
      refresh();
    });
    source.addEventListener("reset", refresh);
    // (a resume or cancel can change the page without a manifest event reaching it first)
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { refresh(); }
    });
  }

  if (page === "runs") { runsPage(); }
  if (page === "run") { runPage(); }
})();
