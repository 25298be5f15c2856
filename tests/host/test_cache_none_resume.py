"""Work is never lost to ComfyUI's cache: on a server started with ``--cache-none`` (nothing is
kept between prompts, as after a RAM-pressure eviction), queueing the identical Splice prompt
again finds the finished run in its autosave and trains nothing.

The server is one of its own (``comfy_server_factory``), so no other test's autosaves are there.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from safetensors.torch import load_file

from splice_prompts import APPEARANCE_SIZE, STRUCTURE_SIZE, TINY, TRAIN, sample_picture, splice_graph
from tools.harness.comfy_server import ComfyServer

STEPS, EVERY = 6, 4
SAVE_GENERATOR, SAVE_RESULT = "11", "12"


@pytest.fixture(scope="module")
def cacheless(comfy_server_factory: Callable[..., ComfyServer],
              tiny_dino_file: Path) -> tuple[ComfyServer, dict[str, str]]:
    server = comfy_server_factory("--cache-none", name="cache-none")
    shutil.copy(tiny_dino_file, server.models_dir / TINY)
    files = {"structure": server.upload_image(sample_picture(STRUCTURE_SIZE, 1), name="splice_structure.png"),
             "appearance": server.upload_image(sample_picture(APPEARANCE_SIZE, 2), name="splice_appearance.png")}
    return server, files


def _prompt(files: dict[str, str], prefix: str) -> dict[str, Any]:
    # preview_every=1: every step's progress value is sent (plain values are throttled in time),
    # so the progress messages list every step trained.
    prompt = splice_graph(files, steps=STEPS, preview_every=1, seed=11, autosave_every=EVERY, prefix=prefix)
    prompt[SAVE_GENERATOR] = {"class_type": "SpliceSaveGenerator",
                              "inputs": {"generator": [TRAIN, 0], "filename_prefix": prefix}}
    prompt[SAVE_RESULT] = {"class_type": "SaveImage", "inputs": {"images": [TRAIN, 2], "filename_prefix": prefix}}
    return prompt


def _saved_generator(server: ComfyServer, outputs: dict[str, Any]) -> dict[str, Any]:
    (entry,) = outputs[SAVE_GENERATOR]["splice_generators"]
    return load_file(str(server.generators_dir / entry["subfolder"] / entry["filename"]))


def _saved_result(server: ComfyServer, run: Any) -> bytes:
    (image,) = run.output_images(SAVE_RESULT)
    return server.view_image(image["filename"], image["subfolder"]).tobytes()


def test_a_dropped_result_is_found_in_its_autosave_without_training(
        cacheless: tuple[ComfyServer, dict[str, str]]) -> None:
    server, files = cacheless
    first = server.run(_prompt(files, "cache/first"), timeout=300).raise_for_status()
    assert {value for value, _ in first.progress(TRAIN)} == set(range(1, STEPS + 1))
    autosaves = sorted((server.generators_dir / "autosave").glob("*.safetensors"))
    assert len(autosaves) == 1

    second = server.run(_prompt(files, "cache/second"), timeout=300).raise_for_status()
    assert TRAIN not in second.cached_nodes()  # --cache-none: the node ran again ...
    # ... and trained nothing: no step between 0 and STEPS was reported, only the full bar
    assert {value for value, _ in second.progress(TRAIN)} == {STEPS}
    assert any("nothing to train" in text for text in second.texts(TRAIN)), second.texts(TRAIN)
    assert f"resuming the run at step {STEPS} of {STEPS}" in server.log_text()
    # the same generator, bit for bit, and the same result picture
    before, after = _saved_generator(server, first.outputs), _saved_generator(server, second.outputs)
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert value.equal(after[key]), key
    assert _saved_result(server, first) == _saved_result(server, second)
    # nothing new was written: the autosave of the run is still the one file
    assert sorted((server.generators_dir / "autosave").glob("*.safetensors")) == autosaves


def test_other_settings_train_afresh(cacheless: tuple[ComfyServer, dict[str, str]]) -> None:
    server, files = cacheless
    prompt = _prompt(files, "cache/other")
    prompt[TRAIN]["inputs"]["learning_rate"] = 0.003  # a different run: its autosave does not fit
    run = server.run(prompt, timeout=300).raise_for_status()
    assert {value for value, _ in run.progress(TRAIN)} == set(range(1, STEPS + 1))
