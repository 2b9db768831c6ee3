/* Opens the channel's own cashier (Alipay wap, WeChat Pay H5) as soon as the buyer has chosen to pay
 * there. The checkout form's answer lands on KnowPay's payment page first, because the CSP lets forms go
 * only to KnowPay; replace() keeps this step out of the history, so "back" returns to the checkout. */
(function () {
  "use strict";
  var link = document.querySelector("#payment-panel [data-pay-link]");
  if (link && link.href) {
    window.location.replace(link.href);
  }
})();
