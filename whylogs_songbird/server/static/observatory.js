/* songbird local observatory: lazy plotly charts, the column filter and the session picker. */
(function () {
  "use strict";

  var MAX_PROFILES = 3;

  /* -- session page: pick up to 3 profiles ------------------------------------------------ */

  function setUpPicker(form) {
    var boxes = Array.prototype.slice.call(form.querySelectorAll('input[type="checkbox"][name="profile"]'));
    var button = document.getElementById("open-selected");
    var note = document.getElementById("pick-count");
    function update() {
      var picked = boxes.filter(function (b) { return b.checked; }).length;
      boxes.forEach(function (b) {
        b.disabled = !b.checked && picked >= MAX_PROFILES;
        var row = b.closest("tr");
        if (row) { row.classList.toggle("picked", b.checked); }
      });
      if (button) {
        button.disabled = picked === 0;
        button.textContent = picked > 1 ? "Compare " + picked + " profiles" : "Open selected";
      }
      if (note) {
        note.textContent = picked === 0
          ? "Pick 1 to " + MAX_PROFILES + " profiles to open them together."
          : picked + " of at most " + MAX_PROFILES + " picked" + (picked >= MAX_PROFILES ? " (the limit)" : "");
      }
    }
    boxes.forEach(function (b) { b.addEventListener("change", update); });
    update();
  }

  /* -- profiles page: charts ---------------------------------------------------------------- */

  function escapeText(text) {
    // plotly renders a few HTML tags in labels: show user values literally
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function sum(values) {
    var total = 0;
    for (var i = 0; i < values.length; i++) { total += values[i]; }
    return total;
  }

  function withAlpha(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + ((n >> 16) & 255) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function histogramTraces(chart, profiles, compare) {
    var edges = chart.edges, centers = [], widths = [];
    for (var i = 0; i + 1 < edges.length; i++) {
      centers.push((edges[i] + edges[i + 1]) / 2);
      widths.push(edges[i + 1] - edges[i]);
    }
    var traces = [];
    chart.counts.forEach(function (counts, p) {
      if (!counts) { return; }
      var total = sum(counts);
      var label = escapeText(profiles[p].label);
      var color = profiles[p].color;
      if (!compare) {
        traces.push({
          type: "bar", x: centers, y: counts, width: widths, name: label,
          marker: { color: color, line: { width: 0 } }, opacity: 0.9,
          hovertemplate: "%{x:.4g}: %{y:,} rows<extra></extra>"
        });
        return;
      }
      // comparisons: one outlined, lightly filled step curve per profile, as a share of its rows
      traces.push({
        type: "scatter", mode: "lines", x: centers, name: label, customdata: counts,
        y: counts.map(function (c) { return total ? (100 * c) / total : 0; }),
        line: { shape: "hvh", width: 2, color: color },
        fill: "tozeroy", fillcolor: withAlpha(color, 0.12),
        hovertemplate: "%{x:.4g}: %{customdata:,} rows (%{y:.1f}%)<extra>" + label + "</extra>"
      });
    });
    return traces;
  }

  function barTraces(chart, profiles, compare) {
    var labels = chart.labels.map(escapeText);
    var traces = [];
    chart.counts.forEach(function (counts, p) {
      if (!counts) { return; }
      var total = chart.totals && chart.totals[p];
      var y = compare && total ? counts.map(function (c) { return (100 * c) / total; }) : counts;
      traces.push({
        type: "bar",
        x: labels,
        y: y,
        customdata: counts,
        name: escapeText(profiles[p].label),
        marker: { color: profiles[p].color },
        hovertemplate: "%{x}: %{customdata:,}" + (compare && total ? " (%{y:.1f}%)" : "") + "<extra>" +
          escapeText(profiles[p].label) + "</extra>"
      });
    });
    return traces;
  }

  function drawChart(el, data) {
    if (el.getAttribute("data-drawn")) { return; }
    el.setAttribute("data-drawn", "1");
    var chart = data.charts[el.getAttribute("data-chart")];
    el.textContent = "";
    if (!chart) {
      el.classList.add("chart-empty");
      el.textContent = "No distribution or frequent items to chart.";
      return;
    }
    var compare = data.profiles.length > 1;
    var traces = chart.kind === "histogram" ? histogramTraces(chart, data.profiles, compare)
      : barTraces(chart, data.profiles, compare);
    var yTitle = compare ? "% of profile" : (chart.kind === "histogram" ? "rows" : "count (est.)");
    var layout = {
      barmode: "group",
      hovermode: compare ? "x unified" : "closest",
      bargap: chart.kind === "histogram" ? 0.02 : 0.2,
      margin: { l: 52, r: 12, t: 8, b: 44 },
      height: 230,
      showlegend: false,
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 11, color: "#3a4252" },
      xaxis: { type: chart.kind === "histogram" ? "linear" : "category", automargin: true, gridcolor: "#eef0f4" },
      yaxis: { title: { text: yTitle, standoff: 6 }, gridcolor: "#e6e9ef", rangemode: "tozero" }
    };
    window.Plotly.newPlot(el, traces, layout, { displayModeBar: false, responsive: true });
  }

  function setUpCharts(dataEl) {
    var data = JSON.parse(dataEl.textContent);
    var charts = Array.prototype.slice.call(document.querySelectorAll("[data-chart]"));
    if (!window.Plotly) {
      charts.forEach(function (el) { el.textContent = "plotly.js did not load: charts are unavailable."; });
      return;
    }
    if ("IntersectionObserver" in window) {
      var observer = new IntersectionObserver(function (entries) {
        entries.forEach(function (entry) {
          if (entry.isIntersecting) {
            observer.unobserve(entry.target);
            drawChart(entry.target, data);
          }
        });
      }, { rootMargin: "300px 0px" });
      charts.forEach(function (el) { observer.observe(el); });
    } else {
      charts.forEach(function (el) {
        el.textContent = "";
        var button = document.createElement("button");
        button.className = "button button-light";
        button.textContent = "Draw chart";
        button.addEventListener("click", function () { drawChart(el, data); });
        el.appendChild(button);
      });
    }
  }

  /* -- profiles page: filter ---------------------------------------------------------------- */

  function setUpFilter(input) {
    var cards = Array.prototype.slice.call(document.querySelectorAll(".column-card"));
    var rows = Array.prototype.slice.call(document.querySelectorAll("#drift-table tbody tr"));
    var names = cards.map(function (c) { return (c.getAttribute("data-column") || "").toLowerCase(); });
    var rowNames = rows.map(function (r) { return (r.getAttribute("data-column") || "").toLowerCase(); });
    var onlyDrifted = document.getElementById("only-drifted");
    var count = document.getElementById("filter-count");
    var timer = null;

    function driftedEnough(el) {
      var category = el.getAttribute("data-drift");
      return category === "DRIFT" || category === "POSSIBLE_DRIFT";
    }

    function apply() {
      var query = input.value.trim().toLowerCase();
      var drifted = onlyDrifted && onlyDrifted.checked;
      var shown = 0;
      cards.forEach(function (card, i) {
        var visible = names[i].indexOf(query) !== -1 && (!drifted || driftedEnough(card));
        card.hidden = !visible;
        if (visible) { shown++; }
      });
      rows.forEach(function (row, i) {
        row.hidden = !(rowNames[i].indexOf(query) !== -1 && (!drifted || driftedEnough(row)));
      });
      if (count) { count.textContent = shown + " of " + cards.length + " columns"; }
    }

    input.addEventListener("input", function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(apply, 120);
    });
    if (onlyDrifted) { onlyDrifted.addEventListener("change", apply); }
    if (input.value) { apply(); }
  }

  function start() {
    var form = document.getElementById("pick-form");
    if (form) { setUpPicker(form); }
    var filter = document.getElementById("column-filter");
    if (filter) { setUpFilter(filter); }
    var dataEl = document.getElementById("chart-data");
    if (dataEl) { setUpCharts(dataEl); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
