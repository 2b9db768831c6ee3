/* Analytics dashboards: draws each [data-chart] panel with the vendored Apache ECharts from the rows
 * the page carries in its data-rows attribute (the same rows as the panel's JSON export). Tooltips are
 * drawn on the canvas (renderMode "richText"), so nothing needs an inline style the CSP would refuse.
 * Without script the page still shows every figure in its cards, tables and downloads. */
(function () {
  "use strict";

  var root = document.querySelector("[data-analytics]");
  if (!root || !window.echarts) {
    return;
  }
  var L = JSON.parse(root.getAttribute("data-labels"));
  var exponent = Number(root.getAttribute("data-exponent"));
  var currency = root.getAttribute("data-currency").toUpperCase();
  var COLORS = ["#1d4ed8", "#0f766e", "#c2410c", "#7c3aed", "#be123c", "#4d7c0f", "#0369a1", "#a16207"];

  function money(v) {
    return v === null || v === undefined ? null : v / Math.pow(10, exponent);
  }
  function moneyText(v) {
    return v === null || v === undefined ? "—" : Number(v).toLocaleString(undefined, {
      minimumFractionDigits: exponent, maximumFractionDigits: exponent});
  }
  function percent(v) {
    return v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%";
  }
  function channelName(c) {
    return L.channels[c] || c;
  }
  function kindName(k) {
    return L.kinds[k] || k;
  }
  function unique(rows, key) {
    var seen = [];
    rows.forEach(function (r) {
      if (seen.indexOf(r[key]) < 0) {
        seen.push(r[key]);
      }
    });
    return seen;
  }
  function periods(rows) {
    return unique(rows, "period");
  }
  function sumBy(rows, key) {
    return rows.reduce(function (total, r) { return total + (r[key] || 0); }, 0);
  }
  function axis(name, formatter) {
    var a = {type: "value", name: name, nameTextStyle: {align: "left"}, axisLabel: {hideOverlap: true}};
    if (formatter) {
      a.axisLabel.formatter = formatter;
    }
    return a;
  }
  function moneyAxis() {
    return axis(currency, moneyText);
  }
  function categories(data) {
    return {type: "category", data: data, axisLabel: {hideOverlap: true}};
  }
  /* One series per value of `groupKey` (a channel, a kind), each over every period. */
  function grouped(rows, groupKey, valueOf, extra, nameOf) {
    var x = periods(rows);
    return unique(rows, groupKey).map(function (group) {
      var byPeriod = {};
      rows.forEach(function (r) {
        if (r[groupKey] === group) {
          byPeriod[r.period] = r;
        }
      });
      var series = {name: (nameOf || String)(group), type: "line", showSymbol: false,
                    data: x.map(function (p) { return byPeriod[p] ? valueOf(byPeriod[p]) : null; })};
      return Object.assign(series, extra || {});
    });
  }
  function base(x, yAxis, series, options) {
    return Object.assign({
      color: COLORS, animation: false,
      legend: {type: "scroll", top: 0},
      grid: {left: 8, right: 8, top: 40, bottom: 8, containLabel: true},
      tooltip: {trigger: "axis"},
      xAxis: categories(x), yAxis: yAxis, series: series
    }, options || {});
  }

  var builders = {
    gmv: function (rows) {
      return base(periods(rows), [moneyAxis(), axis(L.orders)], [
        {name: L.gross, type: "line", showSymbol: false, data: rows.map(function (r) { return money(r.gross); })},
        {name: L.net, type: "line", showSymbol: false, data: rows.map(function (r) { return money(r.net); })},
        {name: L.orders, type: "bar", yAxisIndex: 1, data: rows.map(function (r) { return r.orders; })}
      ]);
    },
    gmv_by_channel: function (rows) {
      return base(periods(rows), [moneyAxis()],
                  grouped(rows, "channel", function (r) { return money(r.net); }, {type: "bar", stack: "all"},
                          channelName));
    },
    gmv_by_kind: function (rows) {
      return base(periods(rows), [moneyAxis()],
                  grouped(rows, "kind", function (r) { return money(r.net); }, {type: "bar", stack: "all"}, kindName));
    },
    net_revenue: function (rows) {
      var parts = ["creator_earnings", "platform_fees", "channel_fees"].filter(function (key) {
        return rows.some(function (r) { return r[key]; });
      });
      return base(periods(rows), [moneyAxis()], parts.map(function (key) {
        return {name: L[key], type: "bar", stack: "kept", data: rows.map(function (r) { return money(r[key]); })};
      }).concat([{name: L.refunded, type: "line", showSymbol: false,
                  data: rows.map(function (r) { return money(r.refunded); })}]));
    },
    success_by_channel: function (rows) {
      return base(periods(rows), [axis(L.rate, percent)], grouped(rows, "channel", function (r) {
        return r.attempts ? r.rate : null;
      }, {connectNulls: true}, channelName), {tooltip: {trigger: "axis", valueFormatter: percent}});
    },
    success_by_method: function (rows) {
      return base(periods(rows), [axis(L.rate, percent)], grouped(rows, "method", function (r) {
        return r.attempts ? r.rate : null;
      }, {connectNulls: true}, function (m) { return m || L.no_method; }),
      {tooltip: {trigger: "axis", valueFormatter: percent}});
    },
    failure_reasons: function (rows) {
      var top = rows.slice(0, 8).reverse();
      var names = top.map(function (r) { return channelName(r.channel) + " · " + r.failure_code; });
      return base(names, null, [{name: L.failures, type: "bar", data: top.map(function (r) { return r.failures; })}],
                  {xAxis: {type: "value"}, yAxis: categories(names), legend: {show: false}});
    },
    time_to_pay_by_channel: function (rows) {
      var median = grouped(rows, "channel", function (r) { return r.p50_seconds; }, {connectNulls: true},
                           function (c) { return channelName(c) + " " + L.p50; });
      var slow = grouped(rows, "channel", function (r) { return r.p90_seconds; },
                         {connectNulls: true, lineStyle: {type: "dashed"}},
                         function (c) { return channelName(c) + " " + L.p90; });
      return base(periods(rows), [axis(L.seconds)], median.concat(slow));
    },
    funnel: function (rows) {
      var steps = [[L.views, sumBy(rows, "views")], [L.funnel_orders, sumBy(rows, "orders")],
                   [L.attempted, sumBy(rows, "attempted")], [L.paid, sumBy(rows, "paid")]];
      return {
        color: COLORS, animation: false, tooltip: {trigger: "item"},
        series: [{type: "funnel", sort: "none", left: 8, right: 8, top: 8, bottom: 8, minSize: "8%",
                  label: {position: "inside", formatter: "{b}: {c}"},
                  data: steps.map(function (s) { return {name: s[0], value: s[1]}; })}]
      };
    },
    heatmap: function (rows) {
      var cells = rows.map(function (r) { return [r.hour, r.weekday - 1, r.orders]; });
      var most = Math.max.apply(null, [1].concat(cells.map(function (c) { return c[2]; })));
      var hours = [];
      for (var h = 0; h < 24; h += 1) {
        hours.push(String(h));
      }
      return {
        animation: false, tooltip: {trigger: "item"},
        grid: {left: 8, right: 8, top: 8, bottom: 56, containLabel: true},
        xAxis: {type: "category", data: hours, splitArea: {show: true}, axisLabel: {interval: 2}},
        yAxis: {type: "category", data: L.weekdays, inverse: true, splitArea: {show: true}},
        visualMap: {min: 0, max: most, calculable: true, orient: "horizontal", left: "center", bottom: 0,
                    itemHeight: 120, inRange: {color: ["#f5f7fa", "#93c5fd", "#1d4ed8"]}},
        series: [{name: L.orders, type: "heatmap", data: cells}]
      };
    },
    refunds: function (rows) {
      return base(periods(rows), [axis("", percent)], [
        {name: L.refund_rate, type: "line", showSymbol: false, data: rows.map(function (r) { return r.rate; })},
        {name: L.amount_rate, type: "line", showSymbol: false, data: rows.map(function (r) { return r.amount_rate; })}
      ], {tooltip: {trigger: "axis", valueFormatter: percent}});
    },
    arpu: function (rows) {
      return base(periods(rows), [moneyAxis(), axis(L.buyers)], [
        {name: L.arpu, type: "line", showSymbol: false, data: rows.map(function (r) { return money(r.arpu); })},
        {name: L.buyers, type: "bar", yAxisIndex: 1, data: rows.map(function (r) { return r.buyers; })}
      ]);
    },
    repeat_purchase: function (rows) {
      return base(periods(rows), [axis("", percent)], [
        {name: L.repeat_rate, type: "line", showSymbol: false, data: rows.map(function (r) { return r.rate; })}
      ], {tooltip: {trigger: "axis", valueFormatter: percent}});
    },
    mrr: function (rows) {
      return base(periods(rows), [moneyAxis(), axis(L.members)], [
        {name: L.mrr, type: "line", showSymbol: false, data: rows.map(function (r) { return money(r.mrr); })},
        {name: L.new_members, type: "bar", yAxisIndex: 1, data: rows.map(function (r) { return r.new_members; })},
        {name: L.churned_members, type: "bar", yAxisIndex: 1,
         data: rows.map(function (r) { return -r.churned_members; })}
      ]);
    },
    coins: function (rows) {
      return base(periods(rows), [axis("")], ["issued", "spent", "refunded_to_wallet"].map(function (key) {
        return {name: L[key], type: "bar", data: rows.map(function (r) { return r[key]; })};
      }));
    }
  };

  var drawn = [];
  Array.prototype.forEach.call(root.querySelectorAll("[data-chart]"), function (element) {
    var build = builders[element.getAttribute("data-chart")];
    if (!build) {
      return;
    }
    var option = build(JSON.parse(element.getAttribute("data-rows")));
    // Drawn on the canvas: HTML tooltips carry inline styles, which the Content-Security-Policy refuses.
    option.tooltip = Object.assign({confine: true}, option.tooltip || {}, {renderMode: "richText"});
    var chart = window.echarts.init(element, null, {renderer: "canvas"});
    chart.setOption(option);
    element.setAttribute("data-drawn", "true");
    drawn.push(chart);
  });
  var pending = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(pending);
    pending = window.setTimeout(function () {
      drawn.forEach(function (chart) { chart.resize(); });
    }, 150);
  });
})();
