// comfy-splice's web extension (served by ComfyUI from the pack's WEB_DIRECTORY).
// Works on frontend 1.32.9 and 1.58.1, classic canvas and Nodes 2.0. Every widget it adds is
// appended after the node's own widgets and not serialised, so saved workflows' positional
// widgets_values never move.
//
// 1. Seeds never change between runs unless the user asks: on every node of the pack with a
//    seed, "control after generate" is set to "fixed" when the node is added (by hand, from
//    search) and when a workflow is loaded. The frontend adds that control to any INT input
//    named "seed" and starts it at "randomize"; a randomised seed makes every Queue retrain
//    (hours on a CPU). ComfyUI 0.3.75's V3 API cannot ask for "fixed" (see nodes/api.py).
// 2. Results stay on the node: the text a node returns as its `ui` output (last loss, metrics,
//    saved path, descriptor summaries) is shown in a result widget, filled on `executed` and when
//    outputs are restored. Progress text (the live loss) is cleared by 1.58.1 at the end of a run.
// 3. Missing DINO weights: while its file is not on disk, Load DINO-ViT shows a warning naming the
//    file and a "Download <file>" button that asks the pack's route (nodes/dino_download.py) to
//    fetch it into models/splice_dino.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PACK_PREFIX = "Splice";  // every node id of the pack starts with it
const RESULT = "splice_result";
const LOAD_DINO = "SpliceLoadDINO";
const DOWNLOAD_FLAG = "spliceDownload";

// -- 1. seeds ----------------------------------------------------------------------------------

function isPackNode(node) {
  return typeof node?.comfyClass === "string" && node.comfyClass.startsWith(PACK_PREFIX);
}

function seedControls(node) {
  const controls = [];
  for (const seed of node.widgets ?? []) {
    if (seed.name !== "seed") continue;
    let control = seed.linkedWidgets?.[0];
    if (!control) {
      const index = node.widgets.indexOf(seed);
      const next = node.widgets[index + 1];
      control = next?.name === "control_after_generate" ? next : null;
    }
    if (control) controls.push(control);
  }
  return controls;
}

function fixSeeds(node) {
  if (!isPackNode(node)) return;
  for (const control of seedControls(node)) {
    control.value = "fixed";
  }
}

// -- 2. results --------------------------------------------------------------------------------

function resultWidget(node) {
  const existing = node.widgets?.find((w) => w.name === RESULT);
  if (existing) return existing;
  const element = document.createElement("div");
  element.className = "splice-result";
  element.style.cssText = "white-space:pre-wrap;font:12px monospace;overflow:auto;max-height:240px;"
    + "padding:4px;color:var(--input-text, #ddd);background:var(--comfy-input-bg, #222);"
    + "border-radius:4px;user-select:text;";
  const widget = node.addDOMWidget(RESULT, RESULT, element, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => element.textContent,
    setValue: (value) => { element.textContent = value ?? ""; },
    getMinHeight: () => 40,
  });
  widget.serialize = false;
  return widget;
}

function resultText(output) {
  const text = output?.text;
  if (text == null) return null;
  return Array.isArray(text) ? text.join("\n\n") : String(text);
}

function showResult(node, output) {
  const text = resultText(output);
  if (text == null || !isPackNode(node)) return;
  resultWidget(node).value = text;
  node.setDirtyCanvas?.(true, true);
}

// -- 3. missing DINO weights -------------------------------------------------------------------

function clearWarning(node) {
  const warning = node.widgets?.find((w) => w.name === RESULT);
  if (warning && String(warning.value).startsWith("Missing: ")) warning.value = "";
}

async function dinoFiles() {
  const response = await api.fetchApi("/splice/dino/files");
  if (!response.ok) throw new Error(`GET /splice/dino/files: ${response.status}`);
  return response.json();
}

function removeWidget(node, widget) {
  if (typeof node.removeWidget === "function") {
    node.removeWidget(widget);
  } else {
    const index = node.widgets.indexOf(widget);
    if (index >= 0) node.widgets.splice(index, 1);
    widget.onRemove?.();
  }
}

