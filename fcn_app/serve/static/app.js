// The page of `fcn-heatmap serve`: no framework, no build step, nothing fetched from outside this server.
// The server sends, once per image, the per-cell class probabilities and the interpolation matrices the CLI
// uses to place them on pixels; opacity, colormap, class search and hover are then computed here. For a saliency
// method (gradcam, …) it sends each returned class's map instead, shrunk to at most 256 px, put back bilinearly.
"use strict";

const $ = (id) => document.getElementById(id);
// analyses: how many were started; an answer to any but the latest is dropped. pointer: where the mouse is over
// the canvas (client coordinates), so a new map can answer there before the mouse moves.
const state = { info: null, source: null, result: null, grid: null, base: null, selection: null, heat: null,
                detections: null, folder: "", analyses: 0, pointer: null };

function showError(message) { $("error").textContent = message ? String(message).split("\n")[0] : ""; }

function showProgress(text, fraction) {
  const bar = $("progress");
  bar.hidden = text === null;
  if (fraction === undefined || fraction === null) bar.removeAttribute("value"); else bar.value = fraction;
  $("status-text").textContent = text || "";
}

// A multipart POST with upload progress; resolves the JSON answer, rejects with the server's one-line detail.
function post(url, fields, onUpload) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [key, value] of Object.entries(fields)) form.append(key, value);
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.upload.onprogress = (event) => { if (event.lengthComputable && onUpload) onUpload(event.loaded / event.total); };
    request.onload = () => {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch (error) { /* not JSON: reported below */ }
      if (request.status === 200 && body) resolve(body);
      else reject(new Error((body && body.detail) || `${request.status} ${request.statusText}`));
    };
    request.onerror = () => reject(new Error("the server cannot be reached"));
    request.send(form);
  });
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error((body && body.detail) || `${response.status} ${response.statusText}`);
  return body;
}

