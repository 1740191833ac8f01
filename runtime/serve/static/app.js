"use strict";
// The page of `deepfake-edge serve`: everything comes from this service (no CDN),
// the labels come from the bundle (GET /v1/info and each answer), never from here.

const byId = (id) => document.getElementById(id);
const KEY_ITEM = "deepfake-edge-api-key"; // sessionStorage: this tab only, gone when it closes
let labels = null; // the bundle's label order, from /v1/info
let scoreRule = null; // the manipulation score's formula, from /v1/info ("P(fake)", "1 - P(Real)")
let previewUrl = null;
let evidenceAvailable = false; // the bundle has patch_logits: answers carry an evidence map
let positiveLabel = null; // the label evidence maps lean toward

function authHeaders() {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// 401 (no key or a wrong one) or 429 (locked out): forget the key and ask for one, saying why.
function askForKey(status, answer) {
  const hadKey = sessionStorage.getItem(KEY_ITEM) !== null;
  sessionStorage.removeItem(KEY_ITEM);
  byId("key-form").hidden = false;
  const error = byId("key-error");
  error.hidden = !(hadKey || status === 429);
  error.textContent = `${status}: ${answer.message ?? answer.error}`;
  byId("api-key").focus();
}

async function loadInfo() {
  try {
    const response = await fetch("/v1/info", { headers: authHeaders() });
    const info = await response.json();
    if (response.status === 401 || response.status === 429) {
      askForKey(response.status, info);
      byId("model-info").textContent = "waiting for an API key";
      return;
    }
    byId("key-form").hidden = true;
    labels = info.labels;
    scoreRule = info.score ?? null;
    evidenceAvailable = info.evidence === true;
    positiveLabel = info.positive_label;
    const rule = info.threshold === null ? "argmax" : `manipulated if ${scoreRule ?? "P"} ≥ ${info.threshold}`;
    byId("model-info").textContent =
      `model ${info.model ?? "(unnamed)"} · variant ${info.variant} · labels ${info.labels.join(", ")} · decision ${rule}`;
  } catch (err) {
    byId("model-info").textContent = `could not load model information (${err})`;
  }
}

function showError(message) {
  const box = byId("error");
  box.textContent = message;
  box.hidden = false;
  byId("result").dataset.state = "error";
}

function render(answer, roundTripMs) {
  const order = labels ?? Object.keys(answer.scores);
  const list = byId("bars");
  list.replaceChildren();
  for (const label of order) {
    const score = answer.scores[label];
    const item = document.createElement("li");
    item.dataset.label = label;
    item.dataset.score = String(score); // the exact value, for scripts and tests
    if (label === answer.label) item.classList.add("chosen");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(score * 100).toFixed(2)}%`; // CSSOM: allowed by the page's CSP
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(score * 100).toFixed(1)}%`;
    item.append(name, track, pct);
    list.append(item);
  }
  byId("decision").textContent = answer.label;
  const score = byId("score");
  if (typeof answer.score === "number") {
    score.textContent = `manipulation score ${scoreRule ?? ""} = ${(answer.score * 100).toFixed(1)}%`;
    score.dataset.score = String(answer.score); // the exact value, for scripts and tests
  } else {
    score.textContent = "";
    delete score.dataset.score;
  }
  byId("latency").textContent =
    `server ${answer.latency_ms.toFixed(1)} ms · round trip ${roundTripMs.toFixed(0)} ms · ${answer.variant}`;
  byId("latency").dataset.serverMs = String(answer.latency_ms);
  drawEvidence(answer.evidence);
  byId("result").dataset.state = "done";
}

// The same diverging scale as the Python overlay: blue (away from the positive label), clear at 0, red (toward it).
const NEG = [33, 102, 172], MID = [247, 247, 247], POS = [178, 24, 43];

function colour(value, scale) {
  const t = Math.max(-1, Math.min(1, value / scale));
  const end = t >= 0 ? POS : NEG;
  const a = Math.abs(t);
  return [...MID.map((m, i) => Math.round(m + (end[i] - m) * a)), Math.round(255 * 0.7 * a)];
}

// One pixel per grid cell, stretched over the picture with smoothing: bilinear upsampling by the browser.
function drawEvidence(evidence) {
  const canvas = byId("evidence");
  const control = byId("evidence-control");
  canvas.hidden = control.hidden = !evidence;
  if (!evidence) return;
  const grid = evidence.grid;
  const rows = grid.length, cols = grid[0].length;
  const scale = Math.max(...grid.flat().map(Math.abs)) || 1;
  const cells = document.createElement("canvas");
  cells.width = cols;
  cells.height = rows;
  const pixels = cells.getContext("2d").createImageData(cols, rows);
  grid.flat().forEach((value, i) => pixels.data.set(colour(value, scale), 4 * i));
  cells.getContext("2d").putImageData(pixels, 0, 0);
  const preview = byId("preview");
  const paint = () => {
    canvas.width = preview.naturalWidth;
    canvas.height = preview.naturalHeight;
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(cells, 0, 0, canvas.width, canvas.height);
    canvas.dataset.drawn = "true";
  };
  canvas.dataset.drawn = "false";
  if (preview.complete && preview.naturalWidth) paint(); else preview.addEventListener("load", paint, { once: true });
  canvas.hidden = !byId("evidence-toggle").checked;
  const positive = positiveLabel ?? "the positive label";
  byId("evidence-scale").textContent =
    `red: toward ${positive}, blue: away; full colour at ±${scale.toFixed(2)} (log-odds per cell)`;
}

async function classify(file) {
  const result = byId("result");
  result.dataset.state = "busy";
  byId("error").hidden = true;
  byId("bars").replaceChildren();
  byId("evidence").hidden = byId("evidence-control").hidden = true;
  byId("decision").textContent = "classifying…";
  byId("score").textContent = "";
  delete byId("score").dataset.score;
  byId("latency").textContent = "";
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  const preview = byId("preview");
  preview.src = previewUrl;
  preview.hidden = false;
  const type = file.type && file.type.startsWith("image/") ? file.type : "application/octet-stream";
  const started = performance.now();
  try {
    const url = evidenceAvailable ? "/v1/classify?evidence=1" : "/v1/classify";
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": type, ...authHeaders() }, body: file,
    });
    const answer = await response.json();
    if (response.status === 401 || response.status === 429) askForKey(response.status, answer);
    if (!response.ok) {
      byId("decision").textContent = "";
      showError(`${response.status}: ${answer.message ?? answer.error}`);
      return;
    }
    render(answer, performance.now() - started);
  } catch (err) {
    byId("decision").textContent = "";
    showError(`request failed: ${err}`);
  }
}

function setUp() {
  const input = byId("file");
  const drop = byId("drop");
  const toggle = byId("evidence-toggle");
  toggle.addEventListener("change", () => { byId("evidence").hidden = !toggle.checked; });
  input.addEventListener("change", () => { if (input.files.length) classify(input.files[0]); });
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const kind of ["dragleave", "drop"]) {
    drop.addEventListener(kind, () => drop.classList.remove("over"));
  }
  byId("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("api-key");
    sessionStorage.setItem(KEY_ITEM, input.value.trim());
    input.value = "";
    loadInfo();
  });
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) classify(file);
  });
  loadInfo();
}

setUp();
