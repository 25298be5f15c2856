"""Host tests: a real ComfyUI with this pack installed, as a server or in this process.

The server fixtures (``comfy_server``, ``comfy_server_factory``) and the tiny weights
(``tiny_dino_file``) live in tests/conftest.py so that browser tests share them; the server and
its client are in tools/harness/comfy_server.py and tools/harness/comfy_client.py. The fixtures
here are the ones several host test modules use (no test module imports another):

- in process (ComfyUI's modules imported here, see comfy_in_process.py): ``comfy``, the pack
  loaded inside them; ``dino``, ``losses`` and ``trained``, the first nodes' outputs;
- on the server (see splice_prompts.py): ``splice_files``, the tiny ViT and test images in the
  shared server's folders.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from PIL import Image

from comfy_in_process import PACK_NAME, Comfy, inference_image, train_node
from splice_prompts import APPEARANCE_SIZE, STRUCTURE_SIZE, TINY, sample_picture
from tools import provision
from tools.harness.comfy_server import ComfyServer
from tools.provision import REPO_ROOT


@pytest.fixture(autouse=True)
def _server_survives_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that crashed the shared server is named as the culprit, not the next test."""
    yield
    if "comfy_server" in request.fixturenames:
        server = request.getfixturevalue("comfy_server")
        if not server.is_running():
            pytest.fail(f"the ComfyUI server died during this test\n{server.log_report()}", pytrace=False)


# -- in process ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory, tiny_dino_file: Path) -> Iterator[Comfy]:
    """ComfyUI (the provisioned copy, or $COMFYUI_PATH) imported with ``--cpu``, and the pack
    loaded the way ComfyUI loads a custom node (its ``__init__.py`` as a package under its own
    name), with its model folders in a temporary directory holding the tiny ViT as tiny.pth."""
    comfyui = provision.ensure_comfyui()
    # First on the import path: ComfyUI's `nodes`, `utils` ... must win here; undone at the end
    # so later tests do not import ComfyUI's top-level names.
    import_path = pytest.MonkeyPatch()
    import_path.syspath_prepend(str(comfyui))
    from comfy.cli_args import args

    args.cpu = True  # must precede comfy.model_management's import (device selection)
    import comfy.model_management  # noqa: F401
    import folder_paths
    from comfy_api.latest import io

    root = tmp_path_factory.mktemp("comfy_inprocess")
    dino_dir, generators_dir, output_dir = root / "dino", root / "generators", root / "output"
    for folder in (dino_dir, generators_dir, output_dir):
        folder.mkdir()
    saved_folders = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    saved_output = folder_paths.get_output_directory()
    saved_input = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(root / "input"))  # the pack copies its examples there
    folder_paths.add_model_folder_path("splice_dino", str(dino_dir), is_default=True)
    folder_paths.add_model_folder_path("splice_generators", str(generators_dir), is_default=True)
    folder_paths.set_output_directory(str(output_dir))
    shutil.copy(tiny_dino_file, dino_dir / "tiny.pth")

    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    assert spec is not None and spec.loader is not None
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = pack
    spec.loader.exec_module(pack)
    try:
        yield Comfy(pack, folder_paths, args, io, dino_dir, generators_dir, output_dir)
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update({k: (v[0], v[1]) for k, v in saved_folders.items()})
        folder_paths.set_output_directory(saved_output)
        folder_paths.set_input_directory(saved_input)
        folder_paths.filename_list_cache.clear()
        import_path.undo()


@pytest.fixture(scope="module")
def dino(comfy: Comfy) -> Any:
    """Load DINO-ViT's output for the tiny ViT."""
    return comfy.run("SpliceLoadDINO", model_name="tiny.pth", download_if_missing=False)[0]


@pytest.fixture(scope="module")
def losses(comfy: Comfy, dino: Any) -> tuple[Any, Any]:
    """The structure and appearance losses on ``dino``, at the last block."""
    structure = comfy.run("SpliceStructureLoss", dino=dino, weight=1.0, block=-1)[0]
    appearance = comfy.run("SpliceAppearanceLoss", dino=dino, weight=10.0, block=-1)[0]
    return structure, appearance


@pytest.fixture(scope="module")
def trained(comfy: Comfy, losses: tuple[Any, Any]) -> Any:
    """Two steps on inference-mode inputs of different sizes and aspect ratios."""
    return train_node(comfy, losses, inference_image(48, 64), inference_image(72, 56, seed=1))


# -- on the server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splice_files(comfy_server: ComfyServer, tiny_dino_file: Path) -> dict[str, str]:
    """The tiny ViT in the splice_dino folder (as splice_prompts.TINY) and the test images in
    ComfyUI's input folder: input name -> uploaded file name, for splice_graph()."""
    shutil.copy(tiny_dino_file, comfy_server.models_dir / TINY)
    return {
        "structure": comfy_server.upload_image(sample_picture(STRUCTURE_SIZE, 1), name="splice_structure.png"),
        "appearance": comfy_server.upload_image(sample_picture(APPEARANCE_SIZE, 2), name="splice_appearance.png"),
        "tiny": comfy_server.upload_image(sample_picture((12, 10), 3), name="splice_12x10.png"),
        "dot": comfy_server.upload_image(Image.new("RGB", (1, 1), (200, 10, 10)), name="splice_1x1.png"),
    }
