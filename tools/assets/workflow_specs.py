"""The shipped workflows, described as data: nodes, widget values by name, links, groups.

tools/assets/build_workflows.py builds these in the real ComfyUI page; the browser tests read the
same descriptions for names and for which nodes to run. Facts owned elsewhere are read from
there: the DINO file and URL from comfy_splice.dino.models, the example inputs from
tools/assets/make_examples.py, and the Train node's defaults from its schema (the page fills
every widget not named here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_splice.dino.models import DEFAULT_MODEL, DINO_MODELS
from tools.assets import make_examples

REPO_ROOT = Path(__file__).resolve().parents[2]

WORKFLOWS_DIR = REPO_ROOT / "workflows"

# The DINO weights every Splice workflow loads (the paper's ViT-B/8, the Hugging Face hub's
# safetensors), where ComfyUI's missing-models dialog should point: a .safetensors URL on
# huggingface.co in a registered folder, so the dialog offers its download.
DINO_MODEL = {
    "name": DINO_MODELS[DEFAULT_MODEL].hf_file_name,
    "url": DINO_MODELS[DEFAULT_MODEL].hf_url,
    "directory": "splice_dino",
}
# The official .pth spelling of the same weights: still accepted, so tests also allow it.
DINO_MODEL_PTH = {
    "name": DINO_MODELS[DEFAULT_MODEL].file_name,
    "url": DINO_MODELS[DEFAULT_MODEL].url,
    "directory": "splice_dino",
}
SD15_CHECKPOINT = {
    "name": "v1-5-pruned-emaonly-fp16.safetensors",
    "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
           "v1-5-pruned-emaonly-fp16.safetensors?download=true",
    "directory": "checkpoints",
}
TILE_CONTROLNET = {
    "name": "control_v11f1e_sd15_tile_fp16.safetensors",
    "url": "https://huggingface.co/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/"
           "control_v11f1e_sd15_tile_fp16.safetensors",
    "directory": "controlnet",
}
# What Save Splice Generator writes first with the prefix used in the video workflow
# (output/splice/village_winter_00001_.safetensors), for Load Splice Generator.
GENERATOR_FILE = "village_winter_00001_.safetensors"

MODE_ALWAYS, MODE_NEVER = 0, 2


@dataclass
class NodeSpec:
    key: str
    type: str
    pos: tuple[float, float]
    widgets: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    size: tuple[float, float] | None = None
    mode: int = MODE_ALWAYS
    models: list[dict[str, str]] | None = None
    color: str | None = None
    bgcolor: str | None = None


@dataclass
class GroupSpec:
    title: str
    members: list[str]
    color: str = "#3f789e"


@dataclass
class WorkflowSpec:
    # ``name``: a stable id (screenshots, the saved graph's id, test ids). ``title``: the file
    # name, which both frontends' template browsers show as the card's title, so it reads as one.
    name: str
    title: str
    description: str
    nodes: list[NodeSpec]
    links: list[tuple[str, str, str, str]]  # (from key, output name, to key, input name)
    groups: list[GroupSpec] = field(default_factory=list)
    needs_checkpoint: bool = False
    # For the browser tests: the nodes whose images must show after a run, and the muted
    # nodes a user switches on after the first run (the video workflow's group 2).
    expect_images: list[str] = field(default_factory=list)
    unmute_for_test: list[str] = field(default_factory=list)

    def node(self, key: str) -> NodeSpec:
        return next(n for n in self.nodes if n.key == key)

    def node_id(self, key: str) -> int:
        """The node's id in the saved file: ComfyUI numbers nodes 1, 2, ... in creation order."""
        return [n.key for n in self.nodes].index(key) + 1

    @property
    def json_path(self) -> Path:
        return WORKFLOWS_DIR / f"{self.title}.json"

    @property
    def thumbnail_path(self) -> Path:
        return WORKFLOWS_DIR / f"{self.title}.jpg"


# ------------------------------------------------------------------------------------------
# The graphs. Node keys are local names; ComfyUI numbers nodes in creation order, so the ids
# in the files follow the order of `nodes` (1, 2, ...).

