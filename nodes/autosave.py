"""Autosave for Train Generator: resumable checkpoints in the folder Load Splice Generator lists.

Every ``autosave_every`` steps (and once at the end, also after Stop and keep) the run is written
to ``<first splice_generators folder>/autosave/splice_<start date-time>_<images id>.safetensors``.
One file per run: each checkpoint replaces the run's previous one, atomically (a hidden temporary
file in the same folder, then a rename), so a crash, an out-of-memory error or a Cancel leaves the
last complete checkpoint. The name is fixed at the run's first checkpoint and gets ``_2``,
``_3`` ... if taken, so another run (also a resumed one) never overwrites it. The images id is
the start of the pair's fingerprint: files of the same pair sort together.
"""

from __future__ import annotations

import logging
import os
import time

from ..comfy_splice.checkpoint import save_generator
from ..comfy_splice.run import TrainedGenerator
from . import paths
from .generator_io import _workflow_metadata

log = logging.getLogger(__name__)

SUBFOLDER = "autosave"


def _new_path(trained: TrainedGenerator) -> str:
    """A file name no earlier run uses, in the first folder Load Splice Generator lists."""
    folder = os.path.join(paths.generator_folders()[0], SUBFOLDER)
    os.makedirs(folder, exist_ok=True)
    pair = trained.state.pair_id[:8] if trained.state is not None else "pair"
    stem = f"splice_{time.strftime('%Y%m%d-%H%M%S')}_{pair}"
    candidate, counter = os.path.join(folder, f"{stem}.safetensors"), 1
    while os.path.exists(candidate):
        counter += 1
        candidate = os.path.join(folder, f"{stem}_{counter}.safetensors")
    return candidate


class Autosaver:
    """Writes one training run's checkpoints (``every`` = 0: does nothing)."""

    def __init__(self, every: int, prompt: object = None, extra_pnginfo: object = None) -> None:
        self.every = max(0, int(every))
        self.path: str | None = None
        self._metadata = _workflow_metadata(prompt, extra_pnginfo) if self.every else {}

    def save(self, trained: TrainedGenerator) -> None:
        """Write ``trained`` over this run's checkpoint. A failed write is logged, not raised:
        losing a checkpoint must not end the training it protects."""
        if not self.every:
            return
        try:
            if self.path is None:
                self.path = _new_path(trained)
            save_generator(self.path, trained, extra_metadata=self._metadata)
        except OSError as exc:
            log.error("Splice: autosave to %s failed (%s); training goes on without it. Check "
                      "that the folder is writable and has space.", self.path, exc)
            return
        log.info("Splice: autosaved step %d to %s", trained.steps_done, self.path)
