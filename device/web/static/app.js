// SpikeBottleNet device page: draw or upload an image, POST it to classify?spikes=true, show the answer.
// Plain browser JavaScript, no libraries; every URL is relative to the page, so it works offline and
// behind a path prefix.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const status = $("status");
  const apiKeyRow = $("api-key-row");
  const preview = $("preview");
  // The last request answered, for whoever wants to look at it (the browser test reads it): the image sent and
  // the answer.
  window.sbnLast = null;

  // ---------- the drawing pad ----------
  let ink = "white";
  let drawn = false;  // a stroke since the pad was last cleared: an untouched pad has nothing to classify
  const background = () => (ink === "white" ? "#000" : "#fff");
  function clearPad() {
    ctx.fillStyle = background();
    ctx.fillRect(0, 0, pad.width, pad.height);
    drawn = false;
  }
  clearPad();

  let last = null;
  function point(event) {
    const box = pad.getBoundingClientRect();
    return { x: (event.clientX - box.left) * (pad.width / box.width),
             y: (event.clientY - box.top) * (pad.height / box.height) };
  }
  function stroke(from, to) {
    ctx.strokeStyle = ink === "white" ? "#fff" : "#000";
    ctx.lineWidth = pad.width / 11;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
  }
  pad.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    last = point(event);
    stroke(last, last);  // a tap leaves a dot
    drawn = true;
  });
  pad.addEventListener("pointermove", (event) => {
    if (last === null) return;
    event.preventDefault();
    const p = point(event);
    stroke(last, p);
    last = p;
  });
  const endStroke = () => { last = null; };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  $("clear").addEventListener("click", clearPad);
  $("ink").addEventListener("change", (event) => {
    // swap the colours of what is drawn so far: the drawing stays, its polarity flips
    ink = event.target.value;
    const image = ctx.getImageData(0, 0, pad.width, pad.height);
    const d = image.data;
    for (let i = 0; i < d.length; i += 4) {
      d[i] = 255 - d[i]; d[i + 1] = 255 - d[i + 1]; d[i + 2] = 255 - d[i + 2];
    }
    ctx.putImageData(image, 0, 0);
  });

  $("classify-drawing").addEventListener("click", () => {
    if (!drawn) {  // not sent: the device would only answer that a blank image holds nothing
      clearAnswer();
      setStatus("The pad is empty: draw a digit on it first.");
      return;
    }
    pad.toBlob((blob) => classify(blob, "drawing.png"), "image/png");
  });

  // ---------- uploads ----------
  // The preview shows once the browser has decoded the file, so one it cannot show (not an image) leaves no
  // broken-image sliver; the device says what is wrong with it.
  preview.addEventListener("load", () => { preview.hidden = false; });
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    preview.hidden = true;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    classify(file, file.name);
  });

  // ---------- the request ----------
  if (document.body.dataset.apiKeyRequired === "true") apiKeyRow.hidden = false;

  function setStatus(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  // An answer shown stays only as long as it answers the last image: an error or an empty pad takes it away.
  function clearAnswer() {
    $("result").hidden = true;
  }

  function showError(text) {
    clearAnswer();
    setStatus(text, true);
  }

  async function classify(blob, filename) {
    const form = new FormData();
    form.append("file", blob, filename);
    const headers = {};
    const key = $("api-key").value;
    if (key) headers["X-API-Key"] = key;
    const button = $("classify-drawing");
    button.disabled = true;
    setStatus("classifying…");
    try {
      const response = await fetch("classify?spikes=true", { method: "POST", headers, body: form });
      let body;
      try { body = await response.json(); } catch (e) { body = { detail: response.statusText }; }
      if (!response.ok) {
        if (response.status === 401) apiKeyRow.hidden = false;
        showError(`${response.status}: ${body.detail || response.statusText}`);
        return;
      }
      window.sbnLast = { upload: blob, result: body };
      render(body);
      setStatus(`answered in ${fmt(body.latency_ms.total, 1)} ms`);
    } catch (e) {
      showError(`request failed: ${e}`);
    } finally {
      button.disabled = false;
    }
  }

  // ---------- rendering ----------
  function fmt(x, digits) {
    return Number(x).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }
  function fmtBytes(n) { return `${Number(n).toLocaleString("en-US")} B`; }
  function fmtEnergy(mj) { return `${Number(mj).toPrecision(3)} mJ`; }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // rows: [{name, value, text, id, cls}]; scale: value -> fraction of the track
  function bars(container, rows, scale) {
    container.replaceChildren();
    for (const r of rows) {
      container.append(el("span", { class: "name" }, r.name));
      const track = el("div", { class: "track" });
      const fill = el("div", { class: `fill ${r.cls || ""}` });
      fill.style.width = `${Math.max(0, Math.min(1, scale(r.value))) * 100}%`;
      track.append(fill);
      container.append(track);
      const value = el("span", { class: "value", "data-value": String(r.value) }, r.text);
      if (r.id) value.id = r.id;
      container.append(value);
    }
  }

  function render(r) {
    $("result").hidden = false;
    // a blank input has no label: say so instead of a class at some probability
    const label = $("label");
    label.textContent = r.blank ? "blank: nothing to classify" : r.label;
    label.classList.toggle("blank", Boolean(r.blank));
    $("probability").textContent = r.blank ? "" : `${fmt(100 * r.probability, 1)} %`;
    const uncertain = $("uncertain");
    if (typeof r.uncertain === "boolean") {
      uncertain.hidden = !r.uncertain;
      // a blank input's score is that of no class in particular: not shown
      uncertain.textContent = typeof r.uncertainty_score === "number" && !r.blank
        ? `uncertain (score ${fmt(r.uncertainty_score, 2)})` : "uncertain";
    } else {
      uncertain.hidden = true;
    }
    const note = $("model-note");
    note.hidden = !r.model.note;
    note.textContent = r.model.note || "";
    $("model-line").textContent = `${r.arch}, split after ${r.split_point_name}, T = ${r.time_steps}, ` +
      `codec ${r.codec}, model ${r.model.fingerprint.slice(0, 12)}`;

    bars($("top5"), r.top5.map((c) => ({ name: c.label, value: c.probability, text: `${fmt(100 * c.probability, 1)} %` })),
         (v) => v);

    const byteRows = [
      { name: "spikes sent", value: r.transmitted_bytes, text: fmtBytes(r.transmitted_bytes), id: "transmitted-bytes",
        cls: "sent" },
      { name: "gRPC request", value: r.message_bytes, text: fmtBytes(r.message_bytes), id: "message-bytes", cls: "sent" },
      { name: "float32 feature", value: r.float32_feature_bytes, text: fmtBytes(r.float32_feature_bytes),
        id: "float32-bytes", cls: "ann" },
      { name: "image file", value: r.image_bytes, text: fmtBytes(r.image_bytes), id: "image-bytes", cls: "ann" },
    ];
    const maxBytes = Math.max(...byteRows.map((b) => b.value));
    bars($("bytes"), byteRows, (v) => Math.log10(v + 1) / Math.log10(maxBytes + 1));
    const sent = r.transmitted_bytes;
    const versus = (n, what) => {
      const ratio = n >= sent ? n / sent : sent / n;
      return `${fmt(ratio, ratio >= 10 ? 0 : 1)}× ${n >= sent ? "smaller" : "larger"} than ${what}`;
    };
    $("bytes-ratio").textContent = `The spikes sent are ${versus(r.float32_feature_bytes, "the float32 feature")} ` +
      `and ${versus(r.image_bytes, "the image file")}.`;

    const e = r.energy;
    const energyRows = [
      { name: "device, 45 nm CMOS", value: e.device_45nm_mj, text: fmtEnergy(e.device_45nm_mj), id: "energy-45nm" },
      { name: "device, ROLLS chip", value: e.device_rolls_mj, text: fmtEnergy(e.device_rolls_mj), id: "energy-rolls" },
      { name: "ANN baseline, 45 nm", value: e.ann_baseline_45nm_mj, text: fmtEnergy(e.ann_baseline_45nm_mj),
        id: "energy-ann", cls: "ann" },
    ];
    const maxEnergy = Math.max(...energyRows.map((b) => b.value)) || 1;
    bars($("energy"), energyRows, (v) => v / maxEnergy);

    renderLatency(r.latency_ms);
    renderSpikes(r.spikes);
  }

  function renderLatency(l) {
    const parts = [
      { name: "device", value: l.device, color: "var(--device)" },
      { name: "network", value: l.network, color: "var(--network)" },
      { name: "edge", value: l.edge, color: "var(--edge)" },
    ].filter((p) => typeof p.value === "number");
    const counted = parts.reduce((s, p) => s + Math.max(0, p.value), 0);
    parts.push({ name: "other (HTTP, queueing)", value: Math.max(0, l.total - counted), color: "var(--other)" });
    const stack = $("latency");
    const legend = $("latency-legend");
    stack.replaceChildren();
    legend.replaceChildren();
    for (const p of parts) {
      const seg = el("div", { title: `${p.name}: ${fmt(p.value, 1)} ms` });
      seg.style.width = `${(100 * Math.max(0, p.value)) / (l.total || 1)}%`;
      seg.style.background = p.color;
      stack.append(seg);
      const item = el("span", { id: `latency-${p.name.split(" ")[0]}` });
      const swatch = el("i");
      swatch.style.background = p.color;
      item.append(swatch, `${p.name} ${fmt(p.value, 1)}`);
      legend.append(item);
    }
    legend.append(el("span", { id: "latency-total" }, `total ${fmt(l.total, 1)} ms`));
  }

  // spikes: {shape: [T, C, H, W], bits: base64 of numpy.packbits (most significant bit first)}
  function renderSpikes(spikes) {
    const box = $("spikes");
    box.replaceChildren();
    if (!spikes) {
      $("spike-summary").textContent = "";
      return;
    }
    const [T, C, H, W] = spikes.shape;
    const raw = atob(spikes.bits);
    const bit = (i) => (raw.charCodeAt(i >> 3) >> (7 - (i & 7))) & 1;
    const cell = Math.max(1, Math.floor(64 / Math.max(H, W)));
    const table = el("table");
    const head = el("tr");
    head.append(el("th"));
    for (let c = 0; c < C; c++) head.append(el("th", {}, `c${c + 1}`));
    table.append(head);
    let total = 0;
    for (let t = 0; t < T; t++) {
      const row = el("tr");
      row.append(el("th", {}, `t${t + 1}`));
      for (let c = 0; c < C; c++) {
        const canvas = el("canvas", { width: W, height: H, class: "spike-map" });
        canvas.style.width = `${W * cell}px`;
        canvas.style.height = `${H * cell}px`;
        const g = canvas.getContext("2d");
        const image = g.createImageData(W, H);
        let count = 0;
        const base = ((t * C + c) * H) * W;
        for (let i = 0; i < H * W; i++) {
          const on = bit(base + i);
          count += on;
          const v = on ? 255 : 24;
          image.data[4 * i] = v; image.data[4 * i + 1] = v; image.data[4 * i + 2] = v; image.data[4 * i + 3] = 255;
        }
        g.putImageData(image, 0, 0);
        canvas.title = `time step ${t + 1}, channel ${c + 1}: ${count} of ${H * W} fired`;
        total += count;
        const td = el("td");
        td.append(canvas);
        row.append(td);
      }
      table.append(row);
    }
    box.append(table);
    const n = T * C * H * W;
    $("spike-summary").textContent =
      `(${T} × ${C} × ${H} × ${W} = ${n.toLocaleString("en-US")} bits, ${total.toLocaleString("en-US")} spikes, ` +
      `${fmt((100 * total) / n, 1)} % fired)`;
    box.dataset.spikes = String(total);
  }

  // ---------- is the edge there? ----------
  fetch("readyz").then(async (response) => {
    const body = await response.json().catch(() => ({}));
    const line = $("readiness");
    if (response.ok) {
      line.textContent = `Edge ready: ${body.arch}, split after ${body.split_point_name}.`;
    } else {
      line.textContent = `Edge not ready: ${body.detail || response.status}.`;
      line.classList.add("error");
    }
  }).catch(() => {});
})();
