"""The "Stop and keep" route (``POST /splice/stop``) in a real ComfyUI server, while a training runs.

A request that is not exactly what the route understands (unknown key, null or non-text node
id, nested or oversized JSON, no node named) is refused with 400 (413 for the size) and stops
nothing; a node id stops only that node's training; ``{"all": true}`` stops every one.

"Stops nothing" is checked without timing: the route lists only the trainings a request newly
asked to stop, so the one correct request sent after the bad ones lists the training only if no
bad request had asked it already (and if it is still running).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pytest
import requests
from PIL import Image

if TYPE_CHECKING:
    from tools.harness.comfy_server import ComfyServer

TINY = "stop_route_tiny.pth"
TRAIN, PREVIEW = "6", "7"
STEPS = 100_000  # never reached: every test stops the training
EXAMPLE = '{"all": true}'  # every refusal names the explicit way to stop everything


@pytest.fixture(scope="module")
def files(comfy_server: ComfyServer, tiny_dino_file: Path) -> dict[str, str]:
    """The tiny ViT in the splice_dino folder and two small noise images in ComfyUI's input."""
    shutil.copy(tiny_dino_file, comfy_server.models_dir / TINY)
    rng = np.random.default_rng(7)
    return {name: comfy_server.upload_image(Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)),
                                            name=f"stop_route_{name}.png")
            for name, (w, h) in (("structure", (64, 48)), ("appearance", (48, 56)))}


