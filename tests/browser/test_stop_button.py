"""The "Stop and keep" button of Train Generator, clicked in the real web app during a run.

The pack's web extension (web/splice_stop.js) adds the button; a click posts to the pack's
/splice/stop route, the training ends early, and the rest of the graph runs on the generator
trained so far (the run succeeds and Save Image writes the result).
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.assets import workflow_specs as bw
from tools.harness import comfy_page
from tools.harness.comfy_server import ComfyServer

STEPS = 5000

# The list starts empty for this test (the listener is added once per page): a progress event of
# an earlier test's run on a node with the same id must not count as this run's first step.
PROGRESS_JS = """() => {
  const fresh = window.__spliceProgress === undefined;
  window.__spliceProgress = [];
  if (!fresh) return;
  window.comfyAPI.api.api.addEventListener('progress', (event) => {
    const d = event.detail || {};
    window.__spliceProgress.push({ node: String(d.node), value: d.value, prompt_id: d.prompt_id || null });
  });
}"""


def test_stop_and_keep_button_ends_training_and_the_graph_goes_on(
        page: comfy_page.ComfyPage, browser_server: ComfyServer, dino_weights: Path, artifacts: Path) -> None:
    spec = bw.basic_workflow()
    report = page.load_workflow(json.loads(spec.json_path.read_text()))
    assert report.nodes_with_errors == []
    page.close_dialogs()
    train, save = spec.node_id("train"), spec.node_id("save")
    labels = page.evaluate("""(id) => window.app.graph.getNodeById(id).widgets
                              .filter((w) => w.type === 'button').map((w) => w.label || w.name)""", train)
    assert labels == ["Stop and keep"]
    # The button is not a saved widget: the workflow converts to the same inputs as before.
    prompt = page.graph_to_prompt()
    assert "Stop and keep" not in json.dumps(prompt["output"][str(train)]["inputs"])
    page.set_widget(train, "steps", STEPS)
    page.set_widget(train, "preview_every", 0)
    page.fit_view()
    page.evaluate(PROGRESS_JS)

    start = page.evaluate("() => window.__splice.events.length")
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.QueuePrompt')")
    page.wait_for("(id) => window.__spliceProgress.some((p) => p.node === String(id) && p.value >= 1)",
                  arg=train, timeout_s=240, what="Train Generator's first step")
    page.click_widget_button(train, "Stop and keep")
    prompt_id = page.wait_for(
        """(i) => { const e = window.__splice.events.slice(i).find((e) =>
              ['execution_success', 'execution_error', 'execution_interrupted'].includes(e.type));
            return e ? [e.type, e.prompt_id, e.message] : null; }""",
        arg=start, timeout_s=240, what="the run to end after the click")
    status, run_id, message = prompt_id
    assert status == "execution_success", message
    page.wait_for_images([save], timeout_s=60)
    page.screenshot(artifacts / "stop-and-keep-finished.png")
    done = page.evaluate("(id) => Math.max(...window.__spliceProgress.filter((p) => p.node === String(id))"
                         ".map((p) => p.value))", train)
    assert 1 <= done < STEPS
    outputs = browser_server.history(run_id)["outputs"]
    assert outputs[str(save)]["images"], "Save Image wrote nothing"
