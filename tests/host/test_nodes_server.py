"""The Splice nodes in a real ComfyUI server, driven over HTTP and the websocket like the web UI.

Sizes are tiny on purpose (a 64x48 structure image, a 56x72 appearance image, the tiny random
ViT from ``tiny_dino_file``, a handful of steps): these tests check the wiring, messages,
errors and memory behaviour of the nodes, not the quality of the method.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from comfy_splice.dino.models import DEFAULT_MODEL, DINO_MODELS
from splice_prompts import STRUCTURE_SIZE, TINY, TRAIN, sample_picture, splice_graph
from tools.harness.comfy_client import RunResult
from tools.harness.comfy_server import ComfyServer

NODE_IDS = ("SpliceLoadDINO", "SpliceStructureLoss", "SpliceAppearanceLoss", "SpliceTrainGenerator",
            "SpliceApply", "SpliceSaveGenerator", "SpliceLoadGenerator", "SpliceVisualizeStructure",
            "SpliceMetrics", "SpliceSelectKeyframes")
# Every DINO file name the pack knows (both spellings), from their one definition.
OFFICIAL = tuple(name for model in DINO_MODELS.values() for name in model.file_names)
WORKFLOW = {"last_node_id": 11, "nodes": [{"id": 6, "type": "SpliceTrainGenerator"}], "version": 0.4}


def _saved_image(server: ComfyServer, result: RunResult, node: str) -> Image.Image:
    (entry,) = result.output_images(node)
    return server.view_image(entry["filename"], entry["subfolder"], entry["type"])


@pytest.fixture(scope="module")
def full_run(comfy_server: ComfyServer, splice_files: dict[str, str]) -> tuple[dict[str, Any], RunResult, RunResult]:
    """The full graph plus the result image, Plot Loss Graph and Save Splice Generator; run, then
    queued again unchanged (the default cache must make the second run train nothing)."""
    prompt = splice_graph(splice_files, seed=11)
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": [TRAIN, 2], "filename_prefix": "nodes/result"}}
    prompt["10"] = {"class_type": "LossGraphNode", "inputs": {"loss": [TRAIN, 1], "filename_prefix": "loss"}}
    prompt["11"] = {"class_type": "SpliceSaveGenerator", "inputs": {"generator": [TRAIN, 0],
                                                                    "filename_prefix": "splice/nodes"}}
    extra = {"extra_pnginfo": {"workflow": WORKFLOW}}
    first = comfy_server.run(prompt, timeout=300, extra_data=extra).raise_for_status()
    again = comfy_server.run(prompt, timeout=120, extra_data=extra).raise_for_status()
    return prompt, first, again


# -- schemas --------------------------------------------------------------------------------------


def test_object_info_lists_every_node_with_tooltips(comfy_server: ComfyServer, splice_files: dict[str, str]) -> None:
    info = comfy_server.object_info()
    for node_id in NODE_IDS:
        assert node_id in info, f"{node_id} missing from /object_info"
        node = info[node_id]
        assert node["category"] == "image/splice" and node["description"]
        assert node["python_module"] == "custom_nodes.comfy-splice"
        for name, spec in node["input"]["required"].items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(node["output_tooltips"]), node_id
    train = info["SpliceTrainGenerator"]
    # (input order: checked against the shipped workflows in tests/browser/test_workflow_files.py)
    assert train["output"] == ["SPLICE_GENERATOR", "LOSS_MAP", "IMAGE"]
    assert train["output_name"] == ["generator", "loss_history", "result"]
    assert train["input"]["required"]["steps"][1]["min"] == 1
    assert train["input"]["required"]["seed"][1]["control_after_generate"] is True
    assert info["SpliceSaveGenerator"]["output_node"] is True
    # Outputs are referred to by index in saved workflows: new ones only ever come last.
    assert info["SpliceMetrics"]["output"] == ["STRING", "FLOAT", "FLOAT", "IMAGE", "MASK"]
    # Core's Plot Loss Graph takes exactly the type Train Generator outputs.
    assert info["LossGraphNode"]["input"]["required"]["loss"][0] == "LOSS_MAP"
    options = info["SpliceLoadDINO"]["input"]["required"]["model_name"][1]["options"]
    # only files on disk: an official name that is absent is absent from the list (the newest
    # frontend then flags it as a missing model)
    assert TINY in options and not set(OFFICIAL) & set(options)
    assert info["SpliceLoadDINO"]["input"]["required"]["model_name"][1]["default"] == \
        DINO_MODELS[DEFAULT_MODEL].hf_file_name


def test_model_lists_merge_folders_and_refresh_without_restart(comfy_server: ComfyServer,
                                                               splice_files: dict[str, str],
                                                               tiny_dino_file: Path) -> None:
    def options(node: str, name: str) -> list[str]:
        return comfy_server.object_info(node)[node]["input"]["required"][name][1]["options"]

    assert "late_arrival.pth" not in options("SpliceLoadDINO", "model_name")
    # One file in the folder from extra_model_paths.yaml, one in the pack's default folder.
    shutil.copy(tiny_dino_file, comfy_server.models_dir / "late_arrival.pth")
    default_folder = comfy_server.base_dir / "models" / "splice_dino"
    default_folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_dino_file, default_folder / "in_default_folder.pth")
    listed = options("SpliceLoadDINO", "model_name")
    assert "late_arrival.pth" in listed and "in_default_folder.pth" in listed
    (comfy_server.generators_dir / "placeholder.safetensors").write_bytes(b"")
    assert "placeholder.safetensors" in options("SpliceLoadGenerator", "generator_name")
    (comfy_server.generators_dir / "placeholder.safetensors").unlink()


# -- the full graph ---------------------------------------------------------------------------------


def test_full_graph_trains_with_progress_and_previews(comfy_server: ComfyServer,
                                                      full_run: tuple[dict[str, Any], RunResult, RunResult]) -> None:
    _, result, _ = full_run
    progress = result.progress(TRAIN)
    assert progress, "Train Generator sent no progress messages"
    assert {total for _, total in progress} == {6}
    values = [value for value, _ in progress]
    assert values == sorted(values) and values[-1] == 6 and 1 in values
    previews = result.previews
    assert len(previews) >= 3  # preview_every=2 over 6 steps
    for preview in previews:
        assert preview.image_format == "JPEG"
        assert preview.image().size == STRUCTURE_SIZE
    saved = _saved_image(comfy_server, result, "8")
    assert saved.size == STRUCTURE_SIZE
    assert _saved_image(comfy_server, result, "9").size == STRUCTURE_SIZE
    # Splice Output on the structure image computes the same thing as Train's result output.
    a = np.asarray(saved.convert("RGB"), dtype=np.int16)
    b = np.asarray(_saved_image(comfy_server, result, "9").convert("RGB"), dtype=np.int16)
    assert np.abs(a - b).max() <= 1


def test_identical_prompt_does_not_train_again(full_run: tuple[dict[str, Any], RunResult, RunResult]) -> None:
    _, _, again = full_run
    assert again.progress(TRAIN) == []
    assert TRAIN in again.cached_nodes()
    assert again.previews == []


def test_loss_history_plots_with_cores_plot_loss_graph(comfy_server: ComfyServer,
                                                       full_run: tuple[dict[str, Any], RunResult, RunResult]) -> None:
    _, result, _ = full_run
    (graph,) = result.output_images("10")
    plot = comfy_server.view_image(graph["filename"], graph["subfolder"], graph["type"])
    assert plot.size == (840, 520)  # core's 800x480 canvas + 40 px margins
    pixels = np.asarray(plot.convert("RGB"))
    assert ((pixels[..., 2] > 200) & (pixels[..., 0] < 80)).sum() > 50  # the blue loss curve


def test_save_load_apply_gives_the_same_pixels(comfy_server: ComfyServer, splice_files: dict[str, str],
                                               full_run: tuple[dict[str, Any], RunResult, RunResult]) -> None:
    prompt, result, _ = full_run
    (entry,) = result.outputs["11"]["splice_generators"]
    saved = comfy_server.generators_dir / entry["subfolder"] / entry["filename"]
    assert saved.is_file() and saved.name.startswith("nodes_") and saved.suffix == ".safetensors"
    with safe_open(str(saved), framework="pt") as handle:
        metadata = handle.metadata()
    # ComfyUI adds its own bookkeeping ("is_changed") to the prompt it hands to output nodes.
    stored = json.loads(metadata["prompt"])
    assert {k: (v["class_type"], v["inputs"]) for k, v in stored.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in prompt.items()}
    assert json.loads(metadata["workflow"]) == WORKFLOW
    assert json.loads(metadata["splice_config"])["steps"] == 6

    shutil.copy(saved, comfy_server.generators_dir / "roundtrip.safetensors")
    reload = {
        "1": {"class_type": "LoadImage", "inputs": {"image": splice_files["structure"]}},
        "2": {"class_type": "SpliceLoadGenerator", "inputs": {"generator_name": "roundtrip.safetensors"}},
        "3": {"class_type": "SpliceApply", "inputs": {"generator": ["2", 0], "images": ["1", 0], "batch_size": 4}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "nodes/reloaded"}},
    }
    reloaded = comfy_server.run(reload, timeout=120).raise_for_status()
    original = np.asarray(_saved_image(comfy_server, result, "8"))
    again = np.asarray(_saved_image(comfy_server, reloaded, "4"))
    assert original.shape == again.shape and np.array_equal(original, again)


# -- interrupt --------------------------------------------------------------------------------------


def test_interrupt_ends_training_and_the_server_goes_on(comfy_server: ComfyServer,
                                                        splice_files: dict[str, str]) -> None:
    """Cancel during training ends the run as interrupted, at the training node. How many steps
    run between the client's request and its arrival depends on the machine, so "within one
    step" is checked where the interrupt comes at a known step (test_nodes_execute.py's
    test_training_honours_interrupt_within_one_step); here the run must not finish."""
    execution = comfy_server.submit(splice_graph(splice_files, steps=5000, preview_every=0, seed=12345))
    with execution:
        execution.wait_for(lambda m: m.type == "progress" and str(m.data.get("node")) == TRAIN, timeout=240)
        comfy_server.interrupt()
        result = execution.wait(timeout=120)
    assert result.status == "execution_interrupted", result.terminal
    assert str(result.terminal.get("node_id")) == TRAIN
    assert not result.output_images("8")  # nothing after the training node ran
    values = [value for value, _ in result.progress(TRAIN)]
    assert values[0] == 1 and max(values) < 5000, values  # a finished run reports step 5000
    # The server goes on serving: the next prompt trains and finishes.
    comfy_server.run(splice_graph(splice_files, steps=2, preview_every=0, seed=12346), timeout=240).raise_for_status()


# -- user mistakes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("node", "name", "value"), [
    (TRAIN, "steps", 0),
    (TRAIN, "learning_rate", 5.0),
    (TRAIN, "preview_every", -1),
    ("4", "block", 999),
    ("7", "batch_size", 0),
])
def test_out_of_range_values_are_rejected_before_running(comfy_server: ComfyServer, splice_files: dict[str, str],
                                                         node: str, name: str, value: Any) -> None:
    prompt = splice_graph(splice_files)
    prompt[node]["inputs"][name] = value
    status, body = comfy_server.queue(prompt)
    assert status == 400, body
    errors = body["node_errors"][node]["errors"]
    assert any(name in json.dumps(error) for error in errors), errors


def _write_corrupt(server: ComfyServer) -> str:
    (server.models_dir / "corrupt_dino.pth").write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    return "corrupt_dino.pth"


def _write_not_a_vit(server: ComfyServer) -> str:
    save_file({"conv.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(8)},
              str(server.models_dir / "not_a_vit.safetensors"))
    return "not_a_vit.safetensors"


BAD_INPUTS = {
    "missing weights": (lambda s: {"dino": "dino_deitsmall16_pretrain.pth"},
                        ["dino_deitsmall16_pretrain.pth", "https://huggingface.co/timm/vit_small_patch16_224.dino/",
                         "download_if_missing"],
                        "3"),
    "corrupt file": (lambda s: {"dino": _write_corrupt(s)}, ["corrupt_dino.pth", "Could not read"], "3"),
    "not a DINO ViT": (lambda s: {"dino": _write_not_a_vit(s)}, ["not_a_vit.safetensors", "not a DINO ViT"], "3"),
    # ComfyUI 0.3.75 does not check V3 combo values against their options before running, so
    # the nodes themselves must refuse names that are not in their lists.
    "unknown file": (lambda s: {"dino": "no_such_weights.pth"},
                     ["no_such_weights.pth", "is not in any splice_dino folder"], "3"),
    "unknown dtype": (lambda s: {"dtype": "fp16"}, ["dtype 'fp16' is not one of auto, bf16, fp32"], TRAIN),
    "smaller than a patch": (lambda s: {"structure": "tiny"}, ["12x10 pixels", "minimum is 32x32"], TRAIN),
    "1x1 image": (lambda s: {"appearance": "dot"}, ["1x1 pixels", "minimum is 32x32"], TRAIN),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_give_a_clear_error_and_the_server_keeps_serving(comfy_server: ComfyServer,
                                                                     splice_files: dict[str, str], case: str) -> None:
    make, expected, failing_node = BAD_INPUTS[case]
    result = comfy_server.run(splice_graph(splice_files, **make(comfy_server)), timeout=120)
    assert result.status == "execution_error", result.terminal
    assert str(result.terminal["node_id"]) == failing_node
    for text in expected:
        assert text in result.error_message, result.error_message
    if case == "missing weights":
        assert str(comfy_server.models_dir) in result.error_message  # the first splice_dino folder
    assert comfy_server.is_running() and comfy_server.system_stats()


def test_an_appearance_batch_is_refused_and_the_server_keeps_serving(comfy_server: ComfyServer,
                                                                      splice_files: dict[str, str]) -> None:
    prompt = splice_graph(splice_files)
    prompt["12"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 2}}
    prompt[TRAIN]["inputs"]["appearance"] = ["12", 0]
    result = comfy_server.run(prompt, timeout=120)
    assert result.status == "execution_error" and str(result.terminal["node_id"]) == TRAIN
    assert "The appearance input is a batch of 2 images" in result.error_message
    assert "ImageFromBatch" in result.error_message
    assert comfy_server.is_running() and comfy_server.system_stats()


# -- a shot: keyframes in, the whole clip out -----------------------------------------------------

CLIP_FRAMES, CLIP_FPS, CLIP_SIZE, CLIP_AUDIO_RATE = 30, 10, (64, 48), 16000


def _write_clip(path: Path) -> float:
    """A 30-frame pan with a sine tone as its sound track (H.264 + AAC); returns the sound's seconds."""
    import av

    base = np.asarray(sample_picture((CLIP_SIZE[0] * 2, CLIP_SIZE[1]), 5))
    seconds = CLIP_FRAMES / CLIP_FPS
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * CLIP_AUDIO_RATE)) / CLIP_AUDIO_RATE))
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("h264", rate=CLIP_FPS)
        video.width, video.height = CLIP_SIZE
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=CLIP_AUDIO_RATE, layout="mono")
        for i in range(CLIP_FRAMES):
            frame = np.ascontiguousarray(base[:, 2 * i: 2 * i + CLIP_SIZE[0]])
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        sound = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="fltp", layout="mono")
        sound.sample_rate = CLIP_AUDIO_RATE
        container.mux([*audio.encode(sound), *audio.encode(None)])
    return seconds


