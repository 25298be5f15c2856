// comfy-splice: a "Stop and keep" button on Train Generator (Splice).
// Cancel throws a training away; this button asks the pack's POST /splice/stop route to end the
// training early, and the node then returns the generator trained so far.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "SpliceTrainGenerator";
const BUTTON = "Stop and keep";

async function stopAndKeep(node, widget) {
  const response = await api.fetchApi("/splice/stop", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ node_id: String(node.id) }),
  });
  const answer = await response.json();
  // "already_stopping": a second click while the first is being honoured
  const stopped = (answer.stopped || []).length + (answer.already_stopping || []).length;
  widget.label = stopped ? "Stopping: keeping the steps done" : "Stop and keep (not training)";
  node.setDirtyCanvas(true, true);
  setTimeout(() => { widget.label = BUTTON; node.setDirtyCanvas(true, true); }, 3000);
}

app.registerExtension({
  name: "comfy-splice.StopAndKeep",
  nodeCreated(node) {
    if (node.comfyClass !== NODE) return;
    // Not serialised: saved workflows keep their positional widgets_values unchanged.
    const widget = node.addWidget("button", BUTTON, null, () => stopAndKeep(node, widget),
                                  { serialize: false });
    widget.serialize = false;
    widget.label = BUTTON;
  },
});
