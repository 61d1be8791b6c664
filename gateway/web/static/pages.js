// The pages' only script: it keeps figures current without a reload. Every page works without it.
// What it inserts is either HTML the service rendered (and escaped) or plain text, never markup built here.
(function () {
  "use strict";

  function fetchFragment(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } }).then(function (response) {
      // A session that ended sends the sign-in page: reload, so the browser follows it as a whole page.
      if (response.redirected) {
        window.location.reload();
        return null;
      }
      return response.ok ? response.text() : null;
    });
  }

  // The admin dashboard polls its live part (figures, alerts, health, latest movements).
  document.querySelectorAll("[data-live]").forEach(function (region) {
    var url = region.getAttribute("data-live");
    var seconds = Number(region.getAttribute("data-live-seconds")) || 5;
    var busy = false;
    window.setInterval(function () {
      if (busy || document.hidden) {
        return;
      }
      busy = true;
      fetchFragment(url)
        .then(function (html) {
          if (html !== null) {
            region.innerHTML = html;
          }
        })
        .catch(function () {})
        .then(function () {
          busy = false;
        });
    }, seconds * 1000);
  });

  // The user's page hears its balance over server-sent events; the first event is the balance on connect.
  document.querySelectorAll("[data-stream]").forEach(function (root) {
    var source = new EventSource(root.getAttribute("data-stream"));
    var heard = 0;
    source.addEventListener("balance", function (event) {
      var figures = JSON.parse(event.data);
      Object.keys(figures).forEach(function (name) {
        root.querySelectorAll('[data-figure="' + name + '"]').forEach(function (element) {
          element.setAttribute("data-value", String(figures[name][0]));
          element.textContent = figures[name][1];
        });
      });
      heard += 1;
      if (heard > 1) {
        root.querySelectorAll("[data-refresh]").forEach(function (region) {
          fetchFragment(region.getAttribute("data-refresh")).then(function (html) {
            if (html !== null) {
              region.innerHTML = html;
            }
          });
        });
      }
      root.setAttribute("data-stream-state", "open");
    });
    window.addEventListener("pagehide", function () {
      source.close();
    });
  });
})();
