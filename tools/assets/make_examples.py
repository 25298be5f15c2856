"""Draw the example inputs that the shipped workflows load (workflows/input/).

The images are made here, procedurally (PIL + numpy, fixed seeds), so the project owns them and
can give them away (CC0, see workflows/README.md); no photo or third-party file is used. They
are cartoons, but with the ingredients Splice needs: a *structure* image with clear objects
(hills, a house, a tree, a path, the sun) and an *appearance* image with the same kinds of
objects in a different look (a snowy night), so that a trained generator has something
semantic to transfer. The video is a slow pan over a wider version of the structure scene, the
"train on its keyframes, apply to every frame" case; it has a short sound track (two soft
chimes) so that the video workflow can show that the clip's audio is kept. The material pair
(a room with a wooden floor and a fabric sofa; a knitted blanket on brushed metal before a stone
wall) has textures drawn with numpy patterns, one per material, so that DINO tells them apart.

    python -m tools.assets.make_examples            # (re)write workflows/input/
    python -m tools.assets.make_examples --check    # exit 1 if the files differ from a fresh draw

Run it with any Python that has numpy, Pillow and PyAV (the test venv has all three).
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger("make_examples")

REPO_ROOT = Path(__file__).resolve().parents[2]
INPUT_DIR = REPO_ROOT / "workflows" / "input"

STRUCTURE = "splice_structure_village.png"
APPEARANCE = "splice_appearance_winter.png"
VIDEO = "splice_frames_village.mp4"
# Region-aware Splice: one object (a house) on a background in each image.
OBJECT_STRUCTURE = "splice_object_cottage.png"
OBJECT_APPEARANCE = "splice_object_gingerbread.png"
# Select by material: a room (wooden floor, a plain fabric sofa, a plaster wall) and another
# scene (a red knitted blanket on a brushed-metal counter, a stone wall).
MATERIAL_STRUCTURE = "splice_material_room.png"
MATERIAL_APPEARANCE = "splice_material_knit.png"
ALL_FILES = (STRUCTURE, APPEARANCE, VIDEO, OBJECT_STRUCTURE, OBJECT_APPEARANCE, MATERIAL_STRUCTURE,
             MATERIAL_APPEARANCE)

IMAGE_SIZE = (512, 384)
OBJECT_SIZE = (384, 288)  # small files; big enough for the house's parts at DINO's 224 px
MATERIAL_SIZE = IMAGE_SIZE
# A pixel on each image's clicked material (x, y): the template's Select Material widgets.
MATERIAL_CLICK_ROOM = (256, 232)   # the sofa's seat (fabric)
MATERIAL_CLICK_KNIT = (262, 200)   # the middle of the knitted blanket
VIDEO_SIZE = (384, 288)   # even sides (yuv420p), small enough for CPU runs
VIDEO_FRAMES = 12
VIDEO_FPS = 8
AUDIO_RATE = 22050


@dataclass(frozen=True)
class Palette:
    """The colours of one 'look' of the same kind of scene."""

    sky_top: tuple[int, int, int]
    sky_bottom: tuple[int, int, int]
    far_hills: tuple[int, int, int]
    near_hills: tuple[int, int, int]
    ground_noise: float
    wall: tuple[int, int, int]
    roof: tuple[int, int, int]
    window: tuple[int, int, int]
    trunk: tuple[int, int, int]
    leaves: tuple[int, int, int]
    path: tuple[int, int, int]


DAY = Palette(sky_top=(92, 150, 222), sky_bottom=(196, 226, 248), far_hills=(118, 150, 120),
              near_hills=(88, 158, 64), ground_noise=18.0, wall=(236, 214, 170), roof=(178, 52, 40),
              window=(70, 110, 150), trunk=(110, 72, 40), leaves=(46, 122, 44), path=(196, 170, 120))
NIGHT = Palette(sky_top=(6, 10, 34), sky_bottom=(34, 48, 92), far_hills=(150, 170, 205),
                near_hills=(222, 232, 246), ground_noise=10.0, wall=(92, 64, 48), roof=(236, 242, 252),
                window=(255, 196, 84), trunk=(60, 44, 36), leaves=(26, 70, 58), path=(180, 190, 214))


def _vertical_gradient(size: tuple[int, int], top: tuple[int, int, int],
                       bottom: tuple[int, int, int]) -> np.ndarray:
    w, h = size
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    row = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return np.repeat(row, w, axis=1)


def _ridge(width: int, base: float, amplitude: float, phases: tuple[float, ...], x0: float) -> list[float]:
    """A smooth hill line: a few sines, evaluated in scene coordinates (x0 = left edge)."""
    ys = []
    for x in range(width + 1):
        u = (x + x0) / 97.0
        y = base + sum(amplitude / (i + 1) * math.sin(u * (i + 1) * 0.9 + p) for i, p in enumerate(phases))
        ys.append(y)
    return ys


def _fill_below(draw: ImageDraw.ImageDraw, ys: list[float], height: int, colour: tuple[int, int, int]) -> None:
    points = [(x, y) for x, y in enumerate(ys)] + [(len(ys) - 1, height), (0, height)]
    draw.polygon(points, fill=colour)


def _house(draw: ImageDraw.ImageDraw, x: float, ground: float, s: float, pal: Palette) -> None:
    w, h = 120 * s, 78 * s
    left, top = x - w / 2, ground - h
    draw.rectangle([left, top, left + w, ground], fill=pal.wall, outline=(40, 30, 24), width=max(1, int(2 * s)))
    draw.polygon([(left - 12 * s, top + 2), (x, top - 58 * s), (left + w + 12 * s, top + 2)], fill=pal.roof,
                 outline=(40, 30, 24))
    door_w, door_h = 24 * s, 42 * s
    draw.rectangle([x - door_w / 2, ground - door_h, x + door_w / 2, ground], fill=(92, 58, 34))
    for wx in (left + 16 * s, left + w - 42 * s):
        draw.rectangle([wx, top + 16 * s, wx + 26 * s, top + 40 * s], fill=pal.window, outline=(40, 30, 24))
        draw.line([wx + 13 * s, top + 16 * s, wx + 13 * s, top + 40 * s], fill=(40, 30, 24))


def _round_tree(draw: ImageDraw.ImageDraw, x: float, ground: float, s: float, pal: Palette,
                rng: np.random.RandomState) -> None:
    draw.rectangle([x - 7 * s, ground - 70 * s, x + 7 * s, ground], fill=pal.trunk)
    for _ in range(9):
        dx, dy, r = rng.uniform(-30, 30) * s, rng.uniform(-115, -70) * s, rng.uniform(20, 34) * s
        shade = tuple(int(c * rng.uniform(0.8, 1.15)) for c in pal.leaves)
        draw.ellipse([x + dx - r, ground + dy - r, x + dx + r, ground + dy + r], fill=shade)


def _pine(draw: ImageDraw.ImageDraw, x: float, ground: float, s: float, pal: Palette, snow: bool) -> None:
    draw.rectangle([x - 5 * s, ground - 22 * s, x + 5 * s, ground], fill=pal.trunk)
    for i in range(3):
        base = ground - 18 * s - i * 30 * s
        half = (44 - i * 10) * s
        draw.polygon([(x - half, base), (x, base - 52 * s), (x + half, base)], fill=pal.leaves)
        if snow:
            draw.polygon([(x - half * 0.45, base - 30 * s), (x, base - 52 * s), (x + half * 0.45, base - 30 * s)],
                         fill=(236, 242, 252))


def _texture(img: Image.Image, strength: float, rng: np.random.RandomState) -> Image.Image:
    """Grain plus a soft blur, so the cartoon has some texture for DINO to look at."""
    arr = np.asarray(img, np.float32)
    noise = rng.normal(0.0, strength, arr.shape[:2])[..., None]
    arr = np.clip(arr + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.6))


def draw_village(size: tuple[int, int], x0: float = 0.0, seed: int = 1, pal: Palette = DAY,
                 night: bool = False) -> Image.Image:
    """The scene in scene coordinates: (x0, 0) is the left edge, so crops of a wider view pan."""
    w, h = size
    rng = np.random.RandomState(seed)
    sky = _vertical_gradient(size, pal.sky_top, pal.sky_bottom)
    img = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    scale = h / 384.0
    if night:
        star_rng = np.random.RandomState(seed + 100)
        for _ in range(int(140 * w / 512)):
            sx, sy = star_rng.uniform(0, w), star_rng.uniform(0, h * 0.5)
            r = star_rng.uniform(0.6, 1.8)
            draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=(255, 255, 230))
        mx, my, mr = 0.78 * w - x0 * 0.2, 0.17 * h, 30 * scale
        draw.ellipse([mx - mr, my - mr, mx + mr, my + mr], fill=(246, 240, 214))
    else:
        sx, sy, sr = 0.8 * w - x0 * 0.2, 0.16 * h, 34 * scale
        draw.ellipse([sx - sr * 1.5, sy - sr * 1.5, sx + sr * 1.5, sy + sr * 1.5], fill=(236, 240, 220))
        draw.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=(255, 222, 90))
        for cx, cy in ((0.22, 0.14), (0.5, 0.22)):
            px, py = cx * w * 1.6 - x0 * 0.5, cy * h
            for k in range(4):
                r = (22 + 6 * k) * scale
                draw.ellipse([px + k * 22 * scale - r, py - r * 0.6, px + k * 22 * scale + r, py + r * 0.6],
                             fill=(248, 250, 252))
    _fill_below(draw, _ridge(w, 0.52 * h, 26 * scale, (0.3, 1.7, 2.9), x0 * 0.6), h, pal.far_hills)
    near = _ridge(w, 0.70 * h, 18 * scale, (1.1, 0.4, 2.2), x0)
    _fill_below(draw, near, h, pal.near_hills)
    # A path winding from the door to the bottom edge.
    house_x = 0.36 * 512 * scale - x0
    ground = 0.72 * h
    draw.polygon([(house_x - 10 * scale, ground), (house_x + 10 * scale, ground),
                  (house_x + 70 * scale, h), (house_x - 40 * scale, h)], fill=pal.path)
    _house(draw, house_x, ground, scale, pal)
    for tx in (0.75, 1.35, 1.95):
        x = tx * 512 * scale - x0
        if night:
            _pine(draw, x, 0.74 * h, scale, pal, snow=True)
        else:
            _round_tree(draw, x, 0.74 * h, scale, pal, rng)
    if night:
        _pine(draw, 0.08 * w - x0, 0.8 * h, scale * 0.8, pal, snow=True)
    return _texture(img, pal.ground_noise * 0.5, rng)


def structure_image() -> Image.Image:
    """A sunny village: the layout the output must keep."""
    return draw_village(IMAGE_SIZE, seed=1, pal=DAY)


def appearance_image() -> Image.Image:
    """A snowy night scene with the same kinds of objects: the look to transfer."""
    return draw_village(IMAGE_SIZE, x0=90.0, seed=2, pal=NIGHT, night=True)


def object_structure_image() -> Image.Image:
    """A cottage (the object) alone on a meadow under a sky (the background to keep)."""
    w, h = OBJECT_SIZE
    rng = np.random.RandomState(3)
    img = Image.fromarray(_vertical_gradient(OBJECT_SIZE, DAY.sky_top, DAY.sky_bottom).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for cx, cy in ((0.14, 0.16), (0.8, 0.12)):
        for k in range(3):
            r = 16 + 5 * k
            draw.ellipse([cx * w + k * 18 - r, cy * h - r * 0.6, cx * w + k * 18 + r, cy * h + r * 0.6],
                         fill=(248, 250, 252))
    _fill_below(draw, _ridge(w, 0.66 * h, 10, (0.7, 2.1, 0.2), 0.0), h, DAY.near_hills)
    _house(draw, 0.5 * w, 0.78 * h, 1.25, DAY)
    return _texture(img, 6.0, rng)


def _gingerbread_house(draw: ImageDraw.ImageDraw, x: float, ground: float, s: float,
                       rng: np.random.RandomState) -> None:
    """A house of the same shape in another material: gingerbread walls, icing, sweets."""
    dough, dark, icing = (166, 98, 48), (112, 62, 30), (252, 250, 244)
    w, h = 120 * s, 78 * s
    left, top = x - w / 2, ground - h
    draw.rectangle([left, top, left + w, ground], fill=dough, outline=dark, width=max(1, int(2 * s)))
    for _ in range(int(60 * s)):  # baked speckles
        px, py = rng.uniform(left + 3, left + w - 3), rng.uniform(top + 3, ground - 3)
        draw.ellipse([px - 1.2, py - 1.2, px + 1.2, py + 1.2], fill=dark)
    draw.polygon([(left - 12 * s, top + 2), (x, top - 58 * s), (left + w + 12 * s, top + 2)], fill=icing,
                 outline=dark)
    sweets = ((220, 40, 60), (40, 160, 80), (250, 200, 40), (60, 120, 220))
    for i in range(10):  # sweets along both slopes of the roof, just inside its edge
        t = 0.15 + 0.7 * (i % 5) / 4
        edge = left - 4 * s if i < 5 else left + w + 4 * s
        sx, sy = edge + t * (x - edge), top - 4 * s + t * (-50 * s)
        r = 4.5 * s
        draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=sweets[i % len(sweets)])
    zig = [(left + k * 8 * s, top + (6 * s if k % 2 else 0)) for k in range(int(w / (8 * s)) + 1)]
    draw.line(zig, fill=icing, width=max(2, int(3 * s)))
    door_w, door_h = 24 * s, 42 * s
    draw.rectangle([x - door_w / 2, ground - door_h, x + door_w / 2, ground], fill=dark, outline=icing,
                   width=max(1, int(2 * s)))
    for wx in (left + 16 * s, left + w - 42 * s):
        draw.rectangle([wx, top + 16 * s, wx + 26 * s, top + 40 * s], fill=(250, 214, 120), outline=icing,
                       width=max(2, int(3 * s)))
        draw.line([wx + 13 * s, top + 16 * s, wx + 13 * s, top + 40 * s], fill=icing, width=max(1, int(2 * s)))


def object_appearance_image() -> Image.Image:
    """A gingerbread house (the same kind of object, another look) on a plain pastel background,
    off-centre and smaller, so co-segmentation and the crop have work to do."""
    w, h = OBJECT_SIZE
    rng = np.random.RandomState(4)
    img = Image.fromarray(_vertical_gradient(OBJECT_SIZE, (238, 206, 222), (250, 236, 214)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.ellipse([0.18 * w, 0.74 * h, 0.86 * w, 0.98 * h], fill=(244, 244, 248), outline=(200, 200, 214))
    _gingerbread_house(draw, 0.54 * w, 0.86 * h, 1.05, rng)
    return _texture(img, 4.0, rng)


# -- select by material: textures drawn with numpy, so each material has its own pattern ----------


def _smooth_noise(size: tuple[int, int], cell: int, rng: np.random.RandomState) -> np.ndarray:
    """Value noise in [-1, 1] of feature size ``cell`` pixels: a coarse random grid, upsampled
    bicubically ([h, w] float32)."""
    w, h = size
    coarse = rng.uniform(-1.0, 1.0, (h // cell + 2, w // cell + 2)).astype(np.float32)
    up = Image.fromarray(coarse).resize(((w // cell + 2) * cell, (h // cell + 2) * cell),
                                                  Image.Resampling.BICUBIC)
    return np.asarray(up, np.float32)[:h, :w]


def _wood_planks(size: tuple[int, int], rng: np.random.RandomState) -> np.ndarray:
    """Floor boards: rows of planks with their own tone, wavy grain along their length, dark seams
    and staggered end joints ([h, w, 3] float32, 0..255)."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    board = 24
    row = (ys // board).astype(int)
    local = ys - row * board
    warp = 3.0 * np.sin(xs / 37.0 + row * 1.7) + 2.0 * _smooth_noise(size, 24, rng)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (local + warp) / 4.5)
    joints = rng.uniform(0, 180, row.max() + 2)
    plank = ((xs + joints[row]) // 180).astype(int)
    tone = rng.uniform(0.82, 1.12, (row.max() + 2, w // 180 + 3))[row, plank]
    base = np.array((152, 96, 54), np.float32)
    wood = base * (0.78 + 0.26 * grain[..., None]) * tone[..., None]
    seam = (local < 1.5) | (((xs + joints[row]) % 180) < 2)
    wood[seam] = (58, 34, 20)
    return wood


def _woven_fabric(size: tuple[int, int], colour: tuple[int, int, int], rng: np.random.RandomState) -> np.ndarray:
    """A plain-weave upholstery fabric: a fine over/under checker of threads with a slub noise."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    weave = np.where(((xs // 2) + (ys // 2)) % 2 == 0, 1.06, 0.94).astype(np.float32)
    slub = 1.0 + 0.05 * _smooth_noise(size, 6, rng)
    return np.array(colour, np.float32) * (weave * slub)[..., None]


def _knit(size: tuple[int, int], colour: tuple[int, int, int]) -> np.ndarray:
    """Chunky stocking-stitch knit: columns of V-shaped stitches, each leg a rounded, tilted bump
    with dark gaps between them ([h, w, 3] float32)."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cw, ch = 16.0, 14.0
    u, v = xs % cw, ys % ch
    bump = np.zeros((h, w), np.float32)
    for cx, angle in ((4.0, 0.55), (12.0, -0.55)):  # the two legs of the V
        dx, dy = u - cx, v - ch / 2
        a = dx * math.cos(angle) - dy * math.sin(angle)
        b = dx * math.sin(angle) + dy * math.cos(angle)
        r2 = (a / 3.6) ** 2 + (b / 7.8) ** 2
        bump = np.maximum(bump, np.clip(1.0 - r2, 0.0, 1.0))
    shade = 0.35 + 0.8 * np.sqrt(bump)
    return np.array(colour, np.float32) * shade[..., None]


def _stone_wall(size: tuple[int, int], rng: np.random.RandomState) -> np.ndarray:
    """Irregular grey stones (a Voronoi diagram) in light mortar, each stone of its own tone,
    darker towards its edge, with a fine speckle."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    seeds = np.stack([rng.uniform(0, w, 70), rng.uniform(0, h, 70)], axis=1).astype(np.float32)
    d = np.sqrt((xs[..., None] - seeds[:, 0]) ** 2 + (ys[..., None] - seeds[:, 1]) ** 2)
    nearest = np.argsort(d, axis=-1)[..., :2]
    d1 = np.take_along_axis(d, nearest[..., :1], -1)[..., 0]
    d2 = np.take_along_axis(d, nearest[..., 1:2], -1)[..., 0]
    tones = rng.uniform(125, 185, len(seeds)).astype(np.float32)
    tint = np.array((1.0, 0.98, 0.93), np.float32)
    edge = np.clip((d2 - d1) / 10.0, 0.0, 1.0)
    stone = (tones[nearest[..., 0]] * (0.72 + 0.28 * edge))[..., None] * tint
    stone += rng.normal(0.0, 5.0, (h, w, 1)).astype(np.float32)
    stone[(d2 - d1) < 1.8] = (196, 190, 176)
    return stone


def _brushed_metal(size: tuple[int, int], rng: np.random.RandomState) -> np.ndarray:
    """Brushed steel: long horizontal streaks (noise smeared along x) under a soft highlight."""
    w, h = size
    streaks = Image.fromarray(rng.normal(0.0, 1.0, (h, w)).astype(np.float32))  # mode F
    streaks = streaks.resize((w // 32, h), Image.Resampling.BOX)
    smear = np.asarray(streaks.resize((w, h), Image.Resampling.BILINEAR), np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    light = 0.85 + 0.2 * np.exp(-((t - 0.35) ** 2) / 0.05)
    value = (172.0 + 40.0 * smear) * light
    return value[..., None] * np.array((0.97, 0.99, 1.03), np.float32)


def _paste(canvas: np.ndarray, texture: np.ndarray, mask: Image.Image) -> None:
    """Put ``texture`` into ``canvas`` where the drawn ``mask`` (L, same size) is set."""
    where = np.asarray(mask) > 127
    canvas[where] = texture[where]


def material_structure_image() -> Image.Image:
    """A room: a plaster wall with a window, a wooden floor and a plain blue-grey fabric sofa
    (the fabric is the material the template restyles)."""
    w, h = MATERIAL_SIZE
    rng = np.random.RandomState(5)
    floor_y = 262
    wall = np.array((226, 216, 196), np.float32) * (1.0 + 0.035 * _smooth_noise(MATERIAL_SIZE, 40, rng))[..., None]
    canvas = wall.copy()
    canvas[floor_y:] = _wood_planks((w, h - floor_y), rng)
    canvas[floor_y - 6:floor_y] = (236, 232, 222)  # skirting board
    # The window: sky behind a white frame.
    canvas[28:118, 390:480] = _vertical_gradient((90, 90), (120, 170, 226), (196, 222, 244))
    sofa = Image.new("L", MATERIAL_SIZE, 0)
    draw = ImageDraw.Draw(sofa)
    draw.rounded_rectangle([110, 132, 402, 232], radius=22, fill=255)   # back
    draw.rounded_rectangle([96, 200, 416, 290], radius=16, fill=255)    # seat
    draw.rounded_rectangle([78, 180, 136, 296], radius=20, fill=255)    # arms
    draw.rounded_rectangle([376, 180, 434, 296], radius=20, fill=255)
    fabric = _woven_fabric(MATERIAL_SIZE, (78, 108, 134), rng)
    ys = np.arange(h, dtype=np.float32)[:, None, None]
    fabric *= 1.08 - 0.22 * np.clip((ys - 132) / 170.0, 0.0, 1.0)  # lit from above
    _paste(canvas, fabric, sofa)
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.rectangle([390, 28, 480, 118], outline=(248, 248, 244), width=6)
    draw.line([435, 28, 435, 118], fill=(248, 248, 244), width=4)
    draw.line([390, 73, 480, 73], fill=(248, 248, 244), width=4)
    for x in (160, 256, 352):  # cushion seams and the seat's front edge
        draw.line([x, 140, x, 226], fill=(52, 72, 92), width=2)
    draw.line([136, 236, 376, 236], fill=(52, 72, 92), width=2)
    for x in (108, 400):  # legs
        draw.rectangle([x - 6, 294, x + 6, 308], fill=(60, 38, 24))
    return _texture(img, 3.0, rng)


def material_appearance_image() -> Image.Image:
    """Another scene: a red knitted blanket (the material whose look is taken) hanging over a
    brushed-metal counter in front of a stone wall."""
    w, h = MATERIAL_SIZE
    rng = np.random.RandomState(6)
    counter_y = 250
    canvas = _stone_wall(MATERIAL_SIZE, rng)
    canvas[counter_y:] = _brushed_metal((w, h - counter_y), rng)
    canvas[counter_y:counter_y + 4] = (96, 100, 108)  # the counter's front edge
    blanket = Image.new("L", MATERIAL_SIZE, 0)
    draw = ImageDraw.Draw(blanket)
    top = [(150 + 6 * k, 96 + 5 * math.sin(k * 1.3)) for k in range(41)]
    bottom = [(390 - 6 * k, 330 + 8 * math.sin(k * 0.9)) for k in range(41)]
    draw.polygon(top + bottom, fill=255)
    knit = _knit(MATERIAL_SIZE, (196, 44, 52))
    knit *= (1.0 + 0.06 * _smooth_noise(MATERIAL_SIZE, 30, rng))[..., None]
    _paste(canvas, knit, blanket)
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    return _texture(img, 2.0, rng)


def video_frames() -> list[Image.Image]:
    """A left-to-right pan over the structure scene (the structure image's own scale)."""
    w, h = VIDEO_SIZE
    return [draw_village(VIDEO_SIZE, x0=i * 9.0, seed=1, pal=DAY) for i in range(VIDEO_FRAMES)]


def clip_audio(seconds: float = VIDEO_FRAMES / VIDEO_FPS, rate: int = AUDIO_RATE) -> np.ndarray:
    """Two soft chimes (mono, float32 in [-1, 1]) for the clip's sound track."""
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    sound = np.zeros_like(t)
    for start, pitch in ((0.05, 660.0), (0.75, 880.0)):
        local = np.clip(t - start, 0.0, None)
        sound += (t >= start) * 0.25 * np.exp(-4.0 * local) * np.sin(2 * np.pi * pitch * local)
    return sound.astype(np.float32)


def encode_mp4(frames: list[Image.Image], fps: int = VIDEO_FPS, audio: np.ndarray | None = None,
               audio_rate: int = AUDIO_RATE) -> bytes:
    """H.264 in MP4 with PyAV (what ComfyUI's LoadVideo reads), with an optional mono AAC track."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("h264", rate=Fraction(fps, 1))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "medium", "threads": "1"}
        sound = container.add_stream("aac", rate=audio_rate, layout="mono") if audio is not None else None
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None and audio is not None:
            chunk = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
            chunk.sample_rate = audio_rate
            for packet in [*sound.encode(chunk), *sound.encode(None)]:
                container.mux(packet)
    return buffer.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def render_all() -> dict[str, bytes]:
    """Every example file, as bytes, by name."""
    return {
        STRUCTURE: png_bytes(structure_image()),
        APPEARANCE: png_bytes(appearance_image()),
        VIDEO: encode_mp4(video_frames(), audio=clip_audio()),
        OBJECT_STRUCTURE: png_bytes(object_structure_image()),
        OBJECT_APPEARANCE: png_bytes(object_appearance_image()),
        MATERIAL_STRUCTURE: png_bytes(material_structure_image()),
        MATERIAL_APPEARANCE: png_bytes(material_appearance_image()),
    }


def write_all(target: Path = INPUT_DIR) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, payload in render_all().items():
        path = target / name
        path.write_bytes(payload)
        written.append(path)
        log.info("wrote %s (%d bytes)", path, len(payload))
    return written


def check(target: Path = INPUT_DIR) -> list[str]:
    """Names of the PNGs that differ from a fresh draw, or are missing (the MP4 only has to
    exist and decode: encoders differ between PyAV builds)."""
    problems = []
    for name, payload in render_all().items():
        path = target / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif name.endswith(".png"):
            with Image.open(path) as saved, Image.open(io.BytesIO(payload)) as fresh:
                if not np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(fresh.convert("RGB"))):
                    problems.append(f"{name}: differs from a fresh draw")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=INPUT_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        problems = check(args.out)
        for problem in problems:
            log.error(problem)
        return 1 if problems else 0
    write_all(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
