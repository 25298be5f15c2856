"""Model folders of the pack, registered with ComfyUI's ``folder_paths``.

Two namespaced keys ("dino" is already used by other packs), and the Materialistic folder:

- ``splice_dino``: DINO-ViT weights (``models/splice_dino`` by default);
- ``splice_generators``: trained Splice generators (``models/splice_generators``);
- ``materialistic``: the Materialistic checkpoint (``models/materialistic``), named as the
  issue and the help page name it (no other pack is known to use the key).

Registration *merges*: ComfyUI reads ``extra_model_paths.yaml`` before it imports custom nodes,
so a user's ``splice_dino: /data/dino`` entry may already be there; its folders are kept, in
their order, and the default folder is appended after them. The first folder of a key is where
downloads go, so a user-configured folder wins.

File lists go through ``folder_paths.get_filename_list``, which is cached by folder mtime: a file
dropped into a folder shows up on the next ``/object_info`` without a restart, because the node
schemas compute their options when ComfyUI asks for them.
"""

from __future__ import annotations

import os

import folder_paths

from ..comfy_splice.dino.models import DEFAULT_MODEL, DINO_MODELS

DINO_FOLDER = "splice_dino"
GENERATOR_FOLDER = "splice_generators"
MATERIALISTIC_FOLDER = "materialistic"

DINO_EXTENSIONS = frozenset({".pth", ".pt", ".safetensors"})
GENERATOR_EXTENSIONS = frozenset({".safetensors"})
MATERIALISTIC_EXTENSIONS = frozenset({".ckpt", ".pth", ".pt", ".safetensors"})

# Both accepted spellings of each official model: the hub's safetensors (downloadable from the
# UI) and the DINO release's .pth (what existing installs have).
OFFICIAL_FILE_NAMES: tuple[str, ...] = tuple(name for m in DINO_MODELS.values() for name in m.file_names)
DEFAULT_DINO_FILE = DINO_MODELS[DEFAULT_MODEL].hf_file_name


def _register(key: str, extensions: frozenset[str]) -> None:
    """Add ``models/<key>`` to ``key``'s folders (after any configured ones) and our extensions."""
    default = os.path.join(folder_paths.models_dir, key)
    existing = folder_paths.folder_names_and_paths.get(key)
    if existing is None:
        folder_paths.folder_names_and_paths[key] = ([default], set(extensions))
        return
    paths, exts = existing
    if default not in paths:
        paths.append(default)
    # An extra_model_paths.yaml entry registers the key with an empty extension set, which
    # folder_paths reads as "any file": list only weight files, plus whatever was set before.
    folder_paths.folder_names_and_paths[key] = (paths, set(exts) | set(extensions))


def register_folders() -> None:
    """Register the pack's model folders; idempotent, safe to call from every entry point."""
    _register(DINO_FOLDER, DINO_EXTENSIONS)
    _register(GENERATOR_FOLDER, GENERATOR_EXTENSIONS)
    _register(MATERIALISTIC_FOLDER, MATERIALISTIC_EXTENSIONS)


def dino_folders() -> list[str]:
    """The folders searched for DINO weights, in priority order (downloads go to the first)."""
    register_folders()
    return folder_paths.get_folder_paths(DINO_FOLDER)


def generator_folders() -> list[str]:
    """The folders searched for trained generators."""
    register_folders()
    return folder_paths.get_folder_paths(GENERATOR_FOLDER)


def dino_files() -> list[str]:
    """DINO weight files on disk, in every splice_dino folder."""
    register_folders()
    return list(folder_paths.get_filename_list(DINO_FOLDER))


def dino_options() -> list[str]:
    """Load DINO-ViT's list: the weight files on disk only, so that a workflow naming an absent
    file has a value outside the list, which newer frontends flag as a missing model (with the
    workflow's download link). With nothing on disk at all, the hub names of the four official
    models instead, so a new node still offers a choice (the node's download button, see
    ``web/splice.js``, then fetches it); the pack's own warning covers that case on every
    frontend."""
    files = dino_files()
    if files:
        return sorted(files)
    return sorted(name for name in OFFICIAL_FILE_NAMES if name.endswith(".safetensors"))


def generator_options() -> list[str]:
    """Trained generator files on disk (possibly empty)."""
    register_folders()
    return folder_paths.get_filename_list(GENERATOR_FOLDER)


def materialistic_folders() -> list[str]:
    """The folders searched for Materialistic checkpoints."""
    register_folders()
    return folder_paths.get_folder_paths(MATERIALISTIC_FOLDER)


def materialistic_options() -> list[str]:
    """Materialistic checkpoints on disk (possibly empty: the node then says where to put one)."""
    register_folders()
    return sorted(folder_paths.get_filename_list(MATERIALISTIC_FOLDER))


def find_materialistic(file_name: str) -> str | None:
    """Full path of a Materialistic checkpoint, or None."""
    if not isinstance(file_name, str):
        return None
    register_folders()
    return folder_paths.get_full_path(MATERIALISTIC_FOLDER, file_name)


def find_dino(file_name: str) -> str | None:
    """Full path of a DINO weight file, or None when it is in none of the folders."""
    if not isinstance(file_name, str):
        return None  # a number sent through the HTTP API: the node's execute says so
    register_folders()
    return folder_paths.get_full_path(DINO_FOLDER, file_name)


def find_generator(file_name: str) -> str | None:
    """Full path of a trained generator file, or None."""
    if not isinstance(file_name, str):
        return None
    register_folders()
    return folder_paths.get_full_path(GENERATOR_FOLDER, file_name)


def file_fingerprint(path: str | None) -> str:
    """What changes when a file is replaced: ComfyUI re-runs a loader when this changes."""
    if path is None:
        return "missing"
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