function float32(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

// Rows of a dense pixels×cells interpolation matrix as their non-zero (cell, weight) pairs.
function sparseRows(matrix, pixels, cells) {
  const rows = new Array(pixels);
  for (let p = 0; p < pixels; p++) {
    const pairs = [];
    for (let c = 0; c < cells; c++) { const w = matrix[p * cells + c]; if (w !== 0) pairs.push(c, w); }
    rows[p] = pairs;
  }
  return rows;
}

// Bilinear rows from a map of `cells` values to `pixels` pixels, centres aligned as OpenCV's resize (the server's
// saliency_pixels): pixel p reads position (p + 0.5)·cells/pixels − 0.5, clamped.
function bilinearRows(pixels, cells) {
  const rows = new Array(pixels);
  for (let p = 0; p < pixels; p++) {
    if (cells === 1) { rows[p] = [0, 1]; continue; }
    const position = Math.min(cells - 1, Math.max(0, (p + 0.5) * cells / pixels - 0.5));
    const lower = Math.min(cells - 2, Math.floor(position)), fraction = position - lower;
    rows[p] = [lower, 1 - fraction, lower + 1, fraction];
  }
  return rows;
}

function decodeGrid(pixels) {
  const grid = { ...pixels, cells: float32(pixels.cells) };
  if (pixels.kind === "saliency") {
    grid.alongY = bilinearRows(pixels.height, pixels.rows);
    grid.alongX = bilinearRows(pixels.width, pixels.cols);
    return grid;
  }
  grid.alongY = sparseRows(float32(pixels.along_y), pixels.height, pixels.rows);
  grid.alongX = sparseRows(float32(pixels.along_x), pixels.width, pixels.cols);
  return grid;
}

// The per-pixel probability map of a selection (classes summed per cell, clipped to [0, 1], then interpolated).
function heatFor(indices) {
  const g = state.grid, cellCount = g.rows * g.cols;
  const cells = new Float32Array(cellCount);
  for (const k of indices) for (let i = 0; i < cellCount; i++) cells[i] += g.cells[k * cellCount + i];
  for (let i = 0; i < cellCount; i++) cells[i] = Math.min(1, Math.max(0, cells[i]));
  const across = new Float32Array(g.rows * g.width);  // cells interpolated along x first
  for (let r = 0; r < g.rows; r++) for (let x = 0; x < g.width; x++) {
    const pairs = g.alongX[x]; let sum = 0;
    for (let j = 0; j < pairs.length; j += 2) sum += pairs[j + 1] * cells[r * g.cols + pairs[j]];
    across[r * g.width + x] = sum;
  }
  const heat = new Float32Array(g.height * g.width);
  for (let y = 0; y < g.height; y++) {
    const pairs = g.alongY[y];
    for (let x = 0; x < g.width; x++) {
      let sum = 0;
      for (let j = 0; j < pairs.length; j += 2) sum += pairs[j + 1] * across[pairs[j] * g.width + x];
      heat[y * g.width + x] = sum;
    }
  }
  return heat;
}

// Every class's probability at pixel (x, y), the same interpolation as heatFor.
function probabilitiesAt(x, y) {
  const g = state.grid, cellCount = g.rows * g.cols, ys = g.alongY[y], xs = g.alongX[x];
  const values = new Float32Array(g.classes);
  for (let k = 0; k < g.classes; k++) {
    let sum = 0;
    for (let a = 0; a < ys.length; a += 2) for (let b = 0; b < xs.length; b += 2)
      sum += ys[a + 1] * xs[b + 1] * g.cells[k * cellCount + ys[a] * g.cols + xs[b]];
    values[k] = sum;
  }
  return values;
}

// A probability as every legend, label, panel and table writes it: fcn_app/text.py's format_probability ported
// (three decimals, or two significant digits where three would read 0.000), for the values computed here (hover,
// a searched class); the server sends its own labels ready-made. Python rounds a three-decimal tie (an odd
// sixteenth, exact in binary) to even where toFixed rounds up; .2g's exponent has two digits at least and no
// trailing zeros. tests/test_serve_browser.py checks the two agree.
function formatProbability(value) {
  value = Number(value);
  if (!(value >= -1e-6 && value <= 1 + 1e-6)) throw new RangeError(`a probability lies in [0, 1], got ${value}`);
  value = Math.min(Math.max(value, 0), 1);  // float32 sums may overshoot by an ulp
  if (value === 0 || value >= 0.0005) {
    if ((value * 16) % 2 === 1) {  // an odd sixteenth (× 16 is exact): the only values halfway at three decimals
      const below = Math.floor(value * 1000);
      return ((below % 2 === 0 ? below : below + 1) / 1000).toFixed(3);
    }
    return value.toFixed(3);
  }
  const exponent = Number(value.toExponential(1).split("e")[1]);  // after rounding to two digits, as Python's
  const trimmed = (text) => text.replace(/\.?0+$/, "");
  if (exponent >= -4) return trimmed(value.toFixed(1 - exponent));
  return `${trimmed(value.toExponential(1).split("e")[0])}e-${String(-exponent).padStart(2, "0")}`;
}

// How a map's values become colour levels, as render.normalize_heat (the CLI's --normalize):
// level = (value − offset) · scale. low and high: the map's minimum and maximum.
function normalization(mode, low, high) {
  if (mode === "peak" && high > 0) return { offset: 0, scale: 1 / high };
  if (mode === "minmax") return high - low > 0 ? { offset: low, scale: 1 / (high - low) } : { offset: 0, scale: 0 };
  return { offset: 0, scale: 1 };  // none (or a map that is all 0 under peak)
}

function render() {
  const canvas = $("canvas"), context = canvas.getContext("2d");
  if (!state.base) return;
  if (!state.heat) { context.putImageData(state.base, 0, 0); return; }
  const alpha = Number($("opacity").value) / 100, table = state.info.colormaps[$("colormap").value];
  const source = state.base.data, output = context.createImageData(state.base.width, state.base.height);
  const target = output.data, heat = state.heat;
  const { offset, scale } = normalization($("normalize").value, state.low, state.peak);
  for (let i = 0, p = 0; i < heat.length; i++, p += 4) {
    const colour = table[Math.round(Math.min(1, Math.max(0, (heat[i] - offset) * scale)) * 255)];
    target[p] = Math.round((1 - alpha) * source[p] + alpha * colour[0]);
    target[p + 1] = Math.round((1 - alpha) * source[p + 1] + alpha * colour[1]);
    target[p + 2] = Math.round((1 - alpha) * source[p + 2] + alpha * colour[2]);
    target[p + 3] = 255;
  }
  context.putImageData(output, 0, 0);
  canvas.dataset.renders = String(Number(canvas.dataset.renders || 0) + 1);
}

function select(entry) {
  state.selection = entry;
  state.heat = heatFor(entry.indices);
  state.low = state.heat.reduce((a, b) => Math.min(a, b), Infinity);
  state.peak = state.heat.reduce((a, b) => Math.max(a, b), -Infinity);
  for (const item of $("classes").children) item.classList.toggle("selected", item.dataset.name === entry.name);
  render();
}

function addClass(entry, first) {
  const item = document.createElement("li");
  item.dataset.name = entry.name;
  item.textContent = `${entry.name}  ${entry.label}`;
  item.title = entry.names ? entry.names.join(", ") : entry.name;
  item.onclick = () => select(entry);
  if (first) $("classes").prepend(item); else $("classes").append(item);
}

function loadPicture(width, height) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => {
      const canvas = $("canvas");
      canvas.width = width; canvas.height = height;
      canvas.classList.remove("blank");
      const context = canvas.getContext("2d");
      context.drawImage(image, 0, 0, width, height);  // the picture the server scored (max_side applied)
      state.base = context.getImageData(0, 0, width, height);
      $("marks").setAttribute("viewBox", `0 0 ${width} ${height}`);
      resolve();
    };
    image.onerror = () => reject(new Error("the browser cannot display this image"));
    image.src = state.source.file ? URL.createObjectURL(state.source.file) : state.source.url;
  });
}

