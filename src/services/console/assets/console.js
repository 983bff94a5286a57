// The operator console's only script. Everything works without it except the live view; with
// it, the list refreshes by itself and the live view follows the events.
"use strict";

// Pages marked data-refresh reload themselves, unless the operator is typing in a form.
(function refresh() {
  const every = Number(document.body.dataset.refresh || 0);
  if (!every) return;
  setInterval(function () {
    const active = document.activeElement;
    const busy = active && ["INPUT", "SELECT", "TEXTAREA"].includes(active.tagName);
    if (!busy) location.reload();
  }, every * 1000);
})();

// Times read as people read them: relative ("2 minutes ago", "in 6 days") in the browser's
// time zone, the exact time on hover. Without the script the exact UTC time shows.
function relative(when) {
  const seconds = Math.round((when.getTime() - Date.now()) / 1000);
  const units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400],
                 ["hour", 3600], ["minute", 60], ["second", 1]];
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return format.format(Math.round(seconds / size), unit);
    }
  }
}
function times(root) {
  root.querySelectorAll("time[datetime]").forEach(function (t) {
    const when = new Date(t.getAttribute("datetime"));
    if (isNaN(when)) return;
    t.title = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    t.textContent = relative(when);
  });
}
times(document);

// The live view: a Server-Sent Events stream of the events as they are published.
(function live() {
  const list = document.getElementById("events");
  if (!list) return;
  const state = document.getElementById("state");
  const form = document.getElementById("filters");
  const toggle = document.getElementById("toggle");
  const held = [];
  let paused = false;
  let source = null;

  function show(text, cls) {
    state.textContent = text;
    state.className = "state " + cls;
  }

  function add(item) {
    const li = document.createElement("li");
    li.textContent = item.line + " ";
    if (item.ref) {
      const a = document.createElement("a");
      a.href = "/conversation?ref=" + encodeURIComponent(item.ref);
      a.textContent = "conversation";
      li.appendChild(a);
    }
    li.dataset.exchange = item.exchange;
    li.dataset.type = item.type;
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 200) list.removeChild(list.lastChild);
  }

  function connect() {
    if (source) source.close();
    const params = new URLSearchParams(new FormData(form));
    source = new EventSource("/live/events?" + params.toString());
    show("connecting…", "reconnecting");
    source.onopen = function () { show("connected", "connected"); };
    source.onerror = function () {
      show("reconnecting…", "reconnecting");
      // A refusal (the broker away: 503) closes the stream for good: try again ourselves.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
    source.addEventListener("event", function (e) {
      const item = JSON.parse(e.data);
      if (paused) held.push(item); else add(item);
    });
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); connect(); });
  toggle.addEventListener("click", function () {
    paused = !paused;
    toggle.textContent = paused ? "Resume" : "Pause";
    if (!paused) while (held.length) add(held.shift());
  });
  connect();
})();