def test_three_keyframes_train_once_and_thirty_frames_come_out_with_fps_and_sound(
        comfy_server: ComfyServer, splice_files: dict[str, str]) -> None:
    """LoadVideo -> Get Video Components -> Select Keyframes (every 10th: 3 keyframes) -> Train
    Generator -> Splice Output on all 30 frames -> Create Video (the clip's fps and audio) -> Save
    Video, in the real server."""
    import av

    clip = comfy_server.input_dir / "splice_test_clip.mp4"
    seconds = _write_clip(clip)
    steps = 4
    prompt = splice_graph(splice_files, steps=steps, preview_every=0, full_image_every=2, prefix="shot/frames")
    prompt.update({
        "20": {"class_type": "LoadVideo", "inputs": {"file": clip.name}},
        "21": {"class_type": "GetVideoComponents", "inputs": {"video": ["20", 0]}},
        "22": {"class_type": "SpliceSelectKeyframes", "inputs": {"images": ["21", 0], "every_nth": 10}},
        "23": {"class_type": "SaveImage", "inputs": {"images": [TRAIN, 2], "filename_prefix": "shot/keyframes"}},
        "24": {"class_type": "CreateVideo", "inputs": {"images": ["7", 0], "fps": ["21", 2], "audio": ["21", 1]}},
        "25": {"class_type": "SaveVideo", "inputs": {"video": ["24", 0], "filename_prefix": "shot/video",
                                                     "format": "auto", "codec": "auto"}},
    })
    del prompt["1"]
    prompt[TRAIN]["inputs"]["structure"] = ["22", 0]
    prompt["7"]["inputs"].update(images=["21", 0], batch_size=4)
    result = comfy_server.run(prompt, timeout=300).raise_for_status()

    assert result.progress(TRAIN)[-1] == (steps, steps)  # one training run for the shot
    apply_progress = result.progress("7")
    assert apply_progress[0] == (4, CLIP_FRAMES) and apply_progress[-1] == (CLIP_FRAMES, CLIP_FRAMES)
    keyframes = result.output_images("23")
    assert len(keyframes) == 3  # the generator applied to each keyframe
    frames = result.output_images("8")
    assert len(frames) == CLIP_FRAMES
    assert comfy_server.view_image(frames[-1]["filename"], frames[-1]["subfolder"]).size == CLIP_SIZE
    (saved,) = result.output_images("25")
    with av.open(str(comfy_server.output_dir / saved["subfolder"] / saved["filename"])) as container:
        video = container.streams.video[0]
        assert video.average_rate == CLIP_FPS and (video.width, video.height) == CLIP_SIZE
        (audio,) = container.streams.audio
        assert audio.sample_rate == CLIP_AUDIO_RATE
        assert abs(float(audio.duration * audio.time_base) - seconds) < 0.1
        assert sum(1 for _ in container.decode(video=0)) == CLIP_FRAMES