// Forget the shown image's answer: maps, classes, boxes, legend and hover. With the picture too (an error): the
// canvas then shows nothing rather than the previous image's overlay beside an empty class list.
function forgetResult(withPicture) {
  state.result = null; state.grid = null; state.heat = null; state.detections = null; state.saliency = null;
  $("detections").checked = false; $("marks").innerHTML = ""; $("classes").innerHTML = "";
  $("legend").innerHTML = ""; $("legend").hidden = $("legend-title").hidden = true;
  if (withPicture) {
    state.base = null;
    $("canvas").width = $("canvas").height = 1;  // resizing clears it, as the page starts
    $("canvas").classList.add("blank");
    $("marks").setAttribute("viewBox", "0 0 1 1");
  }
  showHover();
}

async function analyse(source) {
  const analysis = ++state.analyses;
  const current = () => analysis === state.analyses;
  state.source = source;
  forgetResult(false);
  $("canvas").dataset.state = "busy";
  showError("");
  const started = performance.now();
  let uploaded = false, answered = false;
  const tick = setInterval(async () => {  // while the server works: its queue and the tiles of a large image
    if (!uploaded) return;
    const seconds = `${((performance.now() - started) / 1000).toFixed(0)} s`;
    const health = await getJSON("/healthz").catch(() => null);
    if (answered || !current()) return;  // the answer came while this poll was out: its line would stay
    const tiles = health && health.progress;
    if (tiles && tiles.total > 1) showProgress(`scoring tiles ${tiles.done}/${tiles.total} · ${seconds}`, tiles.done / tiles.total);
    else showProgress(`scoring… ${health && health.queued > 1 ? `(${health.queued - 1} other requests queued) ` : ""}${seconds}`);
  }, 500);
  showProgress("uploading…", 0);
  const segmentation = state.info.mode === "segmentation";
  const fields = source.file ? { image: source.file } : { path: source.path };
  try {
    const result = await post(segmentation ? "/api/segment" : "/api/heatmap",
      segmentation ? fields : { ...fields, topk: 5, pixels: "true", pictures: "false", method: $("method").value },
      (fraction) => { uploaded = fraction >= 1; showProgress(uploaded ? "scoring…" : "uploading…", uploaded ? null : fraction); });
    if (!current()) return;  // another image or method was asked for meanwhile
    state.result = result;
    const size = result.image_size;
    if (segmentation) {
      state.source = { url: result.pictures.segmentation };
      await loadPicture(size.width, size.height);
      if (!current()) return;
      render();
      showLegend(result.legend);
    } else {
      const grid = decodeGrid(result.pixels);
      await loadPicture(size.width, size.height);
      if (!current()) return;
      state.grid = grid;
      // a saliency method's maps are sent in the order of its classes: entry k is map k
      const saliency = result.pixels.kind === "saliency";
      state.saliency = saliency ? result.method : null;
      result.classes.forEach((heat, rank) => addClass({ name: heat.name, indices: saliency ? [rank] : heat.indices,
                                                      label: result.labels.classes[rank] }));
      select({ name: result.classes[0].name, indices: saliency ? [0] : result.classes[0].indices });
      showHover();  // the new map at the pointer, where it rests
    }
    $("canvas").dataset.state = "ready";
    showProgress(null);
  } catch (error) {
    if (!current()) return;
    forgetResult(true);
    $("canvas").dataset.state = "error";
    showProgress(null);
    showError(error.message);
  } finally {
    answered = true;
    clearInterval(tick);
  }
}

