// The live signal list: new signals arrive over server-sent events and go on top of the
// table, built with textContent only (nothing from a signal is ever parsed as HTML).
"use strict";
(function () {
  const table = document.getElementById("signals");
  const state = document.getElementById("live-state");
  if (!table || !window.EventSource) { return; }
  const body = table.tBodies[0];
  const columns = ["received_at", "station", "account", "event", "sia", "zone", "name", "category", "flags"];
  const source = new EventSource(table.dataset.stream);
  source.onopen = function () { state.textContent = "live"; state.className = "live on"; };
  source.onerror = function () { state.textContent = "reconnecting…"; state.className = "live"; };
  source.addEventListener("signal", function (message) {
    const s = JSON.parse(message.data);
    if (body.querySelector('tr[data-seq="' + s.seq + '"]')) { return; }
    const row = document.createElement("tr");
    row.dataset.seq = String(s.seq);
    row.className = "cat-" + (s.category || "none") + " fresh";
    for (const name of columns) {
      const cell = document.createElement("td");
      let value = s[name];
      if (name === "received_at") { value = value.slice(11, 23); }
      if (name === "flags") { value = value.join(", "); }
      if (name === "account") {
        const link = document.createElement("a");
        link.href = "/signals/" + encodeURIComponent(s.id);
        link.textContent = value || "";
        cell.appendChild(link);
      } else {
        cell.textContent = value == null ? "" : String(value);
      }
      row.appendChild(cell);
    }
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > 500) { body.deleteRow(-1); }
  });
})();
