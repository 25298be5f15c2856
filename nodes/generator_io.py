"""Save Splice Generator / Load Splice Generator.

Saving writes where loading looks: a safetensors file in the first ``splice_generators`` folder
(``models/splice_generators`` unless extra_model_paths.yaml puts another first) with a counter
in its name, as core's Save LoRA names files, and, unless ComfyUI runs with
``--disable-metadata``, the prompt and workflow as JSON strings in its metadata (with the Splice
config, which is always written). So a saved generator is in Load Splice Generator's list on
the next refresh, with no file moved by hand.
"""

from __future__ import annotations

import json
import logging
import os

import folder_paths
from comfy.cli_args import args

from ..comfy_splice.checkpoint import load_generator, save_generator
from ..comfy_splice.validation import NAME_MAX_BYTES, PATH_MAX_BYTES, check_file_name
from . import names, paths
from .api import CATEGORY, io
from .errors import check_choice, readable_errors
from .types import SpliceGenerator, check_generator

log = logging.getLogger(__name__)


def _workflow_metadata(prompt: object, extra_pnginfo: object) -> dict[str, str]:
    """The prompt and extra PNG info (the UI workflow) as JSON strings, as SaveImage writes them."""
    if args.disable_metadata:
        return {}
    metadata: dict[str, str] = {}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            metadata[str(key)] = json.dumps(value)
    return metadata


COUNTER_SUFFIX = "_00001_.safetensors"
"""What the node appends to the prefix's last name (the counter grows past 5 digits only after 99999 saves)."""


def _name_limits(folder: str) -> tuple[int, int]:
    """(longest file name, longest path) in bytes on ``folder``'s file system; the usual Linux
    limits when the system does not say (or the folder does not exist yet)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX")), int(os.pathconf(folder, "PC_PATH_MAX"))
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no such folder yet
        return NAME_MAX_BYTES, PATH_MAX_BYTES


def _check_inside(save_dir: str, filename_prefix: str) -> None:
    """The prefix names a place inside the save folder (no '..' or absolute path out of it)."""
    root = os.path.abspath(save_dir)
    target = os.path.abspath(os.path.join(root, filename_prefix))
    if os.path.commonpath((root, target)) != root:
        raise ValueError(f"filename_prefix {filename_prefix[:80]!r} points outside the "
                         f"splice_generators folder ({root}); use a name inside it, such as 'splice/generator'.")


class SpliceSaveGenerator(io.ComfyNode):
    """Writes a trained generator to the output folder as safetensors."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceSaveGenerator",
            display_name=names.SAVE_GENERATOR,
            category=CATEGORY,
            description=(
                "Saves a trained Splice generator (a safetensors file: ~4 MB of weights, about 12 MB with "
                "the training state a resume needs, plus its training config and, "
                "unless ComfyUI runs with --disable-metadata, the workflow) into "
                f"models/splice_generators, where '{names.LOAD_GENERATOR}' lists it (press R in the "
                "UI to refresh the lists). The node shows where it wrote the file."),
            is_output_node=True,
            inputs=[
                SpliceGenerator.Input(
                    "generator",
                    tooltip=f"From '{names.TRAIN}' (or '{names.LOAD_GENERATOR}')."),
                io.String.Input(
                    "filename_prefix", default="splice/generator",
                    tooltip=("File name prefix inside models/splice_generators; a counter and "
                             ".safetensors are appended. May contain subfolders and %date% "
                             "tokens like Save Image. No control characters; each name at most "
                             "255 bytes (the last one with the counter and extension, so 236).")),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
        )

    @classmethod
    @readable_errors(names.SAVE_GENERATOR)
    def execute(cls, generator: object, filename_prefix: str = "splice/generator") -> io.NodeOutput:
        trained = check_generator(generator)
        filename_prefix = check_choice(filename_prefix, "filename_prefix")
        if not filename_prefix.strip():
            raise ValueError("filename_prefix is empty; give the file a name such as "
                             "'splice/generator'.")
        save_dir = paths.generator_folders()[0]
        # Before anything touches the file system: the OS would only say "embedded null byte"
        # or "File name too long", not which input to change.
        check_file_name(filename_prefix, "filename_prefix", save_dir, COUNTER_SUFFIX, *_name_limits(save_dir))
        _check_inside(save_dir, filename_prefix)
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix,
                                                                               save_dir)
        os.makedirs(folder, exist_ok=True)
        file_name = f"{name}_{counter:05}_.safetensors"
        path = os.path.join(folder, file_name)
        hidden = cls.hidden
        metadata = _workflow_metadata(getattr(hidden, "prompt", None),
                                      getattr(hidden, "extra_pnginfo", None))
        save_generator(path, trained, extra_metadata=metadata)
        log.info("Splice: saved generator to %s", path)
        listed = f"{subfolder}/{file_name}" if subfolder else file_name
        text = f"Saved {path}\n'{names.LOAD_GENERATOR}' lists it as {listed}"
        return io.NodeOutput(ui={
            "text": [text],
            "splice_generators": [{"filename": file_name, "subfolder": subfolder,
                                   "type": paths.GENERATOR_FOLDER, "name": listed}],
        })


class SpliceLoadGenerator(io.ComfyNode):
    """Loads a generator saved by 'Save Splice Generator' from models/splice_generators."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SpliceLoadGenerator",
            display_name=names.LOAD_GENERATOR,
            category=CATEGORY,
            description=(
                "Loads a trained Splice generator (.safetensors written by "
                f"'{names.SAVE_GENERATOR}') from models/splice_generators, so it can be applied again without "
                "training. Newly saved files appear after a refresh (R), without a restart."),
            inputs=[
                io.Combo.Input(
                    "generator_name", options=paths.generator_options(),
                    tooltip=("A generator file in models/splice_generators (or a folder configured "
                             "as 'splice_generators' in extra_model_paths.yaml). "
                             f"'{names.SAVE_GENERATOR}' writes there, so its files are listed here.")),
            ],
            outputs=[
                SpliceGenerator.Output("generator", display_name="generator",
                                       tooltip=f"The trained generator, for '{names.APPLY}'."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, generator_name: str, **_: object) -> str:
        """Re-load when the file on disk changes."""
        return paths.file_fingerprint(paths.find_generator(generator_name))

    @classmethod
    @readable_errors(names.LOAD_GENERATOR)
    def execute(cls, generator_name: str) -> io.NodeOutput:
        check_choice(generator_name, "generator_name")
        path = paths.find_generator(generator_name)
        if path is None:
            raise ValueError(f"Splice generator {generator_name!r} is not in "
                             f"{', '.join(paths.generator_folders())}; put it back there or pick "
                             f"another file.")
        return io.NodeOutput(load_generator(path))
