"""Stop and keep, Cancel, autosave and resume in a real ComfyUI server, over HTTP and the websocket.

Uses the graph of splice_prompts.py and its tiny inputs (``splice_files``, on the session's shared
server).
"""

from __future__ import annotations

import json
from typing import Any

from safetensors import safe_open

from splice_prompts import TRAIN, splice_graph
from tools.harness.comfy_server import ComfyServer

SAVE = "11"


def _with_save(prompt: dict[str, Any], prefix: str) -> dict[str, Any]:
    prompt[SAVE] = {"class_type": "SpliceSaveGenerator", "inputs": {"generator": [TRAIN, 0],
                                                                    "filename_prefix": prefix}}
    return prompt


def _train_state(path: Any) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["splice_train_state"])


def _stop(server: ComfyServer, body: Any) -> Any:
    return server.http.post(server.url + "/splice/stop", json=body, timeout=30)


def _first_progress(execution: Any) -> Any:
    return execution.wait_for(lambda m: m.type == "progress" and str(m.data.get("node")) == TRAIN, timeout=240)


def test_stop_route_ends_training_and_returns_the_generator(comfy_server: ComfyServer,
                                                            splice_files: dict[str, str]) -> None:
    assert _stop(comfy_server, {"node_id": TRAIN}).json() == {"stopped": []}  # nothing runs yet
    assert _stop(comfy_server, ["not", "an", "object"]).status_code == 400
    # A preview at every step: each step's progress value is then sent (plain progress values are
    # throttled in time), so the last one reported is the step training stopped at.
    prompt = _with_save(splice_graph(splice_files, steps=5000, preview_every=1, seed=4321), "splice/stopped")
    execution = comfy_server.submit(prompt)
    with execution:
        _first_progress(execution)
        answer = _stop(comfy_server, {"node_id": TRAIN})
        result = execution.wait(timeout=240)
    assert answer.status_code == 200
    assert answer.json()["stopped"] == [{"prompt_id": execution.prompt_id, "node_id": TRAIN}]
    result.raise_for_status()  # success, not an interruption: the graph went on
    assert result.output_images("8"), "Splice Output did not run on the kept generator"
    done = max(value for value, _ in result.progress(TRAIN))
    assert 1 <= done < 5000
    (entry,) = result.outputs[SAVE]["splice_generators"]
    saved = comfy_server.generators_dir / entry["subfolder"] / entry["filename"]  # where Load looks
    assert _train_state(saved)["step"] == done


def test_cancel_returns_nothing_and_the_autosave_resumes(comfy_server: ComfyServer,
                                                         splice_files: dict[str, str]) -> None:
    def autosaves() -> list[str]:
        info = comfy_server.object_info("SpliceLoadGenerator")["SpliceLoadGenerator"]
        return [n for n in info["input"]["required"]["generator_name"][1]["options"] if n.startswith("autosave/")]

    before = set(autosaves())
    # A preview at every step, so that every step's progress value is sent (see above).
    prompt = _with_save(splice_graph(splice_files, steps=5000, preview_every=1, seed=8765, autosave_every=2),
                        "splice/cancelled")
    execution = comfy_server.submit(prompt)
    with execution:
        execution.wait_for(lambda m: m.type == "progress" and str(m.data.get("node")) == TRAIN
                           and m.data.get("value", 0) >= 3, timeout=240)
        comfy_server.interrupt()
        result = execution.wait(timeout=120)
    assert result.status == "execution_interrupted", result.terminal
    assert SAVE not in result.outputs and not result.output_images("8")  # Cancel returns nothing
    (name,) = set(autosaves()) - before  # listed by Load Splice Generator without a restart
    step = _train_state(comfy_server.generators_dir / name)["step"]
    assert step >= 2 and step % 2 == 0

    resume = _with_save(splice_graph(splice_files, steps=step + 2, preview_every=0, seed=8765), "splice/resumed")
    resume["12"] = {"class_type": "SpliceLoadGenerator", "inputs": {"generator_name": name}}
    resume[TRAIN]["inputs"]["init_generator"] = ["12", 0]
    resumed = comfy_server.run(resume, timeout=240).raise_for_status()
    # it continued from the checkpoint: the progress bar starts after the saved step
    assert [value for value, _ in resumed.progress(TRAIN)][0] == step + 1
    (entry,) = resumed.outputs[SAVE]["splice_generators"]
    saved = comfy_server.generators_dir / entry["subfolder"] / entry["filename"]  # where Load looks
    assert _train_state(saved)["step"] == step + 2


def test_a_negative_time_budget_is_rejected(comfy_server: ComfyServer, splice_files: dict[str, str]) -> None:
    status, body = comfy_server.queue(splice_graph(splice_files, max_minutes=-1.0))
    assert status == 400 and TRAIN in body.get("node_errors", {}), body
