// comfy-splice's web extension (served by ComfyUI from the pack's WEB_DIRECTORY).
//
// Train Generator's seed starts with "control after generate" = "fixed" instead of the
// frontend's "randomize": with a fixed seed, queueing the same graph again is served from
// ComfyUI's cache instead of training again (minutes to hours on a CPU). Only new nodes are
// changed: a loaded workflow keeps the value it was saved with. (ComfyUI 0.3.75's V3
// io.Int.Input takes only a boolean control_after_generate, and the frontend then always starts
// the control at "randomize": the default can only be set here.)
import { app } from "../../scripts/app.js";

const FIXED_SEED_NODES = new Set(["SpliceTrainGenerator"]);

app.registerExtension({
  name: "comfy-splice.FixedSeed",
  nodeCreated(node) {
    if (!FIXED_SEED_NODES.has(node.comfyClass)) {
      return;
    }
    const control = node.widgets?.find((widget) => widget.name === "control_after_generate");
    if (control) {
      control.value = "fixed";
    }
  },
});
