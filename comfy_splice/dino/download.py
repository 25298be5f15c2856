"""The download of an official DINO ViT, only on explicit request.

The file arrives in a hidden folder beside its destination, is loaded as a DINO ViT there
(:func:`.weights.load_backbone`), and only then takes its final name, so nothing under that
name is ever a partial or wrong file.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from .models import WeightsError, download_url, official_model
from .weights import load_backbone

log = logging.getLogger(__name__)

DownloadProgress = Callable[[int, "int | None"], None]


def download_weights(name: str, directory: str | os.PathLike, timeout: float = 60.0,
                     progress: DownloadProgress | None = None) -> Path:
    """Download an official DINO ViT (the hub's safetensors) into ``directory`` on explicit request.

    The file is written into a hidden temporary folder inside ``directory`` (same file system),
    loaded as a DINO ViT there, and only then renamed to its final name, so an interrupted,
    truncated or wrong download never leaves a file under that name. ``progress(done_bytes,
    total_bytes or None)`` is called as the bytes arrive. Errors name the folder, file and URL.
    """
    model = official_model(name)
    directory = Path(directory)
    for present in (directory / file_name for file_name in model.file_names):
        if present.is_file():  # either accepted spelling: nothing to download
            return present
    target = directory / model.hf_file_name
    url = download_url(model)
    fix = (f"Download {url} yourself and save it as {target} (or put the official "
           f"{model.file_name} from {model.url} into {directory}).")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".splice-download-", dir=directory))
    except OSError as exc:
        raise WeightsError(f"Cannot write DINO weights into {directory} ({exc}). {fix}") from exc
    try:
        partial = staging / model.hf_file_name
        log.info("downloading %s to %s", url, target)
        try:
            _fetch(url, partial, timeout, progress)
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
            raise WeightsError(f"Could not download {model.hf_file_name} from {url} into "
                               f"{directory} ({exc}). {fix}") from exc
        try:
            load_backbone(partial)  # refuse to install something that does not load as a ViT
        except WeightsError as exc:
            raise WeightsError(f"The download of {url} is not a DINO ViT ({exc}); nothing was "
                               f"written to {target}. {fix}") from exc
        os.replace(partial, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("downloaded %s to %s", url, target)
    return target


def _fetch(url: str, path: Path, timeout: float, progress: DownloadProgress | None) -> None:
    """Stream ``url`` into ``path``; a body shorter than its Content-Length is an error."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(path, "wb") as out:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        if progress is not None:
            progress(0, total)
        while chunk := resp.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    if total is not None and done != total:
        raise OSError(f"the connection closed after {done} of {total} bytes")
