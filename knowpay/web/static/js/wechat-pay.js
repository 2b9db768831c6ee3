/* WeChat Pay inside WeChat's own browser (JSAPI). The payment's parameters, signed by KnowPay's server,
 * are handed to WeixinJSBridge.invoke("getBrandWCPayRequest", ...): the bridge is WeChat's browser's own
 * object, nothing is loaded from elsewhere. Its answer is only shown: the payment's status still comes
 * from the server (payment.js), as WeChat asks, since "ok" is not proof of payment. When no bridge appears
 * (not really WeChat, or a WeChat without it), the buyer is taken on to the QR code. No inline script:
 * the Content-Security-Policy forbids it. */
(function () {
  "use strict";

  var BRIDGE_WAIT_MS = 4000;
  var OK = "get_brand_wcpay_request:ok";
  var CANCEL = "get_brand_wcpay_request:cancel";

  var panel = document.getElementById("payment-panel");
  if (!panel) {
    return;
  }

  function bridge() {
    var found = window.WeixinJSBridge;
    return found && typeof found.invoke === "function" ? found : null;
  }

  /* Run `then` once the bridge is there (WeChat fires WeixinJSBridgeReady when it injects it late), or
   * `otherwise` when it has not come within BRIDGE_WAIT_MS. */
  function whenBridge(then, otherwise) {
    if (bridge()) {
      then();
      return;
    }
    var settled = false;
    function ready() {
      if (!settled && bridge()) {
        settled = true;
        then();
      }
    }
    document.addEventListener("WeixinJSBridgeReady", ready, false);
    window.setTimeout(function () {
      document.removeEventListener("WeixinJSBridgeReady", ready, false);
      if (!settled) {
        settled = true;
        otherwise();
      }
    }, BRIDGE_WAIT_MS);
  }

  /* Show the message for WeChat's answer (ok, cancel, fail) and hide the others. */
  function say(answer) {
    Array.prototype.forEach.call(panel.querySelectorAll("[data-jsapi-said]"), function (node) {
      node.hidden = node.getAttribute("data-jsapi-said") !== answer;
    });
    var button = panel.querySelector("[data-jsapi-pay]");
    if (button && button.parentNode) {
      button.parentNode.hidden = answer === "ok"; // paid: nothing left to press
    }
  }

  function toQrCode() {
    var form = panel.querySelector("[data-jsapi-fallback]");
    if (form) {
      form.submit();
    } else {
      say("fail");
    }
  }

  var paying = false;

  function pay() {
    var holder = panel.querySelector("[data-jsapi-params]");
    if (!holder || paying) {
      return;
    }
    var params;
    try {
      params = JSON.parse(holder.getAttribute("data-jsapi-params"));
    } catch (e) {
      say("fail");
      return;
    }
    paying = true;
    whenBridge(function () {
      bridge().invoke("getBrandWCPayRequest", params, function (result) {
        paying = false;
        var answer = (result && result.err_msg) || "";
        say(answer === OK ? "ok" : answer === CANCEL ? "cancel" : "fail");
      });
    }, function () {
      paying = false;
      toQrCode();
    });
  }

  function payButton(node) {
    for (; node && node !== panel; node = node.parentNode) {
      if (node.hasAttribute && node.hasAttribute("data-jsapi-pay")) {
        return node;
      }
    }
    return null;
  }

  /* On the panel, not the button: payment.js replaces the panel's content when the payment changes. */
  panel.addEventListener("click", function (event) {
    if (payButton(event.target)) {
      event.preventDefault();
      pay();
    }
  });

  /* Arriving from the checkout (?open=1), WeChat Pay opens at once; a reload or "back" does not reopen it. */
  if (/[?&]open=1(&|$)/.test(window.location.search)) {
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", window.location.pathname);
    }
    pay();
  }
})();