# Only what differs from the node's defaults: every other Train widget keeps the value its schema
# gives it in the page. The seed stays fixed so a re-run is cached, not retrained; autosave is on so
# a result ComfyUI dropped from its cache is found again (Train Generator resumes from it).
AUTOSAVE_EVERY = 100
TRAIN_WIDGETS: dict[str, Any] = {"control_after_generate": "fixed", "autosave_every": AUTOSAVE_EVERY}

NOTE_COLOR, NOTE_BG = "#432", "#653"

SPLICE_NOTE = """**Splice** (Tumanyan et al., CVPR 2022) trains a small generator on **one pair**: the output
keeps the layout of the *structure* image and takes the look of the *appearance* image.

**Weights:** *Load DINO-ViT* uses `{dino_name}` (ViT-B/8, ~350 MB, from
Hugging Face `{dino_repo}`) in `ComfyUI/models/splice_dino/`. If ComfyUI says
it is missing, press *Download* in that dialog, or switch on *download_if_missing* on the node.
The official `{dino_pth}` works too.

**Inputs:** the example images are copied into `ComfyUI/input/` when the pack loads; load your
own to change the pair.

**Steps:** the paper trains 2000; on a CPU try 200 first. **Autosave is on** (every {every} steps,
into `models/splice_generators/autosave/`): queueing the same graph again does not train again.
ComfyUI reuses its cached result, and when it dropped it (low memory, `--cache-none`) *Train
Generator* continues from the newest autosave of the same images and settings, and finishes at
once when that run was complete.""".format(
    dino_name=DINO_MODEL["name"], dino_repo=DINO_MODELS[DEFAULT_MODEL].hf_repo,
    dino_pth=DINO_MODELS[DEFAULT_MODEL].file_name, every=AUTOSAVE_EVERY)


# Layout: columns and rows in canvas units (node pos is the body's top-left; titles sit above).
# Rows leave room for Nodes 2.0, which grows each node to its rendered height at the saved position
# (frontend 1.58: a one-widget pack node is ~114 tall there, 82 in the classic canvas);
# tests/browser/test_layout.py checks that no two nodes overlap in either renderer.
X_NOTE, X_INPUT, X_DINO, X_TRAIN, X_APPLY, X_SAVE = 0, 400, 780, 1160, 1540, 1900
Y_LOWER = 1000  # second band (video / diffusion), below the inputs


def _splice_core() -> tuple[list[NodeSpec], list[tuple[str, str, str, str]]]:
    """Inputs, DINO-ViT, both losses and Train Generator (shared by every workflow)."""
    nodes = [
        NodeSpec("structure", "LoadImage", (X_INPUT, 0), {"image": make_examples.STRUCTURE},
                 title="Structure image (layout to keep)", size=(320, 380)),
        NodeSpec("appearance", "LoadImage", (X_INPUT, 460), {"image": make_examples.APPEARANCE},
                 title="Appearance image (look to transfer)", size=(320, 380)),
        NodeSpec("dino", "SpliceLoadDINO", (X_DINO, 0),
                 {"model_name": DINO_MODEL["name"], "download_if_missing": False},
                 size=(320, 82), models=[DINO_MODEL]),
        NodeSpec("structure_loss", "SpliceStructureLoss", (X_DINO, 160), {"weight": 1.0, "block": -1},
                 size=(320, 82)),
        NodeSpec("appearance_loss", "SpliceAppearanceLoss", (X_DINO, 320), {"weight": 10.0, "block": -1},
                 size=(320, 82)),
        NodeSpec("train", "SpliceTrainGenerator", (X_TRAIN, 0), dict(TRAIN_WIDGETS), size=(320, 286)),
    ]
    links = [
        ("dino", "dino", "structure_loss", "dino"),
        ("dino", "dino", "appearance_loss", "dino"),
        ("structure", "IMAGE", "train", "structure"),
        ("appearance", "IMAGE", "train", "appearance"),
        ("structure_loss", "structure_loss", "train", "structure_loss"),
        ("appearance_loss", "appearance_loss", "train", "appearance_loss"),
    ]
    return nodes, links


