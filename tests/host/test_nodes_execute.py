"""The nodes' own logic, run inside ComfyUI's real Python modules (no server, nothing stubbed).

ComfyUI (the provisioned 0.3.75 copy, or $COMFYUI_PATH) is put first on sys.path and imported
with ``--cpu``; the pack is loaded the way ComfyUI loads a custom node (its ``__init__.py`` as a
package under its own name) by the ``comfy`` fixture (tests/host/conftest.py), and every
``execute`` runs under ``torch.inference_mode()`` as in ComfyUI's executor. The server tests
(test_nodes_server.py) cover the same nodes end to end.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from comfy_in_process import PACK_NAME, Comfy, inference_image, train_node

# The node ids are the pack's public contract: saved workflows name them. The order of each
# node's inputs matters as much (UI workflows store widget values by position); it is checked
# against the shipped workflows, read from the live schemas, in tests/browser/test_workflow_files.py.
CONTRACT_NODES = {
    "SpliceLoadDINO", "SpliceStructureLoss", "SpliceAppearanceLoss", "SpliceTrainGenerator", "SpliceApply",
    "SpliceSaveGenerator", "SpliceLoadGenerator", "SpliceVisualizeStructure", "SpliceMetrics",
    "SpliceSelectKeyframes", "SpliceDinoCosegmentation", "SpliceDinoPartCosegmentation",
    "SpliceDinoCorrespondences", "SpliceDinoFeaturesPCA", "SpliceCropToMask", "SpliceCompositeInMask",
    "SpliceLoadMaterialistic",
    "SpliceSelectMaterial",
}


# -- schema ---------------------------------------------------------------------------------------


def test_entrypoint_lists_the_contract_nodes_with_tooltips(comfy: Comfy) -> None:
    assert set(comfy.nodes) == CONTRACT_NODES
    assert not hasattr(comfy.pack, "NODE_CLASS_MAPPINGS")  # it would make ComfyUI skip comfy_entrypoint
    category = comfy.module("nodes.api").CATEGORY
    names = {value for key, value in vars(comfy.module("nodes.names")).items() if key.isupper()}
    shown = []
    for node_id, cls in comfy.nodes.items():
        info = cls.GET_NODE_INFO_V1()
        assert info["category"] in (category, f"{category}/descriptors")
        assert len(info["description"]) > 40, node_id
        shown.append(info["display_name"])
        for section in ("required", "optional"):
            for name, (_, options) in info["input"].get(section, {}).items():
                assert len(options.get("tooltip") or "") > 10, f"{node_id}.{name} has no tooltip"
    # Every display name comes from nodes/names.py, and each names one node (messages and
    # tooltips that point at a node read the same constants).
    assert sorted(shown) == sorted(names)


def test_folders_merge_with_configured_paths(comfy: Comfy) -> None:
    paths_mod = comfy.module("nodes.paths")
    folders = comfy.folder_paths.folder_names_and_paths["splice_dino"]
    default = str(Path(comfy.folder_paths.models_dir) / "splice_dino")
    # The folder configured before the pack loaded stays first (downloads go there); the
    # pack's default folder is added after it, once, however often registration runs.
    paths_mod.register_folders()
    paths_mod.register_folders()
    assert folders[0][0] == str(comfy.dino_dir)
    assert comfy.folder_paths.folder_names_and_paths["splice_dino"][0].count(default) == 1
    assert {".pth", ".safetensors"} <= comfy.folder_paths.folder_names_and_paths["splice_dino"][1]
    assert paths_mod.dino_folders()[0] == str(comfy.dino_dir)


def test_model_list_refreshes_without_restart(comfy: Comfy) -> None:
    cls = comfy.nodes["SpliceLoadDINO"]

    def options() -> list[str]:
        return cls.GET_NODE_INFO_V1()["input"]["required"]["model_name"][1]["options"]

    before = options()
    assert "tiny.pth" in before
    # only files on disk: an absent official name is absent from the list, so the newest
    # frontend flags it as a missing model when a workflow names it
    assert not {"dino_vitbase8_pretrain.pth", "vit_base_patch8_224.dino.safetensors"} & set(before)
    (comfy.dino_dir / "sub").mkdir(exist_ok=True)
    (comfy.dino_dir / "sub" / "new_weights.safetensors").write_bytes(b"x")
    (comfy.dino_dir / "notes.txt").write_text("not weights")
    after = options()
    assert "sub/new_weights.safetensors" in after and "notes.txt" not in after


# -- loading DINO -----------------------------------------------------------------------------


def test_missing_official_weights_name_folder_file_url_and_switch(comfy: Comfy) -> None:
    with pytest.raises(ValueError) as error:
        comfy.run("SpliceLoadDINO", model_name="dino_vitbase16_pretrain.pth", download_if_missing=False)
    message = str(error.value)
    assert str(comfy.dino_dir) in message
    assert "dino_vitbase16_pretrain.pth" in message
    assert "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth" in message
    assert "download_if_missing" in message
    assert not (comfy.dino_dir / "dino_vitbase16_pretrain.pth").exists()


def test_loader_fingerprint_follows_the_file(comfy: Comfy) -> None:
    cls = comfy.nodes["SpliceLoadDINO"]
    path = comfy.dino_dir / "fingerprinted.pth"
    shutil.copy(comfy.dino_dir / "tiny.pth", path)
    first = cls.fingerprint_inputs(model_name="fingerprinted.pth", download_if_missing=False)
    assert first == cls.fingerprint_inputs(model_name="fingerprinted.pth", download_if_missing=False)
    path.write_bytes(path.read_bytes() + b"\0")
    assert cls.fingerprint_inputs(model_name="fingerprinted.pth", download_if_missing=False) != first
    path.unlink()
    assert cls.fingerprint_inputs(model_name="fingerprinted.pth", download_if_missing=False) == "missing"


def test_loss_block_is_checked_against_the_backbone(comfy: Comfy, dino: Any) -> None:
    assert comfy.run("SpliceStructureLoss", dino=dino, weight=1.0, block=-2)[0].block == -2
    with pytest.raises(ValueError, match=r"has 2 blocks: set 'block' to -1 \(last\) or a value from -2 to 1"):
        comfy.run("SpliceAppearanceLoss", dino=dino, weight=10.0, block=2)


# -- training ---------------------------------------------------------------------------------


def test_training_on_inference_tensors_gives_generator_history_and_result(comfy: Comfy, trained: Any) -> None:
    generator, loss_map, result = trained.args
    assert type(generator).__name__ == "TrainedGenerator"
    assert result.shape == (1, 48, 64, 3) and result.dtype == torch.float32
    assert 0.0 <= float(result.min()) and float(result.max()) <= 1.0
    assert len(loss_map["loss"]) == 2 and all(isinstance(v, float) for v in loss_map["loss"])
    assert generator.config.steps == 2 and generator.config.lr == pytest.approx(0.002)
    assert all(not p.is_inference() for p in generator.generator.parameters())


@pytest.mark.parametrize("preview_every", [1, 0])
def test_training_result_is_the_generator_applied_to_the_structure(
        comfy: Comfy, losses: tuple[Any, Any], preview_every: int) -> None:
    # With previews the last one (after the final step) is returned; without, it is computed.
    structure = inference_image(48, 64)
    generator, _, result = train_node(comfy, losses, structure, inference_image(72, 56, seed=1),
                                  preview_every=preview_every).args
    applied = comfy.run("SpliceApply", generator=generator, images=structure, batch_size=1)[0]
    torch.testing.assert_close(result, applied, rtol=1e-5, atol=1e-6)


def test_loss_map_draws_with_cores_plot_loss_graph(comfy: Comfy, trained: Any) -> None:
    from comfy_extras.nodes_train import LossGraphNode

    out = LossGraphNode.PREPARE_CLASS_CLONE({}).execute(loss=trained[1], filename_prefix="loss")
    assert out.ui is not None


def test_short_runs_still_log_enough_points(comfy: Comfy) -> None:
    log_every = comfy.module("nodes.train")._log_every
    assert log_every(2000) == 25 and log_every(6) == 1 and log_every(100) == 2


@pytest.mark.parametrize(("structure", "appearance", "expected"), [
    ((1, 48, 64), (3, 56, 56), "The appearance input is a batch of 3 images"),
    ((2, 48, 64), (2, 56, 56), "The appearance input is a batch of 2 images"),
    ((1, 1, 1), (1, 56, 56), "The structure image is 1x1 pixels; the minimum is 32x32"),
    ((1, 48, 64), (1, 12, 40), "The appearance image is 40x12 pixels; the minimum is 32x32"),
])
def test_bad_training_inputs_are_refused_up_front(comfy: Comfy, losses: tuple[Any, Any],
                                                  structure: tuple[int, int, int],
                                                  appearance: tuple[int, int, int], expected: str) -> None:
    s = inference_image(structure[1], structure[2], structure[0])
    a = inference_image(appearance[1], appearance[2], appearance[0])
    with pytest.raises(ValueError) as error:
        train_node(comfy, losses, s, a)
    assert expected in str(error.value)
    if "batch" in expected:
        assert "ImageFromBatch" in str(error.value)


def test_keyframes_from_a_clip_train_one_generator_for_the_shot(comfy: Comfy, losses: tuple[Any, Any]) -> None:
    """Select Keyframes picks frames 0, N, 2N ...; Train Generator takes them as one batch and
    returns the generator applied to each keyframe."""
    clip = inference_image(48, 64, batch=7, seed=4)
    keyframes = comfy.run("SpliceSelectKeyframes", images=clip, every_nth=3)[0]
    assert torch.equal(keyframes, clip[[0, 3, 6]])
    assert torch.equal(comfy.run("SpliceSelectKeyframes", images=clip, every_nth=100)[0], clip[:1])
    generator, loss_map, result = train_node(comfy, losses, keyframes, inference_image(72, 56, seed=1), steps=3,
                                         full_image_every=1).args
    assert len(loss_map["loss"]) == 3
    assert result.shape == (3, 48, 64, 3)
    applied = comfy.run("SpliceApply", generator=generator, images=keyframes, batch_size=2)[0]
    torch.testing.assert_close(result, applied, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="every_nth is 0"):
        comfy.run("SpliceSelectKeyframes", images=clip, every_nth=0)


def test_swapped_or_mixed_losses_are_refused(comfy: Comfy, dino: Any, losses: tuple[Any, Any]) -> None:
    s, a = inference_image(48, 64), inference_image(48, 64, seed=1)
    with pytest.raises(ValueError, match="structure_loss is connected to 'Appearance Loss"):
        train_node(comfy, (losses[1], losses[1]), s, a)
    other = comfy.run("SpliceLoadDINO", model_name="tiny.pth", download_if_missing=False)[0]
    # Same file through a second loader: the same model, accepted.
    same_file = comfy.run("SpliceAppearanceLoss", dino=other, weight=10.0, block=-1)[0]
    assert train_node(comfy, (losses[0], same_file), s, a, steps=1)[2].shape == (1, 48, 64, 3)
    shutil.copy(comfy.dino_dir / "tiny.pth", comfy.dino_dir / "tiny_copy.pth")
    third = comfy.run("SpliceLoadDINO", model_name="tiny_copy.pth", download_if_missing=False)[0]
    mixed = comfy.run("SpliceAppearanceLoss", dino=third, weight=10.0, block=-1)[0]
    with pytest.raises(ValueError, match="same 'Load DINO-ViT"):
        train_node(comfy, (losses[0], mixed), s, a)


@pytest.fixture
def progress_hook(comfy: Comfy) -> Iterator[list[tuple[int, int, Any]]]:
    """Record what nodes report through ComfyUI's global progress hook (the server installs the
    same kind of hook to send websocket messages)."""
    import comfy.utils as comfy_utils

    calls: list[tuple[int, int, Any]] = []
    previous = comfy_utils.PROGRESS_BAR_HOOK

    def hook(value: int, total: int, preview: Any, node_id: str | None = None) -> None:
        calls.append((value, total, preview))

    comfy_utils.set_progress_bar_global_hook(hook)
    try:
        yield calls
    finally:
        comfy_utils.set_progress_bar_global_hook(previous)


def test_training_reports_progress_and_previews(comfy: Comfy, losses: tuple[Any, Any],
                                                progress_hook: list[tuple[int, int, Any]]) -> None:
    train_node(comfy, losses, inference_image(48, 64), inference_image(40, 40, seed=1), steps=3, preview_every=2)
    assert [v for v, _, _ in progress_hook][0] == 1 and progress_hook[-1][:2] == (3, 3)
    previews = [(v, p) for v, _, p in progress_hook if p is not None]
    assert [v for v, _ in previews] == [2, 3]  # every 2 steps and at the end
    kind, picture, max_size = previews[0][1]
    assert kind == "JPEG" and picture.size == (64, 48) and max_size is None  # small: not enlarged


def test_progress_messages_are_throttled_but_interrupt_is_checked_every_step(
        comfy: Comfy, progress_hook: list[tuple[int, int, Any]]) -> None:
    import comfy.model_management as mm

    progress = comfy.module("nodes.comfy_runtime").Progress(1000, min_interval=3600)
    for done in range(1, 1001):
        progress.step(done)
    assert [v for v, _, _ in progress_hook] == [1, 1000]
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            progress.step(5)
    finally:
        mm.interrupt_current_processing(False)


def test_training_honours_interrupt_within_one_step(comfy: Comfy, losses: tuple[Any, Any]) -> None:
    import comfy.model_management as mm
    import comfy.utils as comfy_utils

    seen: list[int] = []

    def hook(value: int, total: int, preview: Any, node_id: str | None = None) -> None:
        seen.append(value)
        mm.interrupt_current_processing(True)  # "Cancel" while step `value` is reported

    previous = comfy_utils.PROGRESS_BAR_HOOK
    comfy_utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            train_node(comfy, losses, inference_image(48, 64), inference_image(48, 64, seed=1), steps=500,
                       preview_every=0)
    finally:
        comfy_utils.set_progress_bar_global_hook(previous)
        mm.interrupt_current_processing(False)
    assert seen == [1]  # the check after step 2 stopped it, not the end of the run


# -- applying, saving, loading -----------------------------------------------------------------------


def test_apply_keeps_size_and_is_batch_independent(comfy: Comfy, trained: Any) -> None:
    frames = inference_image(33, 47, batch=3, seed=5)
    together = comfy.run("SpliceApply", generator=trained[0], images=frames, batch_size=3)[0]
    alone = comfy.run("SpliceApply", generator=trained[0], images=frames, batch_size=1)[0]
    assert together.shape == (3, 33, 47, 3)
    # Per-image normalisation: the batch changes nothing but float rounding in the convolutions.
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    single = comfy.run("SpliceApply", generator=trained[0], images=frames[1:2], batch_size=4)[0]
    torch.testing.assert_close(single[0], together[1], rtol=0, atol=1e-5)
    assert float((together[0] - together[1]).abs().max()) > 1e-3  # different frames, different outputs
    assert together.is_contiguous() and together.dtype == torch.float32 and together.device.type == "cpu"


def test_apply_streams_chunks_into_one_output(comfy: Comfy, trained: Any) -> None:
    """A clip goes through in chunks of batch_size frames (what the device holds at once), with
    progress after each chunk (the core test checks the output is written in place)."""
    frames = inference_image(40, 40, batch=10, seed=6)
    seen: list[int] = []
    hook = trained[0].generator.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    progress = comfy.module("nodes.comfy_runtime").Progress
    updates: list[tuple[int, int]] = []
    original = progress.step
    progress.step = lambda self, done, total=None: (updates.append((done, total)), original(self, done, total))[1]
    try:
        out = comfy.run("SpliceApply", generator=trained[0], images=frames, batch_size=4)[0]
    finally:
        progress.step = original
        hook.remove()
    assert seen == [4, 4, 2]  # on the CPU the generator itself runs (elsewhere a copy on the device)
    assert updates == [(4, 10), (8, 10), (10, 10)]
    assert out.shape == (10, 40, 40, 3)


def test_apply_refuses_what_is_not_a_generator(comfy: Comfy, dino: Any) -> None:
    names = comfy.module("nodes.names")
    with pytest.raises(ValueError, match=re.escape(f"{names.TRAIN}' or '{names.LOAD_GENERATOR}'")):
        comfy.run("SpliceApply", generator=dino, images=inference_image(40, 40), batch_size=1)


def _saved_file(out: Any, comfy: Comfy) -> Path:
    (entry,) = out.ui["splice_generators"]
    return comfy.generators_dir / entry["subfolder"] / entry["filename"]


def test_save_writes_metadata_and_load_restores_the_same_pixels(comfy: Comfy, trained: Any) -> None:
    from safetensors import safe_open

    io = comfy.io
    prompt = {"1": {"class_type": "SpliceSaveGenerator", "inputs": {}}}
    workflow = {"nodes": [], "links": [], "version": 0.4}
    hidden = {io.Hidden.prompt: prompt, io.Hidden.extra_pnginfo: {"workflow": workflow}}
    first = _saved_file(comfy.run("SpliceSaveGenerator", hidden=hidden, generator=trained[0],
                                  filename_prefix="splice/unit"), comfy)
    second = _saved_file(comfy.run("SpliceSaveGenerator", hidden=hidden, generator=trained[0],
                                   filename_prefix="splice/unit"), comfy)
    assert first.name == "unit_00001_.safetensors" and second.name == "unit_00002_.safetensors"
    with safe_open(str(first), framework="pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["prompt"]) == prompt
    assert json.loads(metadata["workflow"]) == workflow
    assert json.loads(metadata["splice_config"])["steps"] == 2

    shutil.copy(first, comfy.generators_dir / "unit.safetensors")
    options = comfy.nodes["SpliceLoadGenerator"].GET_NODE_INFO_V1()["input"]["required"]["generator_name"][1]["options"]
    assert "unit.safetensors" in options
    loaded = comfy.run("SpliceLoadGenerator", generator_name="unit.safetensors")[0]
    frames = inference_image(48, 64, batch=2, seed=9)
    original = comfy.run("SpliceApply", generator=trained[0], images=frames, batch_size=2)[0]
    restored = comfy.run("SpliceApply", generator=loaded, images=frames, batch_size=2)[0]
    assert torch.equal(original, restored)


def test_disable_metadata_keeps_the_workflow_out(comfy: Comfy, trained: Any) -> None:
    from safetensors import safe_open

    io = comfy.io
    hidden = {io.Hidden.prompt: {"1": {}}, io.Hidden.extra_pnginfo: {"workflow": {"nodes": []}}}
    comfy.args.disable_metadata = True
    try:
        path = _saved_file(comfy.run("SpliceSaveGenerator", hidden=hidden, generator=trained[0],
                                     filename_prefix="private/gen"), comfy)
    finally:
        comfy.args.disable_metadata = False
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert "prompt" not in metadata and "workflow" not in metadata
    assert "splice_config" in metadata


def test_loading_a_file_that_is_not_a_generator_names_it(comfy: Comfy) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(comfy.generators_dir / "stranger.safetensors"))
    with pytest.raises(ValueError, match="stranger.safetensors is not a Splice generator"):
        comfy.run("SpliceLoadGenerator", generator_name="stranger.safetensors")


# -- analysis ---------------------------------------------------------------------------------


def test_visualize_structure_is_an_image_of_the_input_size(comfy: Comfy, dino: Any) -> None:
    picture = comfy.run("SpliceVisualizeStructure", dino=dino, image=inference_image(48, 64, batch=2), block=-1)[0]
    assert picture.shape == (2, 48, 64, 3)
    assert float(picture.min()) >= 0.0 and float(picture.max()) <= 1.0
    assert float(picture.std()) > 0.01
    with pytest.raises(ValueError, match="minimum is 16x16"):
        comfy.run("SpliceVisualizeStructure", dino=dino, image=inference_image(8, 64), block=-1)


def test_metrics_report_and_numbers(comfy: Comfy, dino: Any) -> None:
    a, b = inference_image(48, 64), inference_image(56, 56, seed=3)
    out = comfy.run("SpliceMetrics", dino=dino, output=a, structure=a, appearance=a)
    report, distance, similarity, heat, drift = out.args
    assert distance == pytest.approx(0.0, abs=1e-6) and similarity == pytest.approx(1.0, abs=1e-5)
    assert out.ui.as_dict() == {"text": (report,)}
    assert "structure distance" in report and "DINO-I" in report
    assert "structure drift: peak 0.00000, heatmap 0 (black) to 0.2 (white)" in report
    assert heat.shape == (1, 48, 64, 3) and drift.shape == (1, 48, 64)
    assert heat.abs().max() == 0 and drift.abs().max() == 0  # nothing drifted: black
    batch = torch.cat([a, inference_image(48, 64, seed=4)])
    out = comfy.run("SpliceMetrics", dino=dino, output=batch, structure=a, appearance=b, drift_scale=0.05)
    assert out[1] > 0.0 and "per image" in out[0] and "to 0.05 (white)" in out[0]
    heat, drift = out[3], out[4]
    # Structure a's size, one map per output image; the image scored against itself stays black.
    assert heat.shape == (2, 48, 64, 3) and drift.shape == (2, 48, 64)
    assert heat[0].abs().max() == 0 and heat[1].max() > 0.1
    assert drift[1].mean().item() == pytest.approx(2 * out[1], rel=0.05)  # the batch mean is half
    with pytest.raises(ValueError, match="drift_scale must be above 0"):
        comfy.run("SpliceMetrics", dino=dino, output=a, structure=a, appearance=a, drift_scale=0.0)
    with pytest.raises(ValueError, match="appearance batch has 2 images and the output 3"):
        comfy.run("SpliceMetrics", dino=dino, output=torch.cat([batch, a]), structure=a,
                  appearance=torch.cat([b, b]))


def test_library_errors_become_one_readable_value_error(comfy: Comfy, dino: Any) -> None:
    errors = comfy.module("nodes.errors")
    import comfy.model_management as mm

    raw = RuntimeError("linalg.svd: failed to converge\nException raised from svd at frame #0 ...")
    message = str(errors.readable(raw, "Visualize Structure (Splice)"))
    assert message.startswith("Visualize Structure (Splice) failed: linalg.svd: failed to converge.")
    assert "frame #0" not in message and "\n" not in message
    assert "not enough memory" in str(errors.readable(MemoryError(), "Splice Output"))
    assert errors.readable(mm.InterruptProcessingException(), "Splice Output") is None
    assert errors.readable(ValueError("short and ours"), "Splice Output") is None
    assert len(str(errors.readable(ValueError("x" * 10**6), "Splice Output"))) <= errors.MAX_MESSAGE_CHARS

    @errors.readable_errors("Some Node")
    def broken() -> None:
        {}["missing"]

    with pytest.raises(ValueError, match="Some Node failed: 'missing'") as info:
        broken()
    assert type(info.value) is ValueError and isinstance(info.value.__cause__, KeyError)
    # An Inf pixel is refused like a NaN one (the server tests can only send NaN through JSON).
    image = inference_image(48, 64)
    with torch.inference_mode():
        image[0, 3, 4, 1] = float("inf")
    with pytest.raises(ValueError, match="image: the image holds NaN or infinite values"):
        comfy.run("SpliceVisualizeStructure", dino=dino, image=image, block=-1)


def test_no_error_type_of_the_pack_reads_as_a_bug(comfy: Comfy) -> None:
    """Every exception class the pack defines (refusals, memory errors, weights, a stopped run),
    found by walking the loaded modules so a new one is covered too, passes the node wrapper
    with its message unchanged and never as 'this is a bug'."""
    errors = comfy.module("nodes.errors")
    found = {cls for name, module in list(sys.modules.items()) if name.startswith(f"{PACK_NAME}.")
             for cls in vars(module).values()
             if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == name}
    names_found = {cls.__name__ for cls in found}
    assert {"SpliceRefusal", "MemoryBudgetError", "DescriptorMemoryError", "WeightsError",
            "TrainingDiverged", "TrainingInterrupted", "SpliceOutOfMemoryError"} <= names_found, names_found
    for cls in sorted(found, key=lambda c: c.__name__):
        text = f"{cls.__name__}: lower load_size or free memory."
        raised = cls(text)

        @errors.readable_errors("Some Node")
        def refuse() -> None:
            raise raised  # noqa: B023 - called in this same iteration

        with pytest.raises(BaseException) as info:
            refuse()
        assert str(info.value) == text and "bug" not in str(info.value), (cls, str(info.value))
