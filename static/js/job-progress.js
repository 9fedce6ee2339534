/* Bulk job page: follow the job through GET /api/v1/jobs/{id}/ (same-origin session) until it is over.
   Each poll asks only for the keys that ended since the last one (?after=<next_after>), so its answer
   stays small however many keys the job has; while nothing changes, polls come less and less often.
   Progressive enhancement: without this file the page shows the state it was rendered with and a Refresh link. */
(function () {
  "use strict";

  var POLL_MS = 1000;
  var MAX_POLL_MS = 15000;

  function setText(root, field, text) {
    var el = root.querySelector('[data-field="' + field + '"]');
    if (el && el.textContent !== String(text)) el.textContent = text;
  }

  function etaText(job) {
    if (job.eta_seconds === null) return "finished";
    return "about " + Math.round(job.eta_seconds) + " s left at the quotas' pace";
  }

  function link(href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function showResults(results) {
    var table = document.getElementById("job-results");
    if (!table) return;
    results.forEach(function (item) {
      var row = table.querySelector('tr[data-position="' + item.position + '"]');
      if (!row) return;
      setText(row, "state", item.state);
      setText(row, "message", item.message || "");
      var outcome = row.querySelector('[data-field="outcome"]');
      if (outcome && item.approval_request) {
        outcome.textContent = "";
        outcome.appendChild(link("/approvals/" + item.approval_request + "/", "approval request"));
        outcome.appendChild(document.createTextNode(" (" + (item.approval_state || "gone") + ")"));
      } else {
        setText(row, "outcome", item.outcome || "—");
      }
      var keyCell = row.querySelector('[data-field="key"]');
      if (item.key && keyCell && !keyCell.querySelector("a")) {
        keyCell.textContent = "";
        keyCell.appendChild(link("/keys/" + item.key + "/", item.name || item.key));
      }
    });
  }

  function start() {
    var panel = document.getElementById("job");
    if (!panel) return;
    document.querySelectorAll(".no-js-only").forEach(function (el) { el.hidden = true; });
    if (panel.getAttribute("data-finished") === "true") return;
    var url = panel.getAttribute("data-poll-url");
    var after = parseInt(panel.getAttribute("data-after"), 10) || 0;
    var bar = document.getElementById("job-progress");
    var wait = POLL_MS;

    function poll() {
      fetch(url + "?after=" + after, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (job) {
          var settled = job.settled;
          if (bar) {
            bar.max = job.total;
            bar.value = settled;
            bar.textContent = settled + " of " + job.total;
          }
          setText(panel, "state", job.state);
          setText(panel, "done", job.done);
          setText(panel, "failed", job.failed);
          setText(panel, "awaiting_approval", job.awaiting_approval);
          setText(panel, "total", job.total);
          setText(panel, "eta", etaText(job));
          showResults(job.results);
          var changed = job.next_after !== after;
          after = job.next_after;
          if (job.more_results) {
            window.setTimeout(poll, 0); // a backlog of results: fetch the next page at once
          } else if (["DONE", "CANCELLED", "FAILED"].indexOf(job.state) === -1) {
            // Back off while nothing ends (a job waiting for its quota slots, or a paused worker).
            wait = changed ? POLL_MS : Math.min(wait * 2, MAX_POLL_MS);
            window.setTimeout(poll, wait);
          } else {
            panel.setAttribute("data-finished", "true");
          }
        })
        .catch(function () {
          wait = Math.min(wait * 2, MAX_POLL_MS);
          window.setTimeout(poll, Math.max(wait, POLL_MS * 5));
        });
    }
    window.setTimeout(poll, POLL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
