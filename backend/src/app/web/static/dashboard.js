// The dashboard's only script: live updates without reloading, and a confirmation before a halt.
// Every few seconds it asks /events for a version of what this key can see; when it changed, it fetches the
// page again and swaps its <main>. A form being filled in is never swapped away.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var version = null;
  var busy = false;
  var pending = false;

  function setState(text) {
    var el = document.getElementById("live-state");
    if (el) el.textContent = text;
  }

  function editing() {
    var active = document.activeElement;
    var main = document.getElementById("main");
    if (!active || !main || !main.contains(active)) return false;
    return /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName) && active.type !== "submit";
  }

  function swap() {
    return fetch(window.location.href, {
      headers: { "X-Dashboard-Fragment": "main" },
      credentials: "same-origin",
      redirect: "manual",
    }).then(function (response) {
      if (response.type === "opaqueredirect" || response.status === 401) {
        window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
        return;
      }
      if (!response.ok) return;
      return response.text().then(function (html) {
        var main = document.getElementById("main");
        if (!main) return;
        if (editing()) { pending = true; return; } // the trader started typing meanwhile: shown once they leave
        main.innerHTML = html;
        document.body.dataset.swaps = String(Number(document.body.dataset.swaps || "0") + 1);
        bindConfirmations();
      });
    });
  }

  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch("/events", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        if (!body) { setState("offline: retrying"); return; }
        setState("live");
        var changed = pending || (version !== null && body.version !== version);
        version = body.version;
        pending = changed && editing(); // shown once the form is left
        if (changed && !pending) return swap();
      })
      .catch(function () { setState("offline: retrying"); })
      .then(function () { busy = false; });
  }

  function bindConfirmations() {
    var forms = document.querySelectorAll("form[data-confirm]");
    Array.prototype.forEach.call(forms, function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    bindConfirmations();
    if (document.body.dataset.live !== "on") return;
    poll();
    window.setInterval(poll, POLL_MS);
  });
})();
