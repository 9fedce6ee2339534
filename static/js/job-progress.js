/* Bulk job page: follow the job through GET /api/v1/jobs/{id}/ (same-origin session) until it is over.
   Progressive enhancement: without this file the page shows the state it was rendered with and a Refresh link. */
(function () {
  "use strict";

  var POLL_MS = 1000;

  function setText(root, field, text) {
    var el = root.querySelector('[data-field="' + field + '"]');
    if (el && el.textContent !== String(text)) el.textContent = text;
  }

  function etaText(job) {
    if (job.eta_seconds === null) return "finished";
    return "about " + Math.round(job.eta_seconds) + " s left at the quotas' pace";
  }

  function showResults(results) {
    var table = document.getElementById("job-results");
    if (!table) return;
    results.forEach(function (item) {
      var row = table.querySelector('tr[data-position="' + item.position + '"]');
      if (!row) return;
      setText(row, "state", item.state);
      setText(row, "outcome", item.outcome || "—");
      setText(row, "message", item.message || "");
      var keyCell = row.querySelector('[data-field="key"]');
      if (item.key && keyCell && !keyCell.querySelector("a")) {
        var link = document.createElement("a");
        link.href = "/keys/" + item.key + "/";
        link.textContent = item.name || item.key;
        keyCell.textContent = "";
        keyCell.appendChild(link);
      }
    });
  }

  function start() {
    var panel = document.getElementById("job");
    if (!panel) return;
    document.querySelectorAll(".no-js-only").forEach(function (el) { el.hidden = true; });
    if (panel.getAttribute("data-finished") === "true") return;
    var url = panel.getAttribute("data-poll-url");
    var bar = document.getElementById("job-progress");

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (job) {
          var settled = job.done + job.failed;
          if (bar) {
            bar.max = job.total;
            bar.value = settled;
            bar.textContent = settled + " of " + job.total;
          }
          setText(panel, "state", job.state);
          setText(panel, "done", job.done);
          setText(panel, "failed", job.failed);
          setText(panel, "total", job.total);
          setText(panel, "eta", etaText(job));
          showResults(job.results);
          if (["DONE", "CANCELLED", "FAILED"].indexOf(job.state) === -1) {
            window.setTimeout(poll, POLL_MS);
          } else {
            panel.setAttribute("data-finished", "true");
          }
        })
        .catch(function () { window.setTimeout(poll, POLL_MS * 5); });
    }
    window.setTimeout(poll, POLL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