def _note(headline: str, text: str, height: float) -> NodeSpec:
    """The template's "Read me": ``headline`` says in one line what it does and what to change
    first, then the shared Splice notes and ``text`` (this graph)."""
    body = f"## {headline}\n\n{SPLICE_NOTE}\n\n{text}"
    return NodeSpec("note", "MarkdownNote", (X_NOTE, 0), {"text": body}, title="Read me", size=(340, height),
                    color=NOTE_COLOR, bgcolor=NOTE_BG)


def basic_workflow() -> WorkflowSpec:
    nodes, links = _splice_core()
    nodes = [_note(
        "Restyles one image with the look of another. Change first: the two images.",
        """**This graph:** *Train Generator* learns the pair and its *result* (the structure image
restyled) is saved, *Plot Loss Graph* draws the loss curve, and *Visualize Structure* shows
what the structure loss compares (the main components of DINO's key self-similarity).""", 700)] + nodes + [
        NodeSpec("save", "SaveImage", (X_APPLY, 0), {"filename_prefix": "splice/result"}, size=(420, 400)),
        NodeSpec("loss_plot", "LossGraphNode", (X_APPLY, 560), {"filename_prefix": "splice/loss"},
                 size=(300, 300)),
        NodeSpec("visualize", "SpliceVisualizeStructure", (X_DINO, 520), {"block": -1}, size=(320, 82)),
        NodeSpec("visualize_preview", "PreviewImage", (X_DINO, 680), {}, title="Structure (self-similarity PCA)",
                 size=(320, 300)),
    ]
    links += [
        ("train", "result", "save", "images"),
        ("train", "loss_history", "loss_plot", "loss"),
        ("dino", "dino", "visualize", "dino"),
        ("structure", "IMAGE", "visualize", "image"),
        ("visualize", "visualization", "visualize_preview", "images"),
    ]
    groups = [
        GroupSpec("Inputs", ["structure", "appearance"], "#8A8"),
        GroupSpec("DINO-ViT and losses", ["dino", "structure_loss", "appearance_loss"], "#88A"),
        GroupSpec("What the structure loss sees", ["visualize", "visualize_preview"], "#a1309b"),
        GroupSpec("Train and save", ["train", "save", "loss_plot"], "#b58b2a"),
    ]
    return WorkflowSpec(
        "splice_basic", "Splice - restyle one image",
        "Splice: train a generator on one structure/appearance pair, save the result, plot the loss "
        "and visualise the structure DINO sees.",
        nodes, links, groups,
        expect_images=["save", "loss_plot", "visualize_preview"])


def video_workflow() -> WorkflowSpec:
    """One generator for the shot: trained on every Nth frame of the clip, applied to all of them,
    written as a video with the clip's frame rate and sound. Runs as shipped (nothing muted)."""
    nodes, links = _splice_core()
    # The clip's keyframes take the structure image's place.
    nodes[[n.key for n in nodes].index("structure")] = NodeSpec(
        "load_video", "LoadVideo", (X_INPUT, 0), {"file": make_examples.VIDEO}, title="The shot (video)",
        size=(320, 380))
    links = [link for link in links if link[0] != "structure"]
    nodes = [_note(
        "Restyles every frame of a video clip with one look. Change first: the video and the "
        "appearance image.",
        """**This graph: one generator for a whole shot.** *Select Keyframes* takes every Nth frame of the
video (set N so the keyframes show everything that enters the shot); *Train Generator* trains
once on all of them (one keyframe per step: a step costs what one image costs);
*Splice Output* applies the generator to every frame, and *Create Video* writes them with the clip's frame rate
and sound. *Save Splice Generator* keeps the generator for other clips of the shot.""", 880)] + nodes + [
        NodeSpec("components", "GetVideoComponents", (X_INPUT, 920), {}, size=(320, 86)),
        NodeSpec("keyframes", "SpliceSelectKeyframes", (X_INPUT, 1070), {"every_nth": 4}, size=(320, 82)),
        NodeSpec("save_generator", "SpliceSaveGenerator", (X_APPLY, 0), {"filename_prefix": "splice/village_winter"},
                 size=(320, 82)),
        NodeSpec("train_preview", "PreviewImage", (X_APPLY, 160), {}, title="Result on the keyframes",
                 size=(320, 300)),
        NodeSpec("apply", "SpliceApply", (X_TRAIN, 620), {"batch_size": 4}, size=(320, 102)),
        NodeSpec("create_video", "CreateVideo", (X_TRAIN, 820), {}, size=(320, 100)),
        NodeSpec("save_video", "SaveVideo", (X_APPLY, 620),
                 {"filename_prefix": "splice/video", "format": "auto", "codec": "auto"}, size=(420, 420)),
    ]
    links += [
        ("load_video", "VIDEO", "components", "video"),
        ("components", "images", "keyframes", "images"),
        ("keyframes", "keyframes", "train", "structure"),
        ("train", "generator", "save_generator", "generator"),
        ("train", "result", "train_preview", "images"),
        ("train", "generator", "apply", "generator"),
        ("components", "images", "apply", "images"),
        ("apply", "image", "create_video", "images"),
        ("components", "fps", "create_video", "fps"),
        ("components", "audio", "create_video", "audio"),
        ("create_video", "VIDEO", "save_video", "video"),
    ]
    groups = [
        GroupSpec("1. The shot and the look", ["load_video", "appearance", "components", "keyframes"], "#8A8"),
        GroupSpec("2. DINO-ViT and losses", ["dino", "structure_loss", "appearance_loss"], "#88A"),
        GroupSpec("3. Train once on the keyframes", ["train", "save_generator", "train_preview"], "#b58b2a"),
        GroupSpec("4. Every frame, with the clip's frame rate and sound", ["apply", "create_video", "save_video"],
                  "#3f789e"),
    ]
    return WorkflowSpec(
        "splice_train_once_apply_to_video", "Splice - restyle a video clip",
        "Train one Splice generator on a video's keyframes and apply it to every frame; the video keeps "
        "its frame rate and sound.",
        nodes, links, groups,
        expect_images=["train_preview"])