async function download(node, widget, name) {
  if (widget.busy) return;
  widget.busy = true;
  const onProgress = (event) => {
    const { name: what, done, total } = event.detail ?? {};
    if (what !== name) return;
    const size = total ? ` ${(done / 1e6).toFixed(0)} of ${(total / 1e6).toFixed(0)} MB`
                       : ` ${(done / 1e6).toFixed(0)} MB`;
    widget.label = `Downloading ${name}:${size}`;
    node.setDirtyCanvas?.(true, true);
  };
  api.addEventListener("splice.dino_download", onProgress);
  widget.label = `Downloading ${name} ...`;
  node.setDirtyCanvas?.(true, true);
  try {
    const response = await api.fetchApi("/splice/dino/download", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error ?? `download failed (${response.status})`);
    const combo = node.widgets.find((w) => w.name === "model_name");
    if (combo) {
      combo.options.values = [...new Set([...answer.files])].sort();
      combo.value = answer.name;
    }
    removeWidget(node, widget);
    clearWarning(node);
  } catch (error) {
    widget.label = `Download failed: ${error.message}`;
    widget.spliceError = error.message;
    console.warn("comfy-splice:", error);
  } finally {
    api.removeEventListener("splice.dino_download", onProgress);
    widget.busy = false;
    node.setDirtyCanvas?.(true, true);
  }
}

async function checkDino(node) {
  if (node.comfyClass !== LOAD_DINO) return;
  const combo = node.widgets?.find((w) => w.name === "model_name");
  if (!combo) return;
  let info;
  try {
    info = await dinoFiles();
  } catch (error) {
    console.warn("comfy-splice:", error);
    return;
  }
  const name = combo.value;
  const old = node.widgets.find((w) => w[DOWNLOAD_FLAG]);
  const missing = typeof name === "string" && !info.files.includes(name);
  if (old && (!missing || old[DOWNLOAD_FLAG] !== name) && !old.busy) {
    removeWidget(node, old);
    clearWarning(node);
  }
  if (!missing || node.widgets.find((w) => w[DOWNLOAD_FLAG] === name)) {
    node.setDirtyCanvas?.(true, true);
    return;
  }
  const downloadable = info.downloadable.includes(name);
  // A short label that fits the node's width; the warning itself, which wraps, names the file.
  const text = downloadable ? `Download ${name}` : `Missing ${name}`;
  resultWidget(node).value = downloadable
    ? `Missing: ${name} is not in models/splice_dino. Press "Download" above to fetch it there `
      + "(or switch on download_if_missing and Queue)."
    : `Missing: ${name} is not in ${info.folder}; put it there or pick another file.`;
  const widget = node.addWidget("button", text, null, () => {
    if (downloadable) download(node, widget, name);
  }, { serialize: false });
  widget.serialize = false;
  widget.label = text;
  widget[DOWNLOAD_FLAG] = name;
  widget.spliceDownloadable = downloadable;
  node.setDirtyCanvas?.(true, true);
}

function watchDino(node) {
  if (node.comfyClass !== LOAD_DINO || node.spliceWatched) return;
  node.spliceWatched = true;
  const combo = node.widgets?.find((w) => w.name === "model_name");
  if (combo) {
    const callback = combo.callback;
    combo.callback = function (...args) {
      const result = callback?.apply(this, args);
      checkDino(node);
      return result;
    };
  }
  checkDino(node);
}

// -- registration ------------------------------------------------------------------------------

app.registerExtension({
  name: "comfy-splice.NodeUI",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(PACK_PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      showResult(this, output);
      return result;
    };
  },
  nodeCreated(node) {
    fixSeeds(node);
    // After the constructor: the widget values of a loaded workflow are applied later, and
    // loadedGraphNode checks again with them.
    if (node.comfyClass === LOAD_DINO) queueMicrotask(() => watchDino(node));
  },
  loadedGraphNode(node) {
    fixSeeds(node);
    if (node.comfyClass === LOAD_DINO) {
      watchDino(node);
      checkDino(node);
    }
  },
  onNodeOutputsUpdated(outputs) {
    // Outputs restored (tab switch, history load): show the results again (root graph only).
    for (const [id, output] of Object.entries(outputs ?? {})) {
      if (String(id).includes(":")) continue;
      const node = app.graph?.getNodeById?.(Number(id));
      if (node) showResult(node, output);
    }
  },
});

// Exposed for the browser tests and for other extensions (read-only use).
window.comfySplice = Object.freeze({ checkDino, seedControls, RESULT });
