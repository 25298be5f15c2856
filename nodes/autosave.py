"""Autosave for Train Generator: resumable checkpoints in the folder Load Splice Generator lists.

Every ``autosave_every`` steps (and once at the end, also after Stop and keep) the run is written
to ``<first splice_generators folder>/autosave/splice_<start date-time>_<images id>.safetensors``.
One file per run: each checkpoint replaces the run's previous one, atomically (a hidden temporary
file in the same folder, then a rename), so a crash, an out-of-memory error or a Cancel leaves the
last complete checkpoint. The name is fixed at the run's first checkpoint and gets ``_2``,
``_3`` ... if taken, so another run (also a resumed one) never overwrites it. The images id is
the start of the pair's fingerprint: files of the same pair sort together.

Resume after a cache eviction: ComfyUI may drop a finished result from its cache (RAM pressure,
``--cache-none``), and queueing the same graph again would train again. With autosave on, the
run first looks for the newest autosave of the same images, DINO-ViT and settings (the exact
resume of ``comfy_splice.train``, steps not beyond this run's) and continues it, writing on into
that file; a complete one is returned at once, with nothing trained.
"""

from __future__ import annotations

import logging
import os
import time

from ..comfy_splice.checkpoint import newest_resumable, save_generator
from ..comfy_splice.run import TrainConfig, TrainedGenerator
from . import paths
from .generator_io import _workflow_metadata

log = logging.getLogger(__name__)

SUBFOLDER = "autosave"


def _folder() -> str:
    """Where autosaves go: ``autosave/`` of the first folder Load Splice Generator lists."""
    return os.path.join(paths.generator_folders()[0], SUBFOLDER)


def _new_path(trained: TrainedGenerator) -> str:
    """A file name no earlier run uses, in the first folder Load Splice Generator lists."""
    folder = _folder()
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
        # Set when this run continues an autosave: the file and the step it held.
        self.resumed: tuple[str, int] | None = None

    def find_resumable(self, config: TrainConfig, pair_id: str,
                       backbone_name: str) -> TrainedGenerator | None:
        """The newest autosave this run continues exactly (None when autosave is off or there is
        none); the run then writes on into that file."""
        folder = _folder()
        if not self.every or not os.path.isdir(folder):
            return None
        files = [os.path.join(folder, name) for name in sorted(os.listdir(folder))
                 if name.endswith(".safetensors") and not name.startswith(".")]
        found = newest_resumable(files, config, pair_id, backbone_name)
        if found is None:
            return None
        path, trained = found
        self.path, self.resumed = str(path), (str(path), trained.steps_done)
        log.info("Splice: found the autosave %s of this run (step %d of %d): continuing it instead "
                 "of training again", path, trained.steps_done, config.steps)
        return trained

    def save(self, trained: TrainedGenerator) -> None:
        """Write ``trained`` over this run's checkpoint. A failed write is logged, not raised:
        losing a checkpoint must not end the training it protects."""
        if not self.every or (self.resumed is not None and trained.steps_done == self.resumed[1]):
            return  # off, or nothing trained since the autosave this run continued
        try:
            if self.path is None:
                self.path = _new_path(trained)
            save_generator(self.path, trained, extra_metadata=self._metadata)
        except OSError as exc:
            log.error("Splice: autosave to %s failed (%s); training goes on without it. Check "
                      "that the folder is writable and has space.", self.path, exc)
            return
        log.info("Splice: autosaved step %d to %s", trained.steps_done, self.path)
