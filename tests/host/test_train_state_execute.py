"""Stop and keep, time budget, autosave/resume and out-of-memory handling of Train Generator and
Splice Output, run inside ComfyUI's real modules (see comfy_in_process.py for the set-up; the
server and browser tests drive the same features over HTTP and from the button)."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import torch

from comfy_in_process import Comfy, inference_image, train_node

STRUCTURE, APPEARANCE = inference_image(48, 64), inference_image(56, 40, seed=1)


def _weights(trained: Any) -> dict[str, torch.Tensor]:
    return trained.generator.state_dict()


def test_stop_and_keep_returns_the_generator_trained_so_far(comfy: Comfy, losses: tuple[Any, Any]) -> None:
    import comfy.utils as comfy_utils

    stop = comfy.module("nodes.stop")
    answers: list[list[dict[str, str]]] = []
    updates: list[tuple[int, int, bool]] = []

    def hook(value: int, total: int, preview: Any, node_id: str | None = None) -> None:
        updates.append((value, total, preview is not None))
        # The click, on the preview of step 2: previews are sent at every step they are due
        # (preview_every=1), unlike progress values, which are throttled in time.
        if preview is not None and value == 2:
            answers.append(stop.request_stop(node_id="42"))  # what the route does for node 42

    previous = comfy_utils.PROGRESS_BAR_HOOK
    comfy_utils.set_progress_bar_global_hook(hook)
    try:
        out = comfy.run("SpliceTrainGenerator", hidden={comfy.io.Hidden.unique_id: "42"},
                        structure=STRUCTURE, appearance=APPEARANCE, structure_loss=losses[0],
                        appearance_loss=losses[1], steps=500, preview_every=1)
    finally:
        comfy_utils.set_progress_bar_global_hook(previous)
    kept, loss_map, result = out[0], out[1], out[2]
    assert answers == [[{"prompt_id": "None", "node_id": "42"}]]
    assert kept.steps_done == 2 and len(loss_map["loss"]) == 2
    assert updates[-1] == (2, 500, False)  # a final, unthrottled progress update with the steps done
    assert result.shape == (1, 48, 64, 3)
    assert stop.request_stop(node_id="42") == []  # the run is no longer registered


def test_a_time_budget_ends_training_early_with_a_generator(comfy: Comfy, losses: tuple[Any, Any]) -> None:
    out = train_node(comfy, losses, STRUCTURE, APPEARANCE, steps=500, preview_every=0, max_minutes=1e-6)
    assert out[0].steps_done == 1


def test_autosave_appears_in_load_and_resumes_exactly(comfy: Comfy, losses: tuple[Any, Any]) -> None:
    def listed() -> list[str]:
        info = comfy.nodes["SpliceLoadGenerator"].GET_NODE_INFO_V1()
        return [n for n in info["input"]["required"]["generator_name"][1]["options"] if n.startswith("autosave/")]

    before = set(listed())
    train_node(comfy, losses, STRUCTURE, APPEARANCE, steps=2, preview_every=0, autosave_every=1)
    (name,) = set(listed()) - before
    folder = comfy.generators_dir / "autosave"
    assert sorted(p.name for p in folder.iterdir()) == [name.split("/", 1)[1]]  # no temporary left
    loaded = comfy.run("SpliceLoadGenerator", generator_name=name)[0]
    assert loaded.steps_done == 2
    resumed = train_node(comfy, losses, STRUCTURE, APPEARANCE, steps=4, preview_every=0, init_generator=loaded)[0]
    straight = train_node(comfy, losses, STRUCTURE, APPEARANCE, steps=4, preview_every=0)[0]
    assert resumed.steps_done == 4
    for key, value in _weights(straight).items():
        assert torch.equal(value, _weights(resumed)[key]), key
    # a second run never overwrites the first run's file
    train_node(comfy, losses, STRUCTURE, APPEARANCE, steps=1, preview_every=0, autosave_every=1)
    assert len(set(listed()) - before) == 2


def _live_trainers() -> int:
    from comfy_splice.train import SpliceTrainer  # the pack's copy is loaded under its own name

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == SpliceTrainer.__name__)


def test_out_of_memory_explains_the_fix_and_returns_the_memory(comfy: Comfy, losses: tuple[Any, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rt = comfy.module("nodes.comfy_runtime")
    trained = train_node(comfy, losses, STRUCTURE, APPEARANCE, steps=1, preview_every=0)[0]
    # The estimate before the run says it fits (as if the process held nothing yet); then the
    # process is over the 1 MiB budget at the first step.
    monkeypatch.setattr(rt, "free_memory", lambda device, need: 1 << 40)
    monkeypatch.setenv(rt.MEMORY_BUDGET_ENV, "1")
    with pytest.raises(torch.OutOfMemoryError) as caught:
        train_node(comfy, losses, STRUCTURE, APPEARANCE, steps=50, preview_every=0)
    message = str(caught.value)
    assert isinstance(caught.value, rt.SpliceOutOfMemoryError)
    for advice in ("smaller images", "ViT-S/8", "free other models", "memory has been returned"):
        assert advice in message, message
    assert _live_trainers() == 0, "the failed run's trainer (and its tensors) is still referenced"
    with pytest.raises(torch.OutOfMemoryError, match="lower batch_size"):
        comfy.run("SpliceApply", generator=trained, images=inference_image(40, 40, batch=2), batch_size=1)
    monkeypatch.delenv(rt.MEMORY_BUDGET_ENV)
    assert train_node(comfy, losses, STRUCTURE, APPEARANCE, steps=1, preview_every=0)[0].steps_done == 1
