"""The shipped workflows' example inputs, made available to LoadImage when the pack loads.

The templates load ``splice_*`` files from ComfyUI's input folder. So that a template runs on the
first Queue after installing the pack, the files of ``workflows/input/`` are put there under
their own names when they are missing. A file of that name that is already there (the user's, or
an earlier copy) is never replaced: each copy is written to a temporary name and then linked to
the final name, which fails instead of overwriting. Cheap: a few stat calls per start, a copy
(under 1 MB) only the first time.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import folder_paths

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "workflows" / "input"
PREFIX = "splice_"


def example_files() -> list[Path]:
    """The pack's example inputs (``workflows/input/splice_*``)."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.is_file() and p.name.startswith(PREFIX))


def install_example_inputs(input_dir: str | os.PathLike | None = None) -> list[Path]:
    """Copy missing example inputs into ComfyUI's input folder; returns the files written.

    Never raises: a read-only or full input folder only costs the templates their example
    images, which the log then names.
    """
    folder = Path(input_dir if input_dir is not None else folder_paths.get_input_directory())
    written: list[Path] = []
    for source in example_files():
        target = folder / source.name
        if os.path.lexists(target):
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".part", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                    shutil.copyfileobj(src, out)
                _link_or_copy_exclusive(Path(tmp_name), target)
                written.append(target)
            finally:
                os.unlink(tmp_name)
        except FileExistsError:
            continue
        except OSError as exc:
            log.warning("Splice: could not copy the example input %s into %s (%s); the templates "
                        "need it there.", source.name, folder, exc)
    if written:
        log.info("Splice: copied example inputs into %s: %s", folder,
                 ", ".join(p.name for p in written))
    return written


def _link_or_copy_exclusive(complete: Path, target: Path) -> None:
    """Give the finished copy ``complete`` the name ``target``; FileExistsError if it is taken.

    A hard link is atomic and never replaces a file; where the file system has none, an exclusive
    create (``open(..., "xb")``) keeps the never-overwrite rule.
    """
    try:
        os.link(complete, target)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # no hard links here (some network and FAT file systems)
    with open(target, "xb") as out, open(complete, "rb") as src:
        shutil.copyfileobj(src, out)
