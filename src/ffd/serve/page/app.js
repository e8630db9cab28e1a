// The page of python -m ffd.serve: sends each dropped or picked photo to /v1/predict (or /v1/explain with
// heatmaps on) and draws the answer: a box per judged face coloured by verdict, its confidence, the
// heatmap laid over the photo (the toggle) and the region table. Plain JavaScript, nothing fetched from
// elsewhere: the page works offline.
"use strict";

const COLOURS = { real: "rgb(40, 170, 70)", fake: "rgb(220, 40, 40)" }; // as ffd.faces.judge draws them
let apiKey = null;
let model = null;

function headers() {
  return apiKey ? { "X-API-Key": apiKey } : {};
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  Object.entries(attributes).forEach(([name, value]) => node.setAttribute(name, value));
  if (text) node.textContent = text;
  return node;
}

async function loadModel() {
  const answer = await fetch("/v1/model", { headers: headers() });
  const body = await answer.json();
  if (answer.status === 401) {
    document.getElementById("key").hidden = false;
    document.getElementById("model").textContent = "This service needs an API key.";
    if (apiKey) document.getElementById("key-problem").textContent = body.detail;
    return;
  }
  document.getElementById("key").hidden = true;
  model = body;
  const card = body.card || {};
  const decision = body.decision;
  const trained = card.training_data ? `, trained on the ${card.training_data}` : ", no model card";
  document.getElementById("model").textContent =
    `Model ${body.model.name} (${body.model.file}, sha256 ${body.model.sha256.slice(0, 12)})${trained}; ` +
    `fake when P(fake) > ${decision.threshold.toPrecision(4)} (${decision.source}); faces: ${body.face.mode}.`;
  if (card.training_data === "synthetic demo set") {
    const warning = document.getElementById("warning");
    warning.hidden = false;
    warning.textContent =
      "This model learned ffd's synthetic demo set: its verdicts on real photos mean nothing.";
  }
  const explain = document.getElementById("explain");
  explain.disabled = !body.explain;
  if (!body.explain) explain.parentElement.title = "needs the model's .ckpt (this one is ONNX)";
}

function drawBox(context, row, unit) {
  const [x0, y0, x1, y1] = row.box;
  const colour = COLOURS[row.verdict];
  context.lineWidth = 2 * unit;
  context.strokeStyle = colour;
  context.strokeRect(x0, y0, x1 - x0, y1 - y0);
  const label = `${row.face}: ${row.verdict === "fake" ? "Fake" : "Real"} ${row.confidence.toFixed(2)}`;
  context.font = `${12 * unit}px sans-serif`;
  const width = context.measureText(label).width + 4 * unit;
  const height = 16 * unit;
  context.fillStyle = colour;
  context.fillRect(x0 - unit, y0 - height - unit, width, height);
  context.fillStyle = "white";
  context.fillText(label, x0 + unit, y0 - 4 * unit);
}

async function draw(canvas, bitmap, image, heatmaps) {
  const context = canvas.getContext("2d");
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.drawImage(bitmap, 0, 0, image.width, image.height);
  if (heatmaps) {
    for (const row of image.predictions) {
      const [[a, c, e], [b, d, f]] = row.to_photo; // crop pixels -> photo pixels
      context.setTransform(a, b, c, d, e, f);
      context.drawImage(heatmaps.get(row), 0, 0);
    }
    context.setTransform(1, 0, 0, 1, 0, 0);
  }
  const unit = Math.max(1, Math.round(Math.min(image.width, image.height) / 256));
  let boxes = 0;
  for (const row of image.predictions) {
    if (row.box) {
      drawBox(context, row, unit);
      boxes += 1;
    }
  }
  canvas.dataset.boxes = String(boxes);
}

function regionTable(regions) {
  const table = element("table", { class: "regions" });
  const head = table.insertRow();
  head.append(element("th", {}, "region"), element("th", {}, "heatmap share"));
  Object.entries(regions)
    .sort((one, other) => other[1] - one[1])
    .forEach(([name, share]) => {
      const row = table.insertRow();
      row.append(element("td", {}, name.replace("_", " / ")), element("td", { class: "share" }, `${(100 * share).toFixed(1)} %`));
    });
  return table;
}

function describe(about, image) {
  const list = element("ul", { class: "verdicts" });
  if (image.no_face) list.append(element("li", { class: "problem" }, `Not judged: ${image.no_face}.`));
  for (const row of image.predictions) {
    const item = element("li");
    const what = row.face === null ? "Whole image" : `Face ${row.face}`;
    item.append(`${what}: `, element("span", { class: `verdict ${row.verdict}` }, row.verdict === "fake" ? "Fake" : "Real"));
    item.append(` confidence ${row.confidence.toFixed(2)} (P(fake) ${row.p_fake.toFixed(3)})`);
    if (row.notes) item.append(element("div", { class: "notes" }, row.notes));
    if (row.regions) item.append(regionTable(row.regions));
    list.append(item);
  }
  about.append(list);
}

function loadImage(source) {
  return new Promise((resolve, reject) => {
    const picture = new Image();
    picture.onload = () => resolve(picture);
    picture.onerror = () => reject(new Error("the browser cannot show this image"));
    picture.src = source;
  });
}

async function judge(file) {
  const section = element("section", { class: "photo" });
  const canvas = element("canvas");
  const about = element("div", { class: "about" });
  about.append(element("h2", {}, file.name), element("p", { class: "small status" }, "Judging…"));
  section.append(canvas, about);
  document.getElementById("results").prepend(section);
  const explain = document.getElementById("explain").checked;
  const form = new FormData();
  form.append("files", file, file.name);
  const answer = await fetch(explain ? "/v1/explain" : "/v1/predict", { method: "POST", body: form, headers: headers() });
  const body = await answer.json();
  about.querySelector(".status").remove();
  if (!answer.ok) {
    about.append(element("p", { class: "problem" }, `Refused (${answer.status}): ${body.detail}`));
    canvas.remove();
    return;
  }
  const image = body.images[0];
  describe(about, image);
  let bitmap;
  try {
    bitmap = await loadImage(URL.createObjectURL(file));
  } catch (error) {
    canvas.replaceWith(element("p", { class: "small" }, `No preview: ${error.message}.`));
    return;
  }
  canvas.width = image.width;
  canvas.height = image.height;
  let heatmaps = null;
  if (explain) {
    heatmaps = new Map();
    for (const row of image.predictions) heatmaps.set(row, await loadImage(`data:image/png;base64,${row.heatmap_png}`));
    const toggle = element("label", { class: "small" });
    const box = element("input", { type: "checkbox", class: "heatmap-toggle" });
    box.checked = true;
    box.addEventListener("change", () => draw(canvas, bitmap, image, box.checked ? heatmaps : null));
    toggle.append(box, " heatmap");
    about.prepend(toggle);
  }
  await draw(canvas, bitmap, image, heatmaps);
}

function judgeAll(files) {
  if (!model) return;
  return Promise.all([...files].map(judge));
}

document.getElementById("files").addEventListener("change", (event) => judgeAll(event.target.files));
const drop = document.getElementById("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  judgeAll(event.dataTransfer.files);
});
document.getElementById("key").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = document.getElementById("key-input").value;
  loadModel();
});
loadModel();