function showLegend(legend) {
  const list = $("legend");
  list.innerHTML = "";
  for (const entry of legend) {
    const item = document.createElement("li");
    const swatch = document.createElement("i");
    swatch.style.background = `rgb(${entry.color.join(",")})`;
    item.append(swatch, `${entry.name}  ${(100 * entry.pixel_fraction).toFixed(1)}%`);
    list.append(item);
  }
  list.hidden = $("legend-title").hidden = false;
}

function svg(tag, attributes, text) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text) element.textContent = text;
  return element;
}

const BOX_COLOURS = ["#ff595e", "#ffca3a", "#8ac926", "#1982c4", "#6a4c93"];

function drawMarks(window) {
  const marks = $("marks");
  marks.innerHTML = "";
  if ($("detections").checked && state.detections) {
    state.detections.forEach((detection, index) => {
      const [x, y, w, h] = detection.box, colour = BOX_COLOURS[index % BOX_COLOURS.length];
      marks.append(svg("rect", { class: "box", x, y, width: w, height: h, stroke: colour }));
      const size = Math.max(6, Math.round($("canvas").width / 45));  // image units: the SVG scales with the canvas
      marks.append(svg("text", { x: x + size / 4, y: y + size, "font-size": size },
                       `${detection.class_name} ${state.detectionLabels[index]}`));
    });
  }
  if (window) {
    const [x, y, w, h] = window;
    marks.append(svg("rect", { class: "window", x, y, width: w, height: h }));
  }
}

function heaviest(pairs) {
  let best = pairs[0], weight = -1;
  for (let j = 0; j < pairs.length; j += 2) if (pairs[j + 1] > weight) { weight = pairs[j + 1]; best = pairs[j]; }
  return best;
}

// The hover panel: the shown map's top-5 at the pointer's pixel; without a map (busy, error) or a pointer, nothing.
function showHover() {
  const canvas = $("canvas"), box = canvas.getBoundingClientRect(), pointer = state.pointer;
  const over = pointer && pointer.x >= box.left && pointer.x <= box.right &&
               pointer.y >= box.top && pointer.y <= box.bottom;
  if (!state.grid || !over) {  // (a new image's canvas may no longer be under a pointer that has not moved)
    $("hover").innerHTML = '<span class="muted">point at the image</span>';
    drawMarks(null);
    return;
  }
  const x = Math.min(canvas.width - 1, Math.max(0, Math.floor((pointer.x - box.left) * canvas.width / box.width)));
  const y = Math.min(canvas.height - 1, Math.max(0, Math.floor((pointer.y - box.top) * canvas.height / box.height)));
  const values = probabilitiesAt(x, y);  // saliency: each shown class's map value there, not a probability
  const order = Array.from(values.keys()).sort((a, b) => values[b] - values[a]).slice(0, 5);
  const names = state.saliency ? state.result.classes.map((heat) => heat.name) : state.categories;
  const rows = order.map((k) => `<tr data-index="${k}" data-probability="${values[k]}"><td>${escapeHtml(names[k])}</td>` +
                                `<td class="p">${formatProbability(values[k])}</td></tr>`).join("");
  const what = state.saliency ? ` · ${escapeHtml(state.saliency)} map values (0–1 per map), not probabilities` : "";
  $("hover").innerHTML = `<div class="muted" id="hover-pixel" data-x="${x}" data-y="${y}">pixel (${x}, ${y})${what}</div><table>${rows}</table>`;
  if (state.saliency) { drawMarks(null); return; }  // no score cells: no window to outline
  const cell = heaviest(state.grid.alongY[y]) * state.grid.cols + heaviest(state.grid.alongX[x]);
  drawMarks(state.grid.windows[cell]);  // the window of the score cell nearest to the pixel
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function toggleDetections() {
  if ($("detections").checked && !state.detections && state.source) {
    showProgress("detecting…");
    try {
      const fields = state.source.file ? { image: state.source.file } : { path: state.source.path };
      const answer = await post("/api/detect", { ...fields, method: $("method").value });
      state.detectionLabels = answer.labels.detections;  // the scores as the CLI's box labels write them
      state.detections = answer.detections;
      showProgress(`${state.detections.length} detections`, 1);
    } catch (error) {
      showProgress(null);
      showError(error.message);
      $("detections").checked = false;
    }
  }
  drawMarks(null);
}

async function search(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query || !state.grid) return;
  if (state.saliency) {  // the server computed maps for the classes shown only
    showError(`${state.saliency} makes a map per class on the server: search classes with fcn or cam`);
    return;
  }
  try {
    const selection = await getJSON(`/api/classes?query=${encodeURIComponent(query)}`);
    const heat = heatFor(selection.indices);
    const peak = heat.reduce((a, b) => Math.max(a, b), 0);
    const entry = { name: selection.name, indices: selection.indices, names: selection.names, label: formatProbability(peak) };
    addClass(entry, true);
    select(entry);
    showError("");
  } catch (error) {
    showError(error.message);
  }
}

