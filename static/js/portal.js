/* BYOK Portal: progressive enhancement only. Every page works without this file. */
(function () {
  "use strict";

  /* Copy buttons: <button data-copy="element-id" hidden>. Hidden until JS can make them work. */
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try {
      document.execCommand("copy");
    } finally {
      document.body.removeChild(area);
    }
    return Promise.resolve();
  }

  function setupCopyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) return;
      var label = button.querySelector(".copy-label") || button;
      var original = label.textContent;
      button.hidden = false;
      button.addEventListener("click", function () {
        copyText(source.textContent.trim()).then(
          function () { flash(label, "Copied", original); },
          function () { flash(label, "Copy failed — select the text", original); }
        );
      });
    });
  }

  function flash(label, text, original) {
    label.textContent = text;
    var live = document.getElementById("copy-status");
    if (live) live.textContent = text;
    window.setTimeout(function () { label.textContent = original; }, 2500);
  }

  /* Confirmation dialogs: <a href="confirmation page" data-dialog="dialog-id">. Without JS the link opens
     the confirmation page, which carries the same form and the same consequence text. */
  function setupDialogs() {
    document.querySelectorAll("a[data-dialog]").forEach(function (link) {
      var dialog = document.getElementById(link.getAttribute("data-dialog"));
      if (!dialog || typeof dialog.showModal !== "function") return;
      link.setAttribute("aria-haspopup", "dialog");
      link.addEventListener("click", function (event) {
        event.preventDefault();
        dialog.showModal();
        var first = dialog.querySelector("input, select, textarea, button[type=submit]");
        if (first) first.focus();
      });
      dialog.addEventListener("close", function () { link.focus(); });
      dialog.querySelectorAll("[data-close]").forEach(function (button) {
        button.addEventListener("click", function () { dialog.close(); });
      });
      dialog.addEventListener("click", function (event) {
        if (event.target === dialog) dialog.close();  // a click on the backdrop
      });
    });
  }

  /* Forms: a second click on a submit button while the request runs would repeat a KMS operation. */
  function setupSubmitOnce() {
    document.querySelectorAll("form[method=post]").forEach(function (form) {
      if (form.hasAttribute("data-download")) {
        setupDownload(form);
        return;
      }
      form.addEventListener("submit", function () {
        form.querySelectorAll("button[type=submit]").forEach(function (button) {
          window.setTimeout(function () { button.disabled = true; }, 0);
        });
      });
    });
  }

  /* The download form: a plain POST answers with the file and leaves the page as it was, so nobody could tell
     the download happened. With JS the file is fetched, saved, and the page says so in place of the button
     (the button goes: the preparation is used up).
     Any answer that is not the file (a refusal redirects to the key page with the reason) is shown as a page. */
  function setupDownload(form) {
    var status = document.getElementById(form.getAttribute("data-download-status"));
    form.addEventListener("submit", function (event) {
      if (!window.fetch || !status) return;
      event.preventDefault();
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" })
        .then(function (response) {
          var disposition = response.headers.get("Content-Disposition") || "";
          if (!response.ok || disposition.indexOf("attachment") !== 0) {
            window.location.assign(response.url);
            return null;
          }
          return response.blob().then(function (blob) {
            var name = form.getAttribute("data-download");
            var link = document.createElement("a");
            link.href = URL.createObjectURL(blob);
            link.download = name;
            document.body.appendChild(link);
            link.click();
            link.remove();
            button.hidden = true;  // used up; "Back to the key" stays
            status.textContent = "Downloaded " + name + ". The preparation is used up: a new download must be " +
              "prepared again. Unwrap the file and check its KCV with the commands below.";
            status.hidden = false;
            status.focus();
          });
        })
        .catch(function () {
          button.disabled = false;
          status.textContent = "The download failed (no connection?). Try again.";
          status.hidden = false;
        });
    });
  }

  /* The narrow-screen menu: a disclosure button. (Without JS the "Menu" link opens it through :target.) */
  function setupMenu() {
    var toggle = document.querySelector(".menu-toggle");
    var menu = document.getElementById("site-menu");
    if (!toggle || !menu) return;
    document.documentElement.classList.add("js");
    toggle.setAttribute("role", "button");
    toggle.setAttribute("aria-expanded", "false");
    function set(open) {
      menu.classList.toggle("open", open);
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    }
    toggle.addEventListener("click", function (event) {
      event.preventDefault();
      set(!menu.classList.contains("open"));
    });
    toggle.addEventListener("keydown", function (event) {
      if (event.key === " ") { event.preventDefault(); set(!menu.classList.contains("open")); }
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && menu.classList.contains("open")) { set(false); toggle.focus(); }
    });
  }

  /* After a failed submit, take keyboard users straight to the first field in error. */
  function focusFirstError() {
    var invalid = document.querySelector("main [aria-invalid=true]");
    if (invalid) invalid.focus();
  }

  /* Coming back with the browser's Back button must not leave buttons disabled. */
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("button[type=submit][disabled]").forEach(function (button) { button.disabled = false; });
  });

  document.addEventListener("DOMContentLoaded", function () {
    setupCopyButtons();
    setupDialogs();
    setupSubmitOnce();
    setupMenu();
    focusFirstError();
  });
})();