# -- analysis ---------------------------------------------------------------------------------------


def test_visualize_structure_and_metrics(comfy_server: ComfyServer, splice_files: dict[str, str]) -> None:
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": splice_files["structure"]}},
        "2": {"class_type": "LoadImage", "inputs": {"image": splice_files["appearance"]}},
        "3": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": TINY, "download_if_missing": False}},
        "4": {"class_type": "SpliceVisualizeStructure", "inputs": {"dino": ["3", 0], "image": ["1", 0], "block": -1}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "nodes/structure"}},
        "6": {"class_type": "SpliceMetrics", "inputs": {"dino": ["3", 0], "output": ["1", 0], "structure": ["1", 0],
                                                        "appearance": ["2", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 3], "filename_prefix": "nodes/no_drift"}},
        # The appearance image (another size) scored as if it were the output: its structure drifted.
        "8": {"class_type": "SpliceMetrics", "inputs": {"dino": ["3", 0], "output": ["2", 0], "structure": ["1", 0],
                                                        "appearance": ["2", 0], "drift_scale": 0.1}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 3], "filename_prefix": "nodes/drift"}},
        "10": {"class_type": "MaskToImage", "inputs": {"mask": ["8", 4]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "nodes/drift_map"}},
    }
    result = comfy_server.run(prompt, timeout=120).raise_for_status()
    picture = _saved_image(comfy_server, result, "5")
    assert picture.size == STRUCTURE_SIZE
    assert np.asarray(picture).std() > 5
    (report,) = result.outputs["6"]["text"]
    assert "structure distance: 0.00000" in report  # the structure image scored against itself
    assert "DINO-I:" in report and "structure drift: peak 0.00000" in report
    unchanged = _saved_image(comfy_server, result, "7")
    assert unchanged.size == STRUCTURE_SIZE and not np.asarray(unchanged).any()  # all black
    (report,) = result.outputs["8"]["text"]
    assert "heatmap 0 (black) to 0.1 (white)" in report
    heat, drift = _saved_image(comfy_server, result, "9"), _saved_image(comfy_server, result, "11")
    assert heat.size == drift.size == STRUCTURE_SIZE  # at the structure image's size
    assert heat.mode == "RGB" and np.asarray(heat).max() > 25 and np.asarray(drift).max() > 0


# -- memory -----------------------------------------------------------------------------------------


def test_memory_stays_flat_over_ten_trainings(comfy_server: ComfyServer, splice_files: dict[str, str]) -> None:
    rss = []
    for seed in range(1000, 1010):  # a new seed each time, so every prompt trains again
        comfy_server.run(splice_graph(splice_files, steps=1, preview_every=1, seed=seed, prefix="nodes/rss"),
                         timeout=240).raise_for_status()
        rss.append(comfy_server.rss_bytes())
    assert rss[-1] <= rss[0] * 1.10, [f"{r / 2**20:.0f} MiB" for r in rss]
