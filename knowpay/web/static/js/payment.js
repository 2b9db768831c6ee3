/* The payment page follows its payment live: Server-Sent Events from
 * /checkout/payments/<id>/events, or polling /status every few seconds when the stream is not
 * available (an old browser, a proxy that buffers). When the payment changes (every change raises
 * its version: a new status, or an approved risk review giving a payment still "processing" its QR
 * code), the server's own HTML for the new state replaces the panel, so the buyer never has to reload. Also counts down the
 * time left to pay. No inline script: the Content-Security-Policy forbids it. */
(function () {
  "use strict";

  var POLL_MS = 3000;
  var MAX_STREAM_ERRORS = 3;

  var panel = document.getElementById("payment-panel");
  if (!panel) {
    return;
  }

  var source = null;
  var pollTimer = null;
  var streamErrors = 0;
  var heardVersion = 0; // the newest version of the payment heard of (every change raises it)
  var shownVersion = 0; // the version the panel shows
  var loading = false;

  function state() {
    return panel.querySelector(".payment-state");
  }

  function readShown() {
    var el = state();
    shownVersion = el ? Number(el.getAttribute("data-version")) || 0 : 0;
    return el && el.getAttribute("data-final") === "true";
  }

  function stop() {
    if (source) {
      source.close();
      source = null;
    }
    if (pollTimer) {
      window.clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  function focusTitle() {
    var title = panel.querySelector(".state-title");
    if (title) {
      title.setAttribute("tabindex", "-1");
      title.focus();
    }
  }

  function refreshPanel() {
    if (loading || heardVersion <= shownVersion) {
      return;
    }
    loading = true;
    fetch(panel.getAttribute("data-panel-url"), {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
      cache: "no-store"
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("panel " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        panel.innerHTML = html;
        var final = readShown();
        startCountdowns();
        focusTitle();
        if (final) {
          stop();
        }
      })
      .catch(function () {
        /* try again at the next event or poll */
      })
      .then(function () {
        loading = false;
        if (heardVersion > shownVersion && !(state() && state().getAttribute("data-final") === "true")) {
          refreshPanel();
        }
      });
  }

  function heard(version, final) {
    heardVersion = Math.max(heardVersion, Number(version) || 0);
    if (final && source) {
      source.close(); // the server closes after a final status; do not let the browser reconnect
      source = null;
    }
    refreshPanel();
  }

  function poll() {
    fetch(panel.getAttribute("data-status-url"), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store"
    })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        if (body && body.status) {
          heard(body.version, body.final);
        }
      })
      .catch(function () {});
  }

  function startPolling() {
    if (!pollTimer) {
      pollTimer = window.setInterval(poll, POLL_MS);
      poll();
    }
  }

  function startStream() {
    if (!window.EventSource) {
      startPolling();
      return;
    }
    source = new EventSource(panel.getAttribute("data-events-url"));
    source.addEventListener("status", function (event) {
      streamErrors = 0;
      try {
        var body = JSON.parse(event.data);
        heard(body.version, body.final);
      } catch (e) {
        /* a malformed event: the next one or the poll corrects it */
      }
    });
    source.addEventListener("error", function () {
      streamErrors += 1;
      if (streamErrors >= MAX_STREAM_ERRORS || (source && source.readyState === EventSource.CLOSED)) {
        if (source) {
          source.close();
          source = null;
        }
        startPolling();
      }
    });
  }

  /* Countdown to the order's expiry, e.g. "14:59"; at zero it says so and asks the server. */
  var countdownTimer = null;

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function tick() {
    var nodes = panel.querySelectorAll("[data-countdown]");
    if (!nodes.length) {
      window.clearInterval(countdownTimer);
      countdownTimer = null;
      return;
    }
    Array.prototype.forEach.call(nodes, function (node) {
      var left = Math.floor((Date.parse(node.getAttribute("data-countdown")) - Date.now()) / 1000);
      if (isNaN(left)) {
        return;
      }
      if (left <= 0) {
        if (!node.hasAttribute("data-done")) {
          node.setAttribute("data-done", "");
          node.textContent = node.getAttribute("data-expired-text") || "0:00";
          poll();
        }
        return;
      }
      var hours = Math.floor(left / 3600);
      var minutes = Math.floor((left % 3600) / 60);
      var text = pad(minutes) + ":" + pad(left % 60);
      node.textContent = hours ? hours + ":" + text : text;
    });
  }

  function startCountdowns() {
    if (!countdownTimer && panel.querySelector("[data-countdown]")) {
      tick();
      countdownTimer = window.setInterval(tick, 1000);
    }
  }

  var finalAlready = readShown();
  heardVersion = shownVersion;
  startCountdowns();
  if (!finalAlready) {
    startStream();
  }
})();