DIFFUSION_PROMPT = ("a snowy village at night, a cosy cottage with warm light in the windows, snow on the "
                    "roof and the hills, pine tree, starry sky, detailed illustration")
NEGATIVE_PROMPT = "blurry, low quality, watermark, text"


def _diffusion_tail(controlnet: bool) -> tuple[list[NodeSpec], list[tuple[str, str, str, str]]]:
    """Train Generator's result -> VAE Encode -> KSampler -> VAE Decode -> SaveImage (SD 1.5)."""
    y = Y_LOWER
    nodes = [
        NodeSpec("splice_preview", "PreviewImage", (X_APPLY, 0), {}, title="Splice result (before diffusion)",
                 size=(420, 380)),
        NodeSpec("checkpoint", "CheckpointLoaderSimple", (X_INPUT, y), {"ckpt_name": SD15_CHECKPOINT["name"]},
                 size=(320, 98), models=[SD15_CHECKPOINT]),
        NodeSpec("positive", "CLIPTextEncode", (X_DINO, y), {"text": DIFFUSION_PROMPT}, title="Positive prompt",
                 size=(320, 180)),
        NodeSpec("negative", "CLIPTextEncode", (X_DINO, y + 240), {"text": NEGATIVE_PROMPT}, title="Negative prompt",
                 size=(320, 120)),
        NodeSpec("encode", "VAEEncode", (X_TRAIN, y + (300 if controlnet else 0)), {}, size=(320, 46)),
        NodeSpec("sampler", "KSampler", (X_APPLY, y),
                 {"seed": 0, "control_after_generate": "fixed", "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                  "scheduler": "normal", "denoise": 0.75 if controlnet else 0.5}, size=(300, 262)),
        NodeSpec("decode", "VAEDecode", (X_SAVE, y), {}, size=(220, 46)),
        NodeSpec("save", "SaveImage", (X_SAVE, y + 110),
                 {"filename_prefix": "splice/controlnet_tile" if controlnet else "splice/img2img"},
                 size=(420, 380)),
    ]
    links = [
        ("train", "result", "splice_preview", "images"),
        ("checkpoint", "CLIP", "positive", "clip"),
        ("checkpoint", "CLIP", "negative", "clip"),
        ("train", "result", "encode", "pixels"),
        ("checkpoint", "VAE", "encode", "vae"),
        ("checkpoint", "MODEL", "sampler", "model"),
        ("encode", "LATENT", "sampler", "latent_image"),
        ("sampler", "LATENT", "decode", "samples"),
        ("checkpoint", "VAE", "decode", "vae"),
        ("decode", "IMAGE", "save", "images"),
    ]
    if controlnet:
        nodes += [
            NodeSpec("controlnet", "ControlNetLoader", (X_INPUT, y + 170),
                     {"control_net_name": TILE_CONTROLNET["name"]}, size=(320, 58), models=[TILE_CONTROLNET]),
            NodeSpec("apply_controlnet", "ControlNetApplyAdvanced", (X_TRAIN, y),
                     {"strength": 0.8, "start_percent": 0.0, "end_percent": 1.0}, size=(320, 186)),
        ]
        links += [
            ("positive", "CONDITIONING", "apply_controlnet", "positive"),
            ("negative", "CONDITIONING", "apply_controlnet", "negative"),
            ("controlnet", "CONTROL_NET", "apply_controlnet", "control_net"),
            ("train", "result", "apply_controlnet", "image"),
            ("checkpoint", "VAE", "apply_controlnet", "vae"),
            ("apply_controlnet", "positive", "sampler", "positive"),
            ("apply_controlnet", "negative", "sampler", "negative"),
        ]
    else:
        links += [
            ("positive", "CONDITIONING", "sampler", "positive"),
            ("negative", "CONDITIONING", "sampler", "negative"),
        ]
    return nodes, links


def diffusion_workflow(controlnet: bool) -> WorkflowSpec:
    core, core_links = _splice_core()
    tail, tail_links = _diffusion_tail(controlnet)
    if controlnet:
        headline = ("Restyles one image, then SD 1.5 adds detail guided by a Tile ControlNet. Change "
                    "first: the two images and the prompt.")
        how = """**This graph: Splice, then diffusion guided by a Tile ControlNet.** The Splice result is
both the img2img start (denoise 0.75) and the control image of the SD 1.5 *tile* ControlNet
(`control_v11f1e_sd15_tile_fp16.safetensors` in `models/controlnet/`), which holds the layout
and colours while the sampler adds detail. Lower *strength* or raise *denoise* for more freedom."""
    else:
        headline = "Restyles one image, then SD 1.5 img2img adds detail. Change first: the two images and the prompt."
        how = """**This graph: Splice, then img2img.** The Splice result is encoded with the checkpoint's
VAE and re-sampled at denoise 0.5: Splice decides the layout and colours, diffusion adds detail
and texture. Pick any SD 1.5 checkpoint in *Load Checkpoint* (the default is
`v1-5-pruned-emaonly-fp16.safetensors`); raise denoise for more change."""
    nodes = [_note(headline, how, 820)] + core + tail
    splice_members = ["structure", "appearance", "dino", "structure_loss", "appearance_loss", "train",
                      "splice_preview"]
    diffusion_members = ["checkpoint", "positive", "negative", "encode", "sampler", "decode", "save"]
    if controlnet:
        diffusion_members += ["controlnet", "apply_controlnet"]
    groups = [GroupSpec("Splice", splice_members, "#b58b2a"),
              GroupSpec("Diffusion (SD 1.5" + (", Tile ControlNet)" if controlnet else " img2img)"),
                        diffusion_members, "#3f789e")]
    return WorkflowSpec(
        "splice_then_controlnet_tile" if controlnet else "splice_then_img2img",
        "Splice - then SD 1.5 Tile ControlNet" if controlnet else "Splice - then SD 1.5 img2img",
        ("Splice, then SD 1.5 img2img guided by a Tile ControlNet fed with the Splice result."
         if controlnet else "Splice, then SD 1.5 img2img at denoise 0.5 on the Splice result."),
        nodes, core_links + tail_links, groups, needs_checkpoint=True,
        expect_images=["splice_preview"])


REGION_NOTE = """**This graph: change the look of the object, keep the background.** *DINO Co-segmentation* finds
the object that A and B share (here a house) and returns a mask for each: A's from *masks*, B's
from *more_masks* (B goes into *more_images*, so it may have another size).
*Train Generator* takes the look from B's object only: its *appearance_mask* crops B to the
object's box (cropped, not blanked: blanked pixels would become part of the look).
*Splice Output* changes A only inside A's object mask, feathered over *feather* pixels; outside
it the output is A exactly. The previews show both masks: if they miss the object, change
*thresh* or *votes_percentage* on the co-segmentation (the paper's values are set)."""


def region_workflow() -> WorkflowSpec:
    """Region-aware Splice: co-segment A and B, train on B's object, change only A's object."""
    nodes, links = _splice_core()
    structure, appearance = nodes[0], nodes[1]
    structure.widgets = {"image": make_examples.OBJECT_STRUCTURE}
    structure.title = "A: the object to restyle, on the background to keep"
    appearance.widgets = {"image": make_examples.OBJECT_APPEARANCE}
    appearance.title = "B: the object whose look to take"
    nodes = [_note(
        "Restyles one object and keeps the background. Change first: image A (the object to "
        "restyle) and image B (the look).", REGION_NOTE, 900)] + nodes + [
        NodeSpec("cosegment", "SpliceDinoCosegmentation", (X_DINO, 480),
                 {"seed": 0, "control_after_generate": "fixed"}, size=(320, 430)),
        NodeSpec("mask_a", "MaskToImage", (X_TRAIN, 780), {}, size=(220, 26)),
        NodeSpec("mask_b", "MaskToImage", (X_TRAIN, 860), {}, size=(220, 26)),
        NodeSpec("mask_a_preview", "PreviewImage", (X_APPLY, 780), {}, title="A's object (what changes)",
                 size=(320, 300)),
        NodeSpec("mask_b_preview", "PreviewImage", (X_SAVE, 780), {}, title="B's object (where the look comes from)",
                 size=(320, 300)),
        NodeSpec("apply", "SpliceApply", (X_APPLY, 0), {"batch_size": 4, "feather": 8}, size=(300, 150)),
        NodeSpec("save", "SaveImage", (X_SAVE, 0), {"filename_prefix": "splice/region"}, size=(420, 400)),
    ]
    links += [
        ("dino", "dino", "cosegment", "dino"),
        ("structure", "IMAGE", "cosegment", "images"),
        ("appearance", "IMAGE", "cosegment", "more_images"),
        ("cosegment", "more_masks", "train", "appearance_mask"),
        ("cosegment", "masks", "mask_a", "mask"),
        ("cosegment", "more_masks", "mask_b", "mask"),
        ("mask_a", "IMAGE", "mask_a_preview", "images"),
        ("mask_b", "IMAGE", "mask_b_preview", "images"),
        ("train", "generator", "apply", "generator"),
        ("structure", "IMAGE", "apply", "images"),
        ("cosegment", "masks", "apply", "mask"),
        ("apply", "image", "save", "images"),
    ]
    groups = [
        GroupSpec("Inputs", ["structure", "appearance"], "#8A8"),
        GroupSpec("DINO-ViT, losses, masks", ["dino", "structure_loss", "appearance_loss", "cosegment"],
                  "#88A"),
        GroupSpec("The masks", ["mask_a", "mask_b", "mask_a_preview", "mask_b_preview"], "#a1309b"),
        GroupSpec("Train on B's object, change A's", ["train", "apply", "save"], "#b58b2a"),
    ]
    return WorkflowSpec(
        "splice_region_object", "Splice - restyle one object, keep the background",
        "Region-aware Splice: co-segment the object in A and B, take the look from B's object only and "
        "change A only inside its object mask; the background of A stays as it is.",
        nodes, links, groups,
        expect_images=["save", "mask_a_preview", "mask_b_preview"])


MATERIAL_NOTE = """**This graph: give one material of A the look of one material of B.** Each *Select
Material* clicks a material at its *x*, *y* (here the sofa's fabric in A and the knitted blanket
in B) and returns a mask of every pixel made of it. *Train Generator* takes the look from B's
material only (*appearance_mask*: B cropped to the material's box); *Splice Output* changes A only
inside A's material mask (*mask*, feathered), and the rest of A stays as it is.

**Click with the mask editor instead of x/y:** right-click a *Load Image*, *Open in MaskEditor*,
paint a dot (or a stroke) on the material, *Save*; then connect that *Load Image*'s MASK to the
*Select Material*'s *query_mask* (x and y are then ignored).

The previews show both masks. Without a *Load Materialistic* connected, *Select Material* compares
DINO's descriptors (training-free, not the paper's network): if a mask takes too much, raise its
*threshold*, if too little, lower it. For the paper's network, put the authors' checkpoint into
`models/materialistic/` and connect *Load Materialistic* to both *materialistic* inputs."""


def material_workflow() -> WorkflowSpec:
    """Select by material: one material of A restyled with the look of one material of B."""
    nodes, links = _splice_core()
    structure, appearance = nodes[0], nodes[1]
    structure.widgets = {"image": make_examples.MATERIAL_STRUCTURE}
    structure.title = "A: the picture whose material changes"
    appearance.widgets = {"image": make_examples.MATERIAL_APPEARANCE}
    appearance.title = "B: the picture with the material to take"
    (ax, ay), (bx, by) = make_examples.MATERIAL_CLICK_ROOM, make_examples.MATERIAL_CLICK_KNIT
    nodes = [_note(
        "Restyles one material of A (all of it) with a material of B. Change first: the two images "
        "and the click (x, y) on each Select Material.", MATERIAL_NOTE, 900)] + nodes + [
        NodeSpec("select_a", "SpliceSelectMaterial", (X_DINO, 480), {"x": ax, "y": ay},
                 title="A's material (the click: x, y)", size=(320, 190)),
        NodeSpec("select_b", "SpliceSelectMaterial", (X_DINO, 780), {"x": bx, "y": by},
                 title="B's material (the click: x, y)", size=(320, 190)),
        NodeSpec("mask_a", "MaskToImage", (X_TRAIN, 780), {}, size=(220, 26)),
        NodeSpec("mask_b", "MaskToImage", (X_TRAIN, 860), {}, size=(220, 26)),
        NodeSpec("mask_a_preview", "PreviewImage", (X_APPLY, 780), {}, title="A's material (what changes)",
                 size=(320, 300)),
        NodeSpec("mask_b_preview", "PreviewImage", (X_SAVE, 780), {},
                 title="B's material (where the look comes from)", size=(320, 300)),
        NodeSpec("apply", "SpliceApply", (X_APPLY, 0), {"batch_size": 4, "feather": 4}, size=(300, 150)),
        NodeSpec("save", "SaveImage", (X_SAVE, 0), {"filename_prefix": "splice/material"}, size=(420, 400)),
    ]
    links += [
        ("dino", "dino", "select_a", "dino"),
        ("structure", "IMAGE", "select_a", "image"),
        ("dino", "dino", "select_b", "dino"),
        ("appearance", "IMAGE", "select_b", "image"),
        ("select_b", "mask", "train", "appearance_mask"),
        ("select_a", "mask", "mask_a", "mask"),
        ("select_b", "mask", "mask_b", "mask"),
        ("mask_a", "IMAGE", "mask_a_preview", "images"),
        ("mask_b", "IMAGE", "mask_b_preview", "images"),
        ("train", "generator", "apply", "generator"),
        ("structure", "IMAGE", "apply", "images"),
        ("select_a", "mask", "apply", "mask"),
        ("apply", "image", "save", "images"),
    ]
    groups = [
        GroupSpec("Inputs", ["structure", "appearance"], "#8A8"),
        GroupSpec("DINO, losses, materials", ["dino", "structure_loss", "appearance_loss", "select_a",
                                              "select_b"], "#88A"),
        GroupSpec("The masks", ["mask_a", "mask_b", "mask_a_preview", "mask_b_preview"], "#a1309b"),
        GroupSpec("Train on B's material, change A's", ["train", "apply", "save"], "#b58b2a"),
    ]
    return WorkflowSpec(
        "splice_material", "Splice - restyle one material",
        "Select by material: click a material in A and one in B (Select Material); train on B's material "
        "only and change every pixel of A's material, the rest of A stays as it is.",
        nodes, links, groups,
        expect_images=["save", "mask_a_preview", "mask_b_preview"])


def all_workflows() -> list[WorkflowSpec]:
    return [basic_workflow(), video_workflow(), diffusion_workflow(controlnet=False),
            diffusion_workflow(controlnet=True), region_workflow(), material_workflow()]


WORKFLOWS = all_workflows()
