// sessiond console: live updates of the sessions view from /v1/events
// (server-sent events, authenticated by the console cookie). Plain JavaScript,
// no dependencies. Without JavaScript the page works; it just does not update.
(function () {
  "use strict";
  var table = document.getElementById("sessions");
  if (!table || !window.EventSource) return;
  var tbody = table.tBodies[0];
  var status = document.getElementById("live-status");
  var stateFilter = table.dataset.state;          // live | ended | all
  var userFilter = table.dataset.user;            // user id, or "" for everyone
  var firstPage = table.dataset.first === "true"; // only the newest page gets new rows
  // The server's clock minus ours, so idle times agree with the server.
  var skew = Number(table.dataset.now) - Date.now();

  var DIALECTS = { commvault: "Commvault", vsphere: "vSphere", native: "native API", "web-console": "web console" };
  var REASONS = {
    logout: "signed out", idle: "idle timeout", absolute: "lifetime reached",
    revoked: "revoked", evicted: "evicted by a newer sign-in"
  };

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function timeText(ms) {
    var d = new Date(ms);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + " UTC";
  }
  function minutesText(ms) {
    var m = Math.floor(Math.max(0, ms) / 60000);
    if (m < 1) return "< 1 min";
    if (m < 60) return m + " min";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }
  function setStatus(text, on) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("on", !!on);
  }

  // Idle time and expiry of a live row, from its data attributes.
  function refresh(tr) {
    if (!tr.classList.contains("live")) return;
    var now = Date.now() + skew;
    var last = Number(tr.dataset.lastAccess);
    var deadline = Math.min(last + Number(tr.dataset.idleTimeout), Number(tr.dataset.expires));
    tr.querySelector(".idle").textContent = "idle " + minutesText(now - last);
    tr.querySelector(".expiry").textContent = timeText(deadline) + " (in " + minutesText(deadline - now) + ")";
  }
  function refreshAll() { Array.prototype.forEach.call(tbody.rows, refresh); }

  function cell(tr, label, cls) {
    var td = document.createElement("td");
    td.dataset.label = label;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function link(td, href, text, cls, aria) {
    var a = document.createElement("a");
    a.href = href;
    a.className = cls;
    a.textContent = text;
    if (aria) a.setAttribute("aria-label", aria);
    td.appendChild(a);
    td.appendChild(document.createTextNode(" "));
  }

  function addRow(s) {
    if (!firstPage || stateFilter === "ended") return;
    if (userFilter && String(s.user.id) !== userFilter) return;
    if (document.getElementById("s-" + s.id)) return;
    var tr = document.createElement("tr");
    tr.id = "s-" + s.id;
    tr.className = "live fresh";
    tr.dataset.userId = s.user.id;
    tr.dataset.lastAccess = Date.parse(s.last_accessed_at);
    tr.dataset.idleTimeout = s.idle_timeout_seconds * 1000;
    tr.dataset.expires = Date.parse(s.expires_at);
    var user = cell(tr, "User", "user");
    user.textContent = s.user.name;
    if (s.current) {
      var b = document.createElement("span");
      b.className = "badge";
      b.textContent = "you";
      user.appendChild(document.createTextNode(" "));
      user.appendChild(b);
    }
    cell(tr, "Host").textContent = s.host;
    var client = cell(tr, "Client");
    client.textContent = s.console_type.name;
    client.title = "console type " + s.console_type.code;
    cell(tr, "Dialect").textContent = DIALECTS[s.dialect] || s.dialect;
    var t = document.createElement("time");
    t.dateTime = s.created_at;
    t.textContent = timeText(Date.parse(s.created_at));
    cell(tr, "Signed in").appendChild(t);
    cell(tr, "Idle", "idle");
    cell(tr, "Expires", "expiry");
    cell(tr, "State", "state").textContent = "live";
    var actions = cell(tr, "Actions", "actions");
    link(actions, "/ui/sessions/" + encodeURIComponent(s.id) + "/end", "End session",
      "button danger small", "End session of " + s.user.name + " from " + s.host);
    link(actions, "/ui/users/" + encodeURIComponent(s.user.id) + "/end-sessions",
      "End all of " + s.user.name, "button secondary small");
    tbody.insertBefore(tr, tbody.firstChild);
    refresh(tr);
    var empty = document.getElementById("empty");
    if (empty) empty.hidden = true;
  }

  function touch(d) {
    var tr = document.getElementById("s-" + d.session_id);
    if (!tr) return;
    tr.dataset.lastAccess = Date.parse(d.last_accessed_at);
    refresh(tr);
  }

  function end(d) {
    var tr = document.getElementById("s-" + d.session_id);
    if (!tr || !tr.classList.contains("live")) return;
    tr.classList.remove("live");
    tr.classList.add("ended");
    tr.querySelector(".idle").textContent = "\u2014";
    tr.querySelector(".expiry").textContent = "ended " + timeText(Date.parse(d.ended_at));
    tr.querySelector(".state").textContent = "ended: " + (REASONS[d.end_reason] || d.end_reason);
    tr.querySelector(".actions").textContent = "";
  }

  function on(name, fn) {
    source.addEventListener(name, function (e) {
      try { fn(JSON.parse(e.data)); } catch (err) { /* a malformed event changes nothing */ }
    });
  }

  var source = new EventSource("/v1/events");
  on("ready", function () { setStatus("Live updates on", true); });
  on("session.started", function (d) { addRow(d.session); });
  on("session.touched", touch);
  on("session.ended", end);
  on("resync", function () { setStatus("Some updates were missed: reload the page to catch up.", false); });
  source.onerror = function () {
    setStatus(source.readyState === EventSource.CLOSED ? "Live updates stopped: reload the page." :
      "Live updates paused: reconnecting…", false);
  };
  setInterval(refreshAll, 15000);
})();
