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
