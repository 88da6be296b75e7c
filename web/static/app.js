// Live incident updates over server-sent events. No inline scripts (CSP).
(function () {
  var live = document.getElementById("live");
  if (!live || !window.EventSource) { return; }
  var table = document.getElementById("incidents");
  var es = new EventSource(live.getAttribute("data-events"));
  es.onopen = function () { live.textContent = "Live updates: on"; live.setAttribute("data-state", "on"); };
  es.onerror = function () { live.textContent = "Live updates: reconnecting…"; live.setAttribute("data-state", "off"); };
  es.addEventListener("incident", function (msg) {
    var ev;
    try { ev = JSON.parse(msg.data); } catch (e) { return; }
    var body = table.tBodies[0];
    var empty = body.querySelector("tr.empty");
    if (empty) { empty.remove(); }
    var row = body.querySelector('tr[data-id="' + CSS.escape(ev.id) + '"]');
    if (!row) {
      row = document.createElement("tr");
      row.setAttribute("data-id", ev.id);
      for (var k = 0; k < 5; k++) { row.appendChild(document.createElement("td")); }
      var a = document.createElement("a");
      a.href = "/incidents/" + encodeURIComponent(ev.id);
      row.cells[0].appendChild(a);
      row.cells[2].className = "state";
      body.insertBefore(row, body.firstChild);
    }
    // textContent only: incident text is data, never markup.
    row.cells[0].firstChild.textContent = ev.title;
    row.cells[1].textContent = ev.severity;
    row.cells[2].textContent = ev.state;
    row.cells[4].textContent = "just now";
  });
})();

// Live plan progress on the incident page: active plans are re-read from the
// API every 1.5 s; step states and the plan status are updated as text, and
// the page reloads once a plan stops or completes (to show results and the
// next buttons).
(function () {
  var plans = document.querySelectorAll("[data-plan-live]");
  if (!plans.length || !window.fetch) { return; }
  plans.forEach(function (el) {
    var id = el.getAttribute("data-plan");
    var before = null;
    var timer = setInterval(function () {
      fetch("/api/v1/plans/" + encodeURIComponent(id), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (!body || !body.plan) { return; }
          var p = body.plan;
          var status = document.querySelector('[data-plan-status="' + CSS.escape(id) + '"]');
          if (status) { status.textContent = p.status; }
          var states = p.steps.map(function (s) { return s.state; }).join(",");
          p.steps.forEach(function (s) {
            var cell = document.querySelector('[data-step-state="' + CSS.escape(id + "-" + (s.index + 1)) + '"]');
            if (cell) { cell.textContent = s.state; }
          });
          if (p.status !== "active" || (before !== null && before !== states && states.indexOf("sent") < 0 && states.indexOf("probing") < 0)) {
            clearInterval(timer);
            window.location.reload();
          }
          before = states;
        })
        .catch(function () {});
    }, 1500);
  });
})();