def _graph(files: dict[str, str], seed: int) -> dict[str, Any]:
    """LoadImage x2 -> Load DINO-ViT -> losses -> Train Generator -> Preview of its result."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": files["structure"]}},
        "2": {"class_type": "LoadImage", "inputs": {"image": files["appearance"]}},
        "3": {"class_type": "SpliceLoadDINO", "inputs": {"model_name": TINY, "download_if_missing": False}},
        "4": {"class_type": "SpliceStructureLoss", "inputs": {"dino": ["3", 0], "weight": 1.0, "block": -1}},
        "5": {"class_type": "SpliceAppearanceLoss", "inputs": {"dino": ["3", 0], "weight": 10.0, "block": -1}},
        TRAIN: {"class_type": "SpliceTrainGenerator",
                "inputs": {"structure": ["1", 0], "appearance": ["2", 0], "structure_loss": ["4", 0],
                           "appearance_loss": ["5", 0], "steps": STEPS, "learning_rate": 0.002, "seed": seed,
                           "identity_weight": 1.0, "full_image_every": 75, "preview_every": 0,
                           "dtype": "auto"}},
        PREVIEW: {"class_type": "PreviewImage", "inputs": {"images": [TRAIN, 2]}},
    }


def _post(server: ComfyServer, body: Any) -> requests.Response:
    """POST raw bytes (or a chunked iterator of bytes) to the route, as any client could."""
    return server.http.post(server.url + "/splice/stop", data=body, timeout=30,
                            headers={"Content-Type": "application/json"})


def _stop(server: ComfyServer, body: dict[str, Any]) -> dict[str, Any]:
    response = _post(server, json.dumps(body).encode())
    assert response.status_code == 200, response.text
    return response.json()


@contextlib.contextmanager
def _training(server: ComfyServer, files: dict[str, str], seed: int) -> Iterator[Any]:
    """Submit a long training and yield its Execution once the training runs (first progress).
    A test that fails before the training ended cancels it, so the next test finds the queue free."""
    execution = server.submit(_graph(files, seed))
    try:
        execution.wait_for(lambda m: m.type == "progress" and str(m.data.get("node")) == TRAIN, timeout=240)
        yield execution
    except BaseException:
        if server.is_running():
            server.interrupt(execution.prompt_id)
            with contextlib.suppress(Exception):  # the test's own failure is the one to report
                execution.wait(timeout=120)
        raise
    finally:
        execution.close()


def _finished_early(execution: Any) -> int:
    """The run ends as a success (the graph went on with the kept generator); returns the steps done."""
    result = execution.wait(timeout=240)
    result.raise_for_status()
    assert result.output_images(PREVIEW), "the preview of the kept generator's result did not run"
    done = max(value for value, _ in result.progress(TRAIN))
    assert 1 <= done < STEPS
    return done


NESTED = b"[" * 1500 + b"]" * 1500  # fits the size limit; deeper than json's recursion limit
BAD_BODIES: list[tuple[str, Any, int, str]] = [
    # (case, body, status, text in the error)
    ("typo in the key", b'{"nodeid": "999"}', 400, "unknown key 'nodeid'"),
    ("null node id", b'{"node_id": null}', 400, "node_id must be non-empty text"),
    ("number node id", b'{"node_id": 6}', 400, "got a number"),
    ("empty node id", b'{"node_id": ""}', 400, "got an empty string"),
    ("array node id", b'{"node_id": ["6"]}', 400, "nested 2 levels deep"),
    ("null prompt id", b'{"node_id": "6", "prompt_id": null}', 400, "prompt_id must be non-empty text"),
    ("an extra key", b'{"node_id": "6", "force": true}', 400, "unknown key 'force'"),
    ("a repeated key", b'{"node_id": "999", "node_id": "6"}', 400, "appears twice"),
    ("empty object", b"{}", 400, "names no training"),
    ("prompt id only", b'{"prompt_id": "abc"}', 400, "names no training"),
    ("no body", b"", 400, "must be a JSON object"),
    ("array body", b'["6"]', 400, "must be a JSON object"),
    ("text body", b'"6"', 400, "must be a JSON object"),
    ("not JSON", b"node_id=6", 400, "not JSON"),
    ("not UTF-8", b'{"node_id": "\xff"}', 400, "not JSON"),
    ("all false", b'{"all": false}', 400, '"all" may only be true'),
    ("all as a number", b'{"all": 1}', 400, '"all" may only be true'),
    ("all and a node", b'{"all": true, "node_id": "6"}', 400, "not both"),
    ("nested too deep", b'{"node_id": ' + NESTED + b"}", 400, "nested 1501 levels deep"),
    ("100k-deep nesting", b"[" * 100_000 + b"]" * 100_000, 413, "over 4096 bytes"),
    ("100k-deep, chunked", iter([b"[" * 50_000, b"[" * 50_000]), 413, "over 4096 bytes"),
]


def test_bad_requests_are_refused_and_stop_nothing(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    with _training(comfy_server, files, seed=101) as execution:
        for case, body, status, expected in BAD_BODIES:
            response = _post(comfy_server, body)
            assert response.status_code == status, (case, response.status_code, response.text[:300])
            error = response.json()["error"]
            assert expected in error and EXAMPLE in error, (case, error)
            assert "\n" not in error and len(error) < 400, (case, error)
        # Well-formed, but for another node or another prompt: nothing matches.
        assert _stop(comfy_server, {"node_id": "999"}) == {"stopped": []}
        assert _stop(comfy_server, {"node_id": TRAIN, "prompt_id": "another-prompt"}) == {"stopped": []}
        # Listed as newly stopped: still running, and no request above had asked it to stop.
        run = {"prompt_id": execution.prompt_id, "node_id": TRAIN}
        assert _stop(comfy_server, {"node_id": TRAIN, "prompt_id": execution.prompt_id}) == {"stopped": [run]}
        # Asked once only: a second click is never reported as a new stop.
        assert _stop(comfy_server, {"node_id": TRAIN})["stopped"] == []
        _finished_early(execution)
    assert _stop(comfy_server, {"node_id": TRAIN}) == {"stopped": []}  # unregistered when it ended


def test_the_button_request_stops_the_named_training(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    """What web/splice_stop.js sends: {node_id: String(node.id)}, nothing else."""
    script = (Path(__file__).resolve().parents[2] / "web" / "splice_stop.js").read_text()
    assert "JSON.stringify({ node_id: String(node.id) })" in script
    with _training(comfy_server, files, seed=102) as execution:
        answer = _stop(comfy_server, {"node_id": TRAIN})
        assert answer == {"stopped": [{"prompt_id": execution.prompt_id, "node_id": TRAIN}]}
        _finished_early(execution)


def test_all_true_stops_every_running_training(comfy_server: ComfyServer, files: dict[str, str]) -> None:
    with _training(comfy_server, files, seed=103) as execution:
        answer = _stop(comfy_server, {"all": True})
        assert answer == {"stopped": [{"prompt_id": execution.prompt_id, "node_id": TRAIN}]}
        _finished_early(execution)
    assert _stop(comfy_server, {"all": True}) == {"stopped": []}  # nothing runs now