async function browse(folder) {
  try {
    const listing = await getJSON(`/api/files?folder=${encodeURIComponent(folder)}`);
    state.folder = listing.folder;
    const crumbs = $("crumbs"), list = $("listing");
    crumbs.innerHTML = ""; list.innerHTML = "";
    const up = document.createElement("span"); up.textContent = "root"; up.onclick = () => browse("");
    crumbs.append(up, listing.folder ? ` / ${listing.folder}` : "");
    const join = (name) => (listing.folder ? `${listing.folder}/${name}` : name);
    for (const name of listing.folders) {
      const item = document.createElement("li"); item.textContent = `📁 ${name}`;
      item.onclick = () => browse(join(name)); list.append(item);
    }
    for (const name of listing.images) {
      const item = document.createElement("li"); item.textContent = name;
      const path = join(name);
      item.onclick = () => analyse({ path, url: `/api/file?path=${encodeURIComponent(path)}` });
      list.append(item);
    }
  } catch (error) {
    showError(error.message);
  }
}

async function start() {
  try {
    state.info = await getJSON("/api/info");
  } catch (error) {
    showError(error.message);
    return;
  }
  $("model").textContent = `${state.info.model} · ${state.info.classes} classes`;
  document.body.classList.toggle("segmentation", state.info.mode === "segmentation");
  for (const name of state.info.methods) $("method").append(new Option(name, name, false, name === state.info.default_method));
  $("method").onchange = () => { if (state.source) analyse(state.source); };  // after an error too: another may work
  for (const name of Object.keys(state.info.colormaps)) $("colormap").append(new Option(name, name, false, name === state.info.default_colormap));
  for (const mode of state.info.normalize_modes) $("normalize").append(new Option(mode, mode));  // none first
  const names = await getJSON("/api/classes");
  state.categories = names.classes;
  if (state.info.root) { $("browser").hidden = false; browse(""); }
  $("file").onchange = () => { if ($("file").files[0]) analyse({ file: $("file").files[0] }); };
  const drop = $("drop");
  drop.ondragover = (event) => { event.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (event) => {
    event.preventDefault(); drop.classList.remove("over");
    if (event.dataTransfer.files[0]) analyse({ file: event.dataTransfer.files[0] });
  };
  $("opacity").oninput = render;
  $("colormap").onchange = render;
  $("normalize").onchange = render;
  $("detections").onchange = toggleDetections;
  $("search").onsubmit = search;
  $("canvas").onmousemove = (event) => { state.pointer = { x: event.clientX, y: event.clientY }; showHover(); };
  $("canvas").onmouseleave = () => { state.pointer = null; };  // the panel keeps the last pixel's values
  document.body.dataset.ready = "1";
}

start();
