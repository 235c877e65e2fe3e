/* dicom-sr viewer: two images of one series compared at the same place, zoom and frame.
 *
 * Static and local: the page embeds its description as JSON (#viewer-data); frames are image
 * files next to the page. No network, no server, no canvas read-back (so file:// works).
 *
 * Model: every layer is drawn on the display grid (width x height, the derived size). A layer
 * whose images are smaller (the source) is shown by pixel replication or by the precomputed
 * bicubic images, as the user chooses. One view transform (centre in display pixels and a zoom
 * relative to "fit") is shared by every canvas, so the views stay in step.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("viewer-data").textContent);
  var root = document.getElementById("viewer");
  var W = data.width, H = data.height, N = data.frames;
  var state = {
    frame: 0, zoom: 1, cx: W / 2, cy: H / 2, left: data.left, right: data.right,
    mode: "side", swipe: 0.5, only: null, flipped: false, resample: "nearest",
    playing: false, draws: 0, measure: null
  };
  var cache = {};  // url -> HTMLImageElement (loading or loaded)
  var order = [];  // urls, oldest first: a long cine keeps only the last CACHE_SIZE images
  var CACHE_SIZE = 96;
  var views = [];  // {canvas, role: "left" | "right" | "swipe"}

  function $(id) { return document.getElementById(id); }

  // ---- images -------------------------------------------------------------------------
  function frameUrl(layer, k) {
    var l = data.layers[layer];
    var set = (state.resample === "bicubic" && l.bicubic) ? l.bicubic : l.frames;
    return set[k] || null;  // no such frame in this layer: the view says so
  }

  function image(url) {
    if (!url) return null;
    var img = cache[url];
    if (!img) {
      img = new Image();
      img.decoding = "async";
      img.onload = function () { img.ready = true; schedule(); };
      img.onerror = function () { img.failed = true; schedule(); };
      img.src = url;
      cache[url] = img;
      order.push(url);
      while (order.length > CACHE_SIZE) { delete cache[order.shift()]; }
    }
    return img;
  }

  function ready(k) {
    var a = image(frameUrl(shownLayer("left"), k)), b = image(frameUrl(shownLayer("right"), k));
    return (!a || a.ready || a.failed) && (!b || b.ready || b.failed);
  }

  function preload(k, count) {
    for (var i = 0; i < count && i < N; i++) {
      var f = (k + i) % N;
      image(frameUrl(state.left, f));
      image(frameUrl(state.right, f));
    }
  }

  // ---- which layer each view shows ----------------------------------------------------
  function shownLayer(role) {
    if (state.only === "a") return state.left;
    if (state.only === "b") return state.right;
    var a = state.left, b = state.right;
    if (state.flipped) { var t = a; a = b; b = t; }
    return role === "right" ? b : a;
  }

  // ---- drawing ------------------------------------------------------------------------
  var pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; drawAll(); });
  }

  function fit(canvas) { return Math.min(canvas.width / W, canvas.height / H); }

  function sizeCanvas(canvas) {
    var r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  }

  function drawLayer(ctx, canvas, layer) {
    var img = image(frameUrl(layer, state.frame));
    var s = fit(canvas) * state.zoom;
    var x = canvas.width / 2 - state.cx * s, y = canvas.height / 2 - state.cy * s;
    if (!img || !img.ready) {
      ctx.fillStyle = "#888";
      ctx.font = Math.round(14 * (window.devicePixelRatio || 1)) + "px sans-serif";
      ctx.fillText(img && img.failed ? "image failed to load" : (img ? "loading..." :
        "no frame " + (state.frame + 1) + " in this series"), 12, 24);
      return;
    }
    // replication: the image grid shown as blocks whenever a display pixel is >= a screen pixel
    var scaleOnScreen = s * W / img.naturalWidth;
    ctx.imageSmoothingEnabled = scaleOnScreen < 1;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(img, x, y, W * s, H * s);
  }

  function niceLength(mm) {
    var steps = [1, 2, 5], p = Math.pow(10, Math.floor(Math.log10(mm)));
    var best = p;
    for (var m = 0.1; m <= 100; m *= 10) {
      for (var i = 0; i < steps.length; i++) { if (steps[i] * p * m <= mm) best = steps[i] * p * m; }
    }
    return best;
  }

  function drawRuler(ctx, canvas, layer) {
    var cal = data.layers[layer].calibration;
    if (!cal) return;
    var s = fit(canvas) * state.zoom, dpr = window.devicePixelRatio || 1;
    var pxPerMmX = s / cal.x, pxPerMmY = s / cal.y;
    var mmX = niceLength(0.25 * canvas.width / pxPerMmX);
    var mmY = niceLength(0.25 * canvas.height / pxPerMmY);
    var lx = mmX * pxPerMmX, ly = mmY * pxPerMmY;
    var x0 = 16 * dpr, y0 = canvas.height - 16 * dpr;
    ctx.save();
    ctx.strokeStyle = "#ff0";
    ctx.fillStyle = "#ff0";
    ctx.lineWidth = 2 * dpr;
    ctx.beginPath();
    ctx.moveTo(x0, y0); ctx.lineTo(x0 + lx, y0);
    ctx.moveTo(x0, y0); ctx.lineTo(x0, y0 - ly);
    ctx.stroke();
    ctx.font = Math.round(12 * dpr) + "px sans-serif";
    ctx.fillText(fmtMm(mmX), x0 + lx + 4 * dpr, y0 + 4 * dpr);
    ctx.fillText(fmtMm(mmY), x0 + 4 * dpr, y0 - ly - 4 * dpr);
    ctx.restore();
  }

  // a measurement in display pixels, in mm by one layer's own calibration (null: none)
  function measuredMm(layer) {
    var m = state.measure, cal = data.layers[layer].calibration;
    if (!m || !cal) return null;
    var dx = (m.x1 - m.x0) * cal.x, dy = (m.y1 - m.y0) * cal.y;
    return Math.sqrt(dx * dx + dy * dy);
  }

  function drawMeasure(ctx, canvas, layer) {
    var m = state.measure;
    if (!m) return;
    var s = fit(canvas) * state.zoom, dpr = window.devicePixelRatio || 1;
    var ox = canvas.width / 2 - state.cx * s, oy = canvas.height / 2 - state.cy * s;
    var x0 = ox + m.x0 * s, y0 = oy + m.y0 * s, x1 = ox + m.x1 * s, y1 = oy + m.y1 * s;
    ctx.save();
    ctx.strokeStyle = "#0f0";
    ctx.fillStyle = "#0f0";
    ctx.lineWidth = 2 * dpr;
    ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
    var mm = measuredMm(layer);
    ctx.font = Math.round(13 * dpr) + "px sans-serif";
    ctx.fillText(mm === null ? "no calibration" : mm.toFixed(2) + " mm", x1 + 6 * dpr, y1);
    ctx.restore();
  }

  function measureText() {
    if (!state.measure) return "";
    return [state.left, state.right].map(function (k, i) {
      var mm = measuredMm(k);
      return (i ? "B " : "A ") + (mm === null ? "no calibration" : mm.toFixed(2) + " mm");
    }).join(", ");
  }

  function fmtMm(mm) { return (mm >= 1 ? mm.toFixed(0) : mm.toFixed(1)) + " mm"; }

  function drawView(v) {
    var canvas = v.canvas;
    if (canvas.offsetParent === null) return;  // hidden
    sizeCanvas(canvas);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (v.role !== "swipe") {
      var layer = shownLayer(v.role);
      drawLayer(ctx, canvas, layer);
      drawRuler(ctx, canvas, layer);
      drawMeasure(ctx, canvas, layer);
      v.label.textContent = data.layers[layer].label;
      return;
    }
    var a = shownLayer("left"), b = shownLayer("right");
    var split = Math.round(state.swipe * canvas.width);
    drawLayer(ctx, canvas, a);
    ctx.save();
    ctx.beginPath();
    ctx.rect(split, 0, canvas.width - split, canvas.height);
    ctx.clip();
    ctx.fillStyle = "#000";
    ctx.fillRect(split, 0, canvas.width - split, canvas.height);
    drawLayer(ctx, canvas, b);
    ctx.restore();
    ctx.fillStyle = "#0ff";
    ctx.fillRect(split - 1, 0, 2, canvas.height);
    drawRuler(ctx, canvas, a);
    drawMeasure(ctx, canvas, a);
    v.label.textContent = "left of the line: " + data.layers[a].label +
      "; right: " + data.layers[b].label;
  }

  function drawAll() {
    views.forEach(drawView);
    state.draws++;
    root.setAttribute("data-frame", String(state.frame));
    root.setAttribute("data-zoom", state.zoom.toFixed(4));
    $("frame-label").textContent = "frame " + (state.frame + 1) + " / " + N;
    $("frame").value = String(state.frame);
    $("measure").textContent = measureText();
  }

  // ---- interaction: zoom, pan, reset (shared by every view) ----------------------------
  function attach(v) {
    var c = v.canvas, drag = null;
    c.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = c.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
      var mx = (e.clientX - r.left) * dpr - c.width / 2, my = (e.clientY - r.top) * dpr - c.height / 2;
      var s = fit(c) * state.zoom;
      var px = state.cx + mx / s, py = state.cy + my / s;
      var z = state.zoom * Math.pow(1.0015, -e.deltaY);
      state.zoom = Math.min(64, Math.max(0.25, z));
      s = fit(c) * state.zoom;
      state.cx = px - mx / s;
      state.cy = py - my / s;
      schedule();
    }, { passive: false });
    function displayPoint(e) {
      var r = c.getBoundingClientRect(), dpr = window.devicePixelRatio || 1, s = fit(c) * state.zoom;
      return {
        x: state.cx + ((e.clientX - r.left) * dpr - c.width / 2) / s,
        y: state.cy + ((e.clientY - r.top) * dpr - c.height / 2) / s
      };
    }
    c.addEventListener("pointerdown", function (e) {
      if (e.button !== 0) return;
      drag = { x: e.clientX, y: e.clientY, measure: e.shiftKey };
      if (e.shiftKey) {
        var p = displayPoint(e);
        state.measure = { x0: p.x, y0: p.y, x1: p.x, y1: p.y };
        schedule();
      }
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", function (e) {
      if (!drag) return;
      if (drag.measure) {
        var p = displayPoint(e);
        state.measure.x1 = p.x;
        state.measure.y1 = p.y;
        schedule();
        return;
      }
      var dpr = window.devicePixelRatio || 1, s = fit(c) * state.zoom;
      state.cx -= (e.clientX - drag.x) * dpr / s;
      state.cy -= (e.clientY - drag.y) * dpr / s;
      drag = { x: e.clientX, y: e.clientY };
      schedule();
    });
    c.addEventListener("pointerup", function () { drag = null; });
    c.addEventListener("pointercancel", function () { drag = null; });
    c.addEventListener("dblclick", function () { reset(); });
  }

  function reset() { state.zoom = 1; state.cx = W / 2; state.cy = H / 2; schedule(); }

  // ---- cine ---------------------------------------------------------------------------
  var timer = null;
  function setFrame(k) {
    state.frame = ((k % N) + N) % N;
    preload(state.frame, 4);
    schedule();
  }

  function play(on) {
    state.playing = on && N > 1;
    $("play").textContent = state.playing ? "Pause" : "Play";
    if (timer) { window.clearInterval(timer); timer = null; }
    if (!state.playing) return;
    preload(state.frame, 12);
    timer = window.setInterval(function () {
      var next = (state.frame + 1) % N;
      preload(next, 12);
      if (ready(next)) setFrame(next);  // both sides on the same frame: wait for both
    }, 1000 / (data.fps || 20));
  }

  // ---- controls -----------------------------------------------------------------------
  function option(select, k) {
    var o = document.createElement("option");
    o.value = String(k);
    o.textContent = data.layers[k].label;
    select.appendChild(o);
  }

  function setMode(mode) {
    state.mode = mode;
    root.setAttribute("data-mode", mode);
    $("mode-side").classList.toggle("active", mode === "side");
    $("mode-swipe").classList.toggle("active", mode === "swipe");
    schedule();
  }

  function setOnly(only) {
    state.only = only;
    $("shown").textContent = only === "a" ? "showing A only" : only === "b" ? "showing B only" :
      state.flipped ? "A and B swapped" : "";
    schedule();
  }

  function provenance() {
    var box = $("provenance");
    box.textContent = "";
    [state.left, state.right].forEach(function (k, i) {
      var l = data.layers[k];
      var h = document.createElement("h3");
      h.textContent = (i ? "B: " : "A: ") + l.label;
      box.appendChild(h);
      var rows = l.provenance || {};
      var keys = Object.keys(rows);
      if (!keys.length) {
        var p = document.createElement("p");
        p.textContent = l.kind === "source" ? "As stored in the source series." : "No provenance recorded.";
        box.appendChild(p);
        return;
      }
      var t = document.createElement("table");
      keys.forEach(function (key) {
        var tr = t.insertRow(), th = document.createElement("th");
        th.textContent = key;
        tr.appendChild(th);
        tr.insertCell().textContent = rows[key];
      });
      box.appendChild(t);
    });
  }

  function init() {
    views = [
      { canvas: $("view-left"), label: $("label-left"), role: "left" },
      { canvas: $("view-right"), label: $("label-right"), role: "right" },
      { canvas: $("view-swipe"), label: $("label-swipe"), role: "swipe" }
    ];
    views.forEach(attach);
    var sa = $("layer-a"), sb = $("layer-b");
    data.layers.forEach(function (_, k) { option(sa, k); option(sb, k); });
    sa.value = String(state.left);
    sb.value = String(state.right);
    sa.addEventListener("change", function () { state.left = +sa.value; provenance(); schedule(); });
    sb.addEventListener("change", function () { state.right = +sb.value; provenance(); schedule(); });
    var resample = $("resample");
    if (!data.layers.some(function (l) { return l.bicubic; })) {
      resample.querySelector("option[value=bicubic]").disabled = true;  // none written
    }
    resample.addEventListener("change", function () { state.resample = resample.value; schedule(); });
    $("mode-side").addEventListener("click", function () { setMode("side"); });
    $("mode-swipe").addEventListener("click", function () { setMode("swipe"); });
    $("swipe").addEventListener("input", function (e) { state.swipe = e.target.value / 1000; schedule(); });
    var fr = $("frame");
    fr.max = String(N - 1);
    fr.addEventListener("input", function () { play(false); setFrame(+fr.value); });
    $("play").addEventListener("click", function () { play(!state.playing); });
    $("reset").addEventListener("click", reset);
    if (N < 2) root.classList.add("single");
    document.addEventListener("keydown", function (e) {
      if (e.target && e.target.tagName === "SELECT") return;
      var k = e.key;
      if (k === "f" || k === "F") { state.flipped = !state.flipped; setOnly(state.only); }
      else if (k === "1" || k === "a") setOnly("a");
      else if (k === "2" || k === "b") setOnly("b");
      else if (k === "0" || k === "Escape") { state.flipped = false; state.measure = null; setOnly(null); }
      else if (k === " ") { play(!state.playing); }
      else if (k === "ArrowRight") { play(false); setFrame(state.frame + 1); }
      else if (k === "ArrowLeft") { play(false); setFrame(state.frame - 1); }
      else if (k === "r" || k === "R") reset();
      else if (k === "s" || k === "S") setMode(state.mode === "side" ? "swipe" : "side");
      else return;
      e.preventDefault();
    });
    window.addEventListener("resize", schedule);
    provenance();
    setMode("side");
    setFrame(0);
  }

  // for scripts and tests: the state, and whether the shown frame's images have arrived
  window.dicomSrViewer = {
    state: state, data: data, setFrame: setFrame, play: play, reset: reset,
    ready: function () { return ready(state.frame); }
  };
  init();
})();
