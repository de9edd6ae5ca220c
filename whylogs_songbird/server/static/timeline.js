/* songbird local observatory, timeline page: heatmap clicks, the column filter, the form's selects,
   and the series charts (plotly) of one column, drawn from the page's own JSON API. */
(function () {
  "use strict";

  var CATEGORY_COLORS = { DRIFT: "#c23b32", POSSIBLE_DRIFT: "#e0a030", NO_DRIFT: "#2e7d4f" };
  var FONT = { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 11, color: "#3a4252" };

  function escapeText(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  /* Text from the profiles shown as plain text (the pages' |plain filter): every control or
     direction character as a visible <U+XXXX>, the whole isolated (first strong isolate). */
  var CONTROL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]/g;
  function visibleText(text) {
    return "\u2068" + String(text).replace(CONTROL, function (c) {
      return "<U+" + ("000" + c.charCodeAt(0).toString(16).toUpperCase()).slice(-4) + ">";
    }) + "\u2069";
  }

  /* -- heatmap: a cell opens the comparison of the reference and its bucket ------------------- */

  function setUpHeatmap(table) {
    var heads = Array.prototype.slice.call(table.querySelectorAll("thead th.hm-bucket"));
    table.addEventListener("click", function (event) {
      var cell = event.target.closest("td");
      if (!cell || !table.contains(cell) || cell.classList.contains("hA")) { return; }
      var index = Array.prototype.indexOf.call(cell.parentNode.children, cell) - 1;
      var head = heads[index];
      if (head && head.getAttribute("data-link")) {
        window.location.assign(head.getAttribute("data-link"));
      }
    });
    Array.prototype.forEach.call(table.querySelectorAll("tbody th.hm-name"), function (th) {
      th.style.cursor = "pointer";
      th.addEventListener("click", function () { showColumn(th.parentNode.getAttribute("data-column")); });
    });
  }

  /* -- the column filter (as on the profiles pages) ------------------------------------------ */

  function setUpFilter(input) {
    var rows = Array.prototype.slice.call(document.querySelectorAll("#heatmap tbody tr"));
    var names = rows.map(function (r) { return (r.getAttribute("data-column") || "").toLowerCase(); });
    var onlyDrifted = document.getElementById("only-drifted");
    var count = document.getElementById("filter-count");
    var timer = null;

    function apply() {
      var query = input.value.trim().toLowerCase();
      var drifted = onlyDrifted && onlyDrifted.checked;
      var shown = 0;
      rows.forEach(function (row, i) {
        var category = row.getAttribute("data-drift");
        var visible = names[i].indexOf(query) !== -1 &&
          (!drifted || category === "DRIFT" || category === "POSSIBLE_DRIFT");
        row.hidden = !visible;
        if (visible) { shown++; }
      });
      if (count) { count.textContent = shown + " of " + rows.length + " columns"; }
    }

    input.addEventListener("input", function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(apply, 120);
    });
    if (onlyDrifted) { onlyDrifted.addEventListener("change", apply); }
    if (input.value) { apply(); }
  }

  /* -- the form: a changed select shows the new view ----------------------------------------- */

  function setUpForm(form) {
    Array.prototype.forEach.call(form.querySelectorAll("select"), function (select) {
      select.addEventListener("change", function () {
        var segment = form.querySelector("#segment");
        if (segment && !segment.value) { segment.disabled = true; } // no empty segment= in the URL
        form.submit();
      });
    });
    form.addEventListener("submit", function () {
      var segment = form.querySelector("#segment");
      if (segment && !segment.value) { segment.disabled = true; }
    });
  }

  /* -- series charts -------------------------------------------------------------------------- */

  var timeline = null;
  var current = null;

  function bucketDates(doc) {
    return doc.buckets.map(function (b) { return new Date(b.start).toISOString(); });
  }

  function layout(extra) {
    var base = {
      height: 230,
      margin: { l: 56, r: 56, t: 8, b: 36 },
      showlegend: true,
      legend: { orientation: "h", y: -0.25, font: { size: 10 } },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: FONT,
      hovermode: "x unified",
      xaxis: { type: "date", gridcolor: "#eef0f4" },
      yaxis: { gridcolor: "#e6e9ef", automargin: true }
    };
    Object.keys(extra || {}).forEach(function (k) { base[k] = extra[k]; });
    return base;
  }

  // A log axis cannot show p = 0 (a drift so large the test's p-value underflows): such days are
  // drawn at this floor with a downward triangle and "p < 1e-16", never left out as if missing.
  var P_FLOOR = 1e-16;

  function floored(values) {
    var out = { y: [], below: [], text: [] };
    (values || []).forEach(function (v) {
      var low = v !== null && v !== undefined && v < P_FLOOR;
      out.y.push(low ? P_FLOOR : v);
      out.below.push(low);
      out.text.push(low ? "p < 1e-16" : (v === null || v === undefined ? "" : "p = " + Number(v).toPrecision(3)));
    });
    return out;
  }

  function hasValues(values) {
    return values && values.some(function (v) { return v !== null && v !== undefined; });
  }

  function note(el, text) {
    el.textContent = "";
    el.classList.add("chart-empty");
    el.textContent = text;
  }

  function drawSeries(name) {
    var series = timeline.columns[name];
    if (!series) { return; }
    var x = bucketDates(timeline);
    var config = { displayModeBar: false, responsive: true };
    Array.prototype.forEach.call(document.querySelectorAll("[data-series]"), function (el) {
      el.classList.remove("chart-empty");
      var kind = el.getAttribute("data-series");
      if (window.Plotly) { window.Plotly.purge(el); }
      el.textContent = "";
      if (!window.Plotly) { note(el, "plotly.js did not load: charts are unavailable."); return; }
      if (kind === "band") {
        if (!hasValues(series.mean)) { note(el, "No distribution: " + visibleText(name) + " is not numeric."); return; }
        window.Plotly.newPlot(el, [
          { x: x, y: series.p95, type: "scatter", mode: "lines", line: { width: 0 }, name: "p95", showlegend: false },
          { x: x, y: series.p5, type: "scatter", mode: "lines", line: { width: 0 }, fill: "tonexty",
            fillcolor: "rgba(59,111,182,0.18)", name: "p5–p95" },
          { x: x, y: series.p50, type: "scatter", mode: "lines", line: { color: "#3b6fb6", dash: "dot", width: 1.5 }, name: "median" },
          { x: x, y: series.mean, type: "scatter", mode: "lines+markers", line: { color: "#1d2433", width: 2 },
            marker: { size: 4 }, name: "mean" }
        ], layout(), config);
      } else if (kind === "count") {
        var nullMax = Math.max.apply(null, series.null_fraction.map(function (v) { return v || 0; }));
        window.Plotly.newPlot(el, [
          { x: x, y: series.count, type: "bar", name: "count", marker: { color: "#9bb5db" } },
          { x: x, y: series.null_fraction, type: "scatter", mode: "lines+markers", name: "null fraction",
            yaxis: "y2", line: { color: "#c23b32" }, marker: { size: 4 } }
        ], layout({
          yaxis: { title: { text: "rows", standoff: 4 }, gridcolor: "#e6e9ef", rangemode: "tozero" },
          yaxis2: { title: { text: "null fraction", standoff: 4 }, overlaying: "y", side: "right",
            range: [0, Math.max(0.01, nullMax * 1.15)], tickformat: ".1%", showgrid: false }
        }), config);
      } else if (kind === "drift") {
        if (!hasValues(series.drift_p_value) && !hasValues(series.previous_drift_p_value)) {
          note(el, "Nothing to compare: no reference, or whylogs cannot score " + visibleText(name) + ".");
          return;
        }
        var colors = series.drift_category.map(function (c) { return CATEGORY_COLORS[c] || "#9aa3b5"; });
        var vsReference = floored(series.drift_p_value);
        var vsPrevious = floored(series.previous_drift_p_value);
        var anyBelow = vsReference.below.concat(vsPrevious.below).some(function (b) { return b; });
        var lines = [0.05, 0.15].map(function (y) {
          return { type: "line", xref: "paper", x0: 0, x1: 1, y0: y, y1: y, line: { color: "#c9ced8", dash: "dash", width: 1 } };
        });
        if (anyBelow) {
          lines.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: P_FLOOR, y1: P_FLOOR,
            line: { color: "#c23b32", dash: "dot", width: 1 } });
        }
        window.Plotly.newPlot(el, [
          { x: x, y: vsReference.y, type: "scatter", mode: "lines+markers", name: "vs reference",
            customdata: series.drift_category, text: vsReference.text,
            marker: { color: colors, size: vsReference.below.map(function (b) { return b ? 10 : 7; }),
              symbol: vsReference.below.map(function (b) { return b ? "triangle-down" : "circle"; }) },
            line: { color: "#7a8397", width: 1 },
            hovertemplate: "%{text} (%{customdata})<extra>vs reference</extra>" },
          { x: x, y: vsPrevious.y, type: "scatter", mode: "lines", name: "vs previous bucket", text: vsPrevious.text,
            hovertemplate: "%{text}<extra>vs previous bucket</extra>",
            line: { color: "#3b6fb6", width: 1, dash: "dot" } }
        ], layout({
          yaxis: { type: "log", title: { text: "p-value", standoff: 4 }, gridcolor: "#e6e9ef", exponentformat: "power" },
          shapes: lines,
          annotations: anyBelow ? [{ xref: "paper", x: 1, xanchor: "right", y: Math.log10(P_FLOOR), yanchor: "bottom",
            text: "p < 1e-16 (p = 0) drawn here", showarrow: false, font: { size: 10, color: "#c23b32" } }] : []
        }), config);
      } else if (kind === "items") {
        var traces = [];
        if (hasValues(series.distinct)) {
          traces.push({ x: x, y: series.distinct, type: "scatter", mode: "lines+markers", name: "distinct (est.)",
            line: { color: "#1d2433" }, marker: { size: 4 } });
        }
        Object.keys(series.top_items || {}).forEach(function (value) {
          traces.push({ x: x, y: series.top_items[value], type: "scatter", mode: "lines", name: escapeText(visibleText(value)),
            yaxis: "y2" });
        });
        if (!traces.length) { note(el, "No distinct count or frequent items for " + visibleText(name) + "."); return; }
        window.Plotly.newPlot(el, traces, layout({
          yaxis: { title: { text: "distinct", standoff: 4 }, gridcolor: "#e6e9ef", rangemode: "tozero" },
          yaxis2: { title: { text: "share of values", standoff: 4 }, overlaying: "y", side: "right",
            rangemode: "tozero", tickformat: ".0%", showgrid: false }
        }), config);
      }
    });
  }

  function showColumn(name) {
    if (!name) { return; }
    var select = document.getElementById("series-column");
    if (select) { select.value = name; }
    Array.prototype.forEach.call(document.querySelectorAll("#heatmap tbody tr"), function (row) {
      row.classList.toggle("hm-picked", row.getAttribute("data-column") === name);
    });
    current = name;
    if (timeline) { drawSeries(name); }
  }

  function setUpSeries(meta) {
    var select = document.getElementById("series-column");
    if (select) {
      select.addEventListener("change", function () { showColumn(select.value); });
      current = select.value;
    }
    var request = new XMLHttpRequest();
    request.open("GET", meta.getAttribute("data-api"));
    request.responseType = "json";
    request.onload = function () {
      if (request.status !== 200 || !request.response) {
        Array.prototype.forEach.call(document.querySelectorAll("[data-series]"), function (el) {
          note(el, "The series could not be loaded (HTTP " + request.status + ").");
        });
        return;
      }
      timeline = request.response;
      showColumn(current);
    };
    request.send();
  }

  function start() {
    var table = document.getElementById("heatmap");
    if (table) { setUpHeatmap(table); }
    var filter = document.getElementById("column-filter");
    if (filter) { setUpFilter(filter); }
    var form = document.getElementById("timeline-form");
    if (form) { setUpForm(form); }
    var meta = document.getElementById("timeline-meta");
    if (meta) { setUpSeries(meta); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
