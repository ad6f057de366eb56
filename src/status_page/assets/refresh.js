// Refreshes the page's <main> without a full reload: fetches the server-rendered fragment every
// data-refresh-seconds and swaps it in. Without JavaScript the page is complete as served.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var state = document.getElementById("refresh-state");
  if (!live || !window.fetch) { return; }
  var url = live.getAttribute("data-refresh-url");
  var seconds = parseInt(live.getAttribute("data-refresh-seconds"), 10) || 10;
  var count = 0;
  function show(text, failed) {
    if (state) { state.textContent = text; state.className = failed ? "refresh failed" : "refresh"; }
  }
  function tick() {
    fetch(url, { cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        count += 1;
        live.setAttribute("data-refresh-count", String(count));
        show("updated " + new Date().toLocaleTimeString() + " · every " + seconds + " s", false);
      })
      .catch(function (error) { show("refresh failed (" + error.message + "), retrying", true); })
      .then(function () { window.setTimeout(tick, seconds * 1000); });
  }
  window.setTimeout(tick, seconds * 1000);
})();
