"""Make the small pictures of the in-ComfyUI help pages (web/docs/*.md) from the repository's own images.

The help pages are served by ComfyUI from the pack's web directory (``/extensions/<pack>/docs/``)
and shown in the frontend's node help panel, so their pictures must sit beside them and stay
small (each under ``MAX_BYTES``). They are cut from what the project already ships: the example
inputs (workflows/input/, drawn by tools/assets/make_examples.py) and the graph screenshots
(workflows/screenshots/, taken by tools/assets/build_workflows.py). Rerun this after either changes:

    python -m tools.assets.make_help_images            # (re)write the pictures in web/docs/
    python -m tools.assets.make_help_images --check    # exit 1 if a picture is missing or over the size limit

Run it with any Python that has Pillow (the test venv has it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

log = logging.getLogger("make_help_images")

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS_DIR = REPO_ROOT / "web" / "docs"
INPUT_DIR = REPO_ROOT / "workflows" / "input"
SCREENSHOT_DIR = REPO_ROOT / "workflows" / "screenshots"
MAX_BYTES = 150_000
"""The help panel loads every picture of a page when it opens: keep each one light."""


@dataclass(frozen=True)
class Pair:
    """Two example inputs side by side, each scaled to ``height``, with a caption under each."""

    name: str
    left: tuple[str, str]
    right: tuple[str, str]
    height: int = 192


@dataclass(frozen=True)
class Crop:
    """A part of a graph screenshot (box in the screenshot's pixels), scaled by ``scale``."""

    name: str
    screenshot: str
    box: tuple[int, int, int, int]
    scale: float = 1.0


PICTURES: tuple[Pair | Crop, ...] = (
    Pair("splice_pair.jpg", ("splice_structure_village.png", "structure (layout kept)"),
         ("splice_appearance_winter.png", "appearance (look taken)")),
    Pair("object_pair.jpg", ("splice_object_cottage.png", "A: the object to restyle"),
         ("splice_object_gingerbread.png", "B: the object whose look to take")),
    Crop("train_and_apply.png", "splice_train_once_apply_to_video.png", (990, 40, 1335, 720), scale=0.8),
    Crop("cosegmentation_graph.png", "splice_region_object.png", (330, 15, 916, 775), scale=0.8),
)


def _pair(spec: Pair) -> Image.Image:
    caption_height = 22
    tiles = []
    for file_name, caption in (spec.left, spec.right):
        with Image.open(INPUT_DIR / file_name) as image:
            rgb = image.convert("RGB")
        width = round(rgb.width * spec.height / rgb.height)
        tiles.append((rgb.resize((width, spec.height), Image.Resampling.LANCZOS), caption))
    gap = 8
    canvas = Image.new("RGB", (sum(t.width for t, _ in tiles) + gap, spec.height + caption_height),
                       (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for tile, caption in tiles:
        canvas.paste(tile, (x, 0))
        draw.text((x + 6, spec.height + 5), caption, fill=(235, 235, 235))
        x += tile.width + gap
    return canvas


def _crop(spec: Crop) -> Image.Image:
    with Image.open(SCREENSHOT_DIR / spec.screenshot) as image:
        part = image.convert("RGB").crop(spec.box)
    if spec.scale != 1.0:
        part = part.resize((round(part.width * spec.scale), round(part.height * spec.scale)),
                           Image.Resampling.LANCZOS)
    # A screenshot of the UI has few colours: a palette keeps text sharp at a fraction of the bytes.
    return part.quantize(colors=128, method=Image.Quantize.MEDIANCUT)


def render(spec: Pair | Crop) -> Image.Image:
    """The picture ``spec`` describes, not yet written."""
    return _pair(spec) if isinstance(spec, Pair) else _crop(spec)


def write_all() -> list[Path]:
    """Write every picture into web/docs/; refuse one that comes out over ``MAX_BYTES``."""
    DOCS_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in PICTURES:
        path = DOCS_DIR / spec.name
        picture = render(spec)
        if path.suffix == ".jpg":
            picture.save(path, quality=85, optimize=True)
        else:
            picture.save(path, optimize=True)
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SystemExit(f"{path} is {size} bytes, over {MAX_BYTES}: crop or scale it down in PICTURES.")
        log.info("wrote %s (%dx%d, %d bytes)", path.relative_to(REPO_ROOT), picture.width, picture.height, size)
        written.append(path)
    return written


def problems() -> list[str]:
    """What is wrong with the pictures on disk (missing, over the size limit); empty when fine."""
    found = []
    for spec in PICTURES:
        path = DOCS_DIR / spec.name
        if not path.is_file():
            found.append(f"{path} is missing")
        elif path.stat().st_size > MAX_BYTES:
            found.append(f"{path} is {path.stat().st_size} bytes, over {MAX_BYTES}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the pictures on disk")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        found = problems()
        for line in found:
            log.error("%s", line)
        return 1 if found else 0
    write_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
