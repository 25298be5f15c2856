"""Build the shipped workflows IN the real ComfyUI page and save them with the app's own Export.

    python tests/browser/build_workflows.py            # rewrite workflows/*.json, *.jpg, screenshots/
    python tests/browser/build_workflows.py --check    # exit 1 if a rebuilt workflow differs

Why in the page: a workflow file is only "saved the way ComfyUI saves it" if ComfyUI saved it.
This script starts a real ComfyUI (tests/host/comfy_client.py, with this pack installed), opens
its web app in Chromium, creates every node with ``LiteGraph.createNode``, connects them with
``node.connect``, sets widget values by widget *name* (so the positional ``widgets_values``,
including the hidden ``control_after_generate`` after each seed, come from the frontend), and
downloads the file with the ``Comfy.ExportWorkflow`` command, byte for byte.

One thing the bare frontend does not write is added here the way ComfyUI-Manager's
"workflow metadata" extension adds it when a node is created: ``cnr_id`` and ``ver`` in each
node's properties (``comfy-core`` + the ComfyUI version for core nodes; this pack's registry id
and version from pyproject.toml for ours), so the Manager can offer to install a missing pack.
Loader nodes also get ``properties.models`` ({name, url, directory}), the frontend's format for
offering a missing model's download.

The workflows are described below as data (``WORKFLOWS``); the browser tests read the same
descriptions for names and for which nodes to run.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import sys
import tempfile
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
for _path in (HERE, REPO_ROOT / "tests" / "host"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import comfy_page  # noqa: E402
import make_examples  # noqa: E402

log = logging.getLogger("build_workflows")

WORKFLOWS_DIR = REPO_ROOT / "workflows"
SCREENSHOTS_DIR = WORKFLOWS_DIR / "screenshots"
THUMBNAIL_SIZE = (640, 400)

# The DINO weights every Splice workflow loads (the paper's ViT-B/8, the Hugging Face hub's
# safetensors), where ComfyUI's missing-models dialog should point: a .safetensors URL on
# huggingface.co in a registered folder, so the dialog offers its download.
DINO_MODEL = {
    "name": "vit_base_patch8_224.dino.safetensors",
    "url": "https://huggingface.co/timm/vit_base_patch8_224.dino/resolve/main/model.safetensors",
    "directory": "splice_dino",
}
# The official .pth spelling, which the video workflow still ships; switch it to DINO_MODEL (and
# SPLICE_NOTE) when that workflow is next rebuilt.
DINO_MODEL_PTH = {
    "name": "dino_vitbase8_pretrain.pth",
    "url": "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
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
# (output/splice/village_winter_00001_.safetensors); the user moves it to models/splice_generators.
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
    name: str
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
        return WORKFLOWS_DIR / f"{self.name}.json"

    @property
    def thumbnail_path(self) -> Path:
        return WORKFLOWS_DIR / f"{self.name}.jpg"


# ------------------------------------------------------------------------------------------
# The graphs. Node keys are local names; ComfyUI numbers nodes in creation order, so the ids
# in the files follow the order of `nodes` (1, 2, ...).

TRAIN_WIDGETS = {"steps": 2000, "learning_rate": 0.002, "seed": 0, "control_after_generate": "fixed",
                 "identity_weight": 1.0, "full_image_every": 75, "preview_every": 50, "dtype": "auto"}

NOTE_COLOR, NOTE_BG = "#432", "#653"

SPLICE_NOTE = """## Splice: semantic appearance transfer

Trains a small generator on **one pair**: the output keeps the layout of the *structure* image and
takes the look of the *appearance* image (Tumanyan et al., CVPR 2022).

**Weights:** *Load DINO-ViT* uses `vit_base_patch8_224.dino.safetensors` (ViT-B/8, ~350 MB, from
Hugging Face `timm/vit_base_patch8_224.dino`) in `ComfyUI/models/splice_dino/`. If ComfyUI says
it is missing, press *Download* in that dialog, or switch on *download_if_missing* on the node.
The official `dino_vitbase8_pretrain.pth` works too.

**Inputs:** the example images are copied into `ComfyUI/input/` when the pack loads; load your
own to change the pair.

2000 steps (the paper) take ~10 s on a recent GPU; on a CPU try 200 first. The seed is fixed, so
queueing again with the same inputs reuses the trained generator instead of training again."""


SPLICE_NOTE_PTH = """## Splice: semantic appearance transfer

Trains a small generator on **one pair**: the output keeps the layout of the *structure* image and
takes the look of the *appearance* image (Tumanyan et al., CVPR 2022).

**Weights:** put `dino_vitbase8_pretrain.pth` (ViT-B/8, 330 MB,
https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth)
in `ComfyUI/models/splice_dino/`, or switch on *download_if_missing*.

**Inputs:** copy the example images from this pack's `workflows/input/` into `ComfyUI/input/`,
or load your own.

2000 steps (the paper) take ~10 s on a recent GPU; on a CPU try 200 first."""


# Layout: columns and rows in canvas units (node pos is the body's top-left; titles sit above).
X_NOTE, X_INPUT, X_DINO, X_TRAIN, X_APPLY, X_SAVE = 0, 400, 780, 1160, 1540, 1900
Y_LOWER = 1000  # second band (video / diffusion), below the inputs


def _splice_core(dino_model: dict[str, str] = DINO_MODEL) -> tuple[list[NodeSpec], list[tuple[str, str, str, str]]]:
    """Inputs, DINO-ViT, both losses and Train Generator (shared by every workflow)."""
    nodes = [
        NodeSpec("structure", "LoadImage", (X_INPUT, 0), {"image": make_examples.STRUCTURE},
                 title="Structure image (layout to keep)", size=(320, 380)),
        NodeSpec("appearance", "LoadImage", (X_INPUT, 460), {"image": make_examples.APPEARANCE},
                 title="Appearance image (look to transfer)", size=(320, 380)),
        NodeSpec("dino", "SpliceLoadDINO", (X_DINO, 0),
                 {"model_name": dino_model["name"], "download_if_missing": False},
                 size=(320, 82), models=[dino_model]),
        NodeSpec("structure_loss", "SpliceStructureLoss", (X_DINO, 140), {"weight": 1.0, "block": -1},
                 size=(320, 82)),
        NodeSpec("appearance_loss", "SpliceAppearanceLoss", (X_DINO, 280), {"weight": 10.0, "block": -1},
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


def _note(text: str, height: float) -> NodeSpec:
    return NodeSpec("note", "MarkdownNote", (X_NOTE, 0), {"text": text}, title="Read me", size=(340, height),
                    color=NOTE_COLOR, bgcolor=NOTE_BG)


def basic_workflow() -> WorkflowSpec:
    nodes, links = _splice_core()
    nodes = [_note(SPLICE_NOTE + """

**This graph:** *Train Generator* learns the pair, *Splice Output* applies the trained generator
to the structure image, *Plot Loss Graph* draws the loss curve, and *Visualize Structure* shows
what the structure loss compares (the main components of DINO's key self-similarity).""", 540)] + nodes + [
        NodeSpec("apply", "SpliceApply", (X_APPLY, 0), {"batch_size": 4}, size=(300, 102)),
        NodeSpec("save", "SaveImage", (X_SAVE, 0), {"filename_prefix": "splice/result"}, size=(420, 400)),
        NodeSpec("loss_plot", "LossGraphNode", (X_APPLY, 180), {"filename_prefix": "splice/loss"},
                 size=(300, 300)),
        NodeSpec("visualize", "SpliceVisualizeStructure", (X_DINO, 520), {"block": -1}, size=(320, 82)),
        NodeSpec("visualize_preview", "PreviewImage", (X_DINO, 640), {}, title="Structure (self-similarity PCA)",
                 size=(320, 300)),
    ]
    links += [
        ("train", "generator", "apply", "generator"),
        ("structure", "IMAGE", "apply", "images"),
        ("apply", "image", "save", "images"),
        ("train", "loss_history", "loss_plot", "loss"),
        ("dino", "dino", "visualize", "dino"),
        ("structure", "IMAGE", "visualize", "image"),
        ("visualize", "visualization", "visualize_preview", "images"),
    ]
    groups = [
        GroupSpec("Inputs", ["structure", "appearance"], "#8A8"),
        GroupSpec("DINO-ViT and losses", ["dino", "structure_loss", "appearance_loss"], "#88A"),
        GroupSpec("What the structure loss sees", ["visualize", "visualize_preview"], "#a1309b"),
        GroupSpec("Train and apply", ["train", "apply", "save", "loss_plot"], "#b58b2a"),
    ]
    return WorkflowSpec(
        "splice_basic",
        "Splice: train a generator on one structure/appearance pair, save the result, plot the loss "
        "and visualise the structure DINO sees.",
        nodes, links, groups,
        expect_images=["save", "loss_plot", "visualize_preview"])


def video_workflow() -> WorkflowSpec:
    nodes, links = _splice_core(DINO_MODEL_PTH)
    y = Y_LOWER
    nodes = [_note(SPLICE_NOTE_PTH + f"""

**This graph: train once, apply to many.**
1. Run it as it is: group 1 trains on the pair and *Save Splice Generator* writes
   `output/splice/village_winter_00001_.safetensors`.
2. Move that file to `ComfyUI/models/splice_generators/` (press *r* to refresh the lists).
3. Group 2 is muted: right-click it, *Set Group Nodes to Always*. It loads the generator and
   applies it to every frame of a video (`{make_examples.VIDEO}` from `workflows/input/`),
   saving the frames and an MP4. Mute group 1 to skip training on later runs.

Applying a trained generator costs one forward pass per frame.""", 640)] + nodes + [
        NodeSpec("save_generator", "SpliceSaveGenerator", (X_APPLY, 0), {"filename_prefix": "splice/village_winter"},
                 size=(320, 82)),
        NodeSpec("train_preview", "PreviewImage", (X_APPLY, 160), {}, title="Result on the structure image",
                 size=(320, 300)),
        NodeSpec("load_video", "LoadVideo", (X_INPUT, y), {"file": make_examples.VIDEO}, title="Video frames",
                 size=(320, 380), mode=MODE_NEVER),
        NodeSpec("components", "GetVideoComponents", (X_DINO, y), {}, size=(320, 86), mode=MODE_NEVER),
        NodeSpec("load_generator", "SpliceLoadGenerator", (X_DINO, y + 150), {"generator_name": GENERATOR_FILE},
                 size=(320, 58), mode=MODE_NEVER),
        NodeSpec("apply", "SpliceApply", (X_TRAIN, y), {"batch_size": 4}, size=(320, 102), mode=MODE_NEVER),
        NodeSpec("create_video", "CreateVideo", (X_TRAIN, y + 160), {"fps": 8.0}, size=(320, 78),
                 mode=MODE_NEVER),
        NodeSpec("save_frames", "SaveImage", (X_APPLY, y), {"filename_prefix": "splice/frames"},
                 title="Translated frames", size=(420, 380), mode=MODE_NEVER),
        NodeSpec("save_video", "SaveVideo", (X_TRAIN, y + 290),
                 {"filename_prefix": "splice/video", "format": "auto", "codec": "auto"},
                 size=(320, 420), mode=MODE_NEVER),
    ]
    links += [
        ("train", "generator", "save_generator", "generator"),
        ("train", "result", "train_preview", "images"),
        ("load_video", "VIDEO", "components", "video"),
        ("load_generator", "generator", "apply", "generator"),
        ("components", "images", "apply", "images"),
        ("apply", "image", "save_frames", "images"),
        ("apply", "image", "create_video", "images"),
        ("components", "fps", "create_video", "fps"),
        ("create_video", "VIDEO", "save_video", "video"),
    ]
    group2 = ["load_video", "components", "load_generator", "apply", "create_video", "save_frames", "save_video"]
    groups = [
        GroupSpec("1. Train once and save the generator",
                  ["structure", "appearance", "dino", "structure_loss", "appearance_loss", "train",
                   "save_generator", "train_preview"], "#b58b2a"),
        GroupSpec("2. Apply the saved generator to every frame (muted: see the note)", group2, "#3f789e"),
    ]
    return WorkflowSpec(
        "splice_train_once_apply_to_video",
        "Train a Splice generator once and save it; load it and apply it to every frame of a video.",
        nodes, links, groups,
        expect_images=["train_preview", "save_frames"], unmute_for_test=group2)


DIFFUSION_PROMPT = ("a snowy village at night, a cosy cottage with warm light in the windows, snow on the "
                    "roof and the hills, pine tree, starry sky, detailed illustration")
NEGATIVE_PROMPT = "blurry, low quality, watermark, text"


def _diffusion_tail(controlnet: bool) -> tuple[list[NodeSpec], list[tuple[str, str, str, str]]]:
    """Splice Output -> VAE Encode -> KSampler -> VAE Decode -> SaveImage (SD 1.5 checkpoint)."""
    y = Y_LOWER
    nodes = [
        NodeSpec("apply", "SpliceApply", (X_APPLY, 0), {"batch_size": 4}, size=(300, 102)),
        NodeSpec("splice_preview", "PreviewImage", (X_SAVE, 0), {}, title="Splice output (before diffusion)",
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
        ("train", "generator", "apply", "generator"),
        ("structure", "IMAGE", "apply", "images"),
        ("apply", "image", "splice_preview", "images"),
        ("checkpoint", "CLIP", "positive", "clip"),
        ("checkpoint", "CLIP", "negative", "clip"),
        ("apply", "image", "encode", "pixels"),
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
            ("apply", "image", "apply_controlnet", "image"),
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
        how = """**This graph: Splice, then diffusion guided by a Tile ControlNet.** The Splice output is
both the img2img start (denoise 0.75) and the control image of the SD 1.5 *tile* ControlNet
(`control_v11f1e_sd15_tile_fp16.safetensors` in `models/controlnet/`), which holds the layout
and colours while the sampler adds detail. Lower *strength* or raise *denoise* for more freedom."""
    else:
        how = """**This graph: Splice, then img2img.** The Splice output is encoded with the checkpoint's
VAE and re-sampled at denoise 0.5: Splice decides the layout and colours, diffusion adds detail
and texture. Pick any SD 1.5 checkpoint in *Load Checkpoint* (the default is
`v1-5-pruned-emaonly-fp16.safetensors`); raise denoise for more change."""
    nodes = [_note(SPLICE_NOTE + "\n\n" + how, 640)] + core + tail
    splice_members = ["structure", "appearance", "dino", "structure_loss", "appearance_loss", "train", "apply",
                      "splice_preview"]
    diffusion_members = ["checkpoint", "positive", "negative", "encode", "sampler", "decode", "save"]
    if controlnet:
        diffusion_members += ["controlnet", "apply_controlnet"]
    groups = [GroupSpec("Splice", splice_members, "#b58b2a"),
              GroupSpec("Diffusion (SD 1.5" + (", Tile ControlNet)" if controlnet else " img2img)"),
                        diffusion_members, "#3f789e")]
    return WorkflowSpec(
        "splice_then_controlnet_tile" if controlnet else "splice_then_img2img",
        ("Splice, then SD 1.5 img2img guided by a Tile ControlNet fed with the Splice output."
         if controlnet else "Splice, then SD 1.5 img2img at denoise 0.5 on the Splice output."),
        nodes, core_links + tail_links, groups, needs_checkpoint=True,
        expect_images=["splice_preview"])


def all_workflows() -> list[WorkflowSpec]:
    return [basic_workflow(), video_workflow(), diffusion_workflow(controlnet=False),
            diffusion_workflow(controlnet=True)]


WORKFLOWS = all_workflows()


# ------------------------------------------------------------------------------------------
# Building in the page

BUILD_JS = """async (spec) => {
  const app = window.app, LiteGraph = window.LiteGraph;
  app.graph.clear();
  app.graph.id = spec.graph_id;  // clear() leaves the all-zero id; a saved workflow has its own
  const byKey = {};
  for (const n of spec.nodes) {
    const node = LiteGraph.createNode(n.type);
    if (!node) throw new Error('unknown node type ' + n.type);
    if (n.title) node.title = n.title;
    app.graph.add(node);
    node.pos = [n.pos[0], n.pos[1]];
    for (const [name, value] of Object.entries(n.widgets)) {
      const widget = (node.widgets || []).find((w) => w.name === name);
      if (!widget) throw new Error(n.type + ' has no widget ' + name);
      widget.value = value;
    }
    // What ComfyUI-Manager's workflow-metadata extension writes on node creation.
    const module = node.constructor.nodeData && node.constructor.nodeData.python_module;
    const props = {};
    if (module && !node.isVirtualNode) {
      const parts = module.split('.');
      if (parts[0] === 'custom_nodes') {
        if (parts[1] !== spec.pack.folder) throw new Error('node from another pack: ' + module);
        props.cnr_id = spec.pack.id; props.ver = spec.pack.version;
      } else if (parts[0] === 'nodes' || parts[0] === 'comfy_extras') {
        props.cnr_id = 'comfy-core'; props.ver = spec.comfyui_version;
      }
    }
    node.properties = Object.assign(props, node.properties || {});
    if (n.models) node.properties.models = n.models;
    if (n.color) node.color = n.color;
    if (n.bgcolor) node.bgcolor = n.bgcolor;
    node.mode = n.mode;
    const min = node.computeSize();
    node.setSize(n.size ? [Math.max(n.size[0], min[0]), Math.max(n.size[1], min[1])] : min);
    byKey[n.key] = node;
  }
  for (const [from, output, to, input] of spec.links) {
    const src = byKey[from], dst = byKey[to];
    const out = src.findOutputSlot(output), inp = dst.findInputSlot(input);
    if (out < 0 || inp < 0) throw new Error(`no slot ${from}.${output} -> ${to}.${input}`);
    if (!src.connect(out, dst, inp)) throw new Error(`connect failed ${from}.${output} -> ${to}.${input}`);
  }
  const pad = 10, header = 46;
  for (const g of spec.groups) {
    const members = g.members.map((k) => byKey[k]);
    const x0 = Math.min(...members.map((n) => n.pos[0])) - pad;
    const y0 = Math.min(...members.map((n) => n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT)) - header;
    const x1 = Math.max(...members.map((n) => n.pos[0] + n.size[0])) + pad;
    const y1 = Math.max(...members.map((n) => n.pos[1] + n.size[1])) + pad;
    const group = new LiteGraph.LGraphGroup(g.title);
    group.color = g.color;
    app.graph.add(group);
    group.pos = [x0, y0];
    group.size = [x1 - x0, y1 - y0];
  }
  app.graph.setDirtyCanvas(true, true);
  return spec.nodes.map((n) => byKey[n.key].id);
}"""


def pack_identity() -> dict[str, str]:
    """Registry id and version from pyproject.toml, and the folder ComfyUI loads the pack from."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {"id": project["name"], "version": project["version"], "folder": "comfy-splice"}


def spec_payload(spec: WorkflowSpec, comfyui_version: str) -> dict[str, Any]:
    return {
        "nodes": [vars(n) for n in spec.nodes],
        "links": spec.links,
        "groups": [vars(g) for g in spec.groups],
        "pack": pack_identity(),
        "comfyui_version": comfyui_version,
        # Stable per workflow, so rebuilding gives the same file.
        "graph_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://registry.comfy.org/comfy-splice/{spec.name}")),
    }


def build_in_page(page: comfy_page.ComfyPage, spec: WorkflowSpec, comfyui_version: str) -> str:
    """Create the graph in the page and return the text of the app's own export."""
    page.close_dialogs()
    ids = page.evaluate(BUILD_JS, spec_payload(spec, comfyui_version))
    expected = [spec.node_id(n.key) for n in spec.nodes]
    if ids != expected:
        raise RuntimeError(f"{spec.name}: the page numbered the nodes {ids}, expected {expected}")
    page.frame_graph(margin=40)  # saved as the view the file opens with (extra.ds)
    text = page.export_workflow()
    return text if text.endswith("\n") else text + "\n"


def thumbnail(screenshot_png: bytes, size: tuple[int, int] = THUMBNAIL_SIZE) -> bytes:
    """The template browser's card image: the loaded graph, cropped to the card's aspect."""
    with Image.open(io.BytesIO(screenshot_png)) as shot:
        img = shot.convert("RGB")
    target_ratio = size[0] / size[1]
    w, h = img.size
    if w / h > target_ratio:
        new_w = int(h * target_ratio)
        img = img.crop(((w - new_w) // 2, 0, (w - new_w) // 2 + new_w, h))
    else:
        new_h = int(w / target_ratio)
        img = img.crop((0, (h - new_h) // 2, w, (h - new_h) // 2 + new_h))
    img = img.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()


def graph_screenshot(page: comfy_page.ComfyPage, workflow: dict[str, Any], path: Path) -> bytes:
    """Load a workflow, fit it and screenshot the canvas without the app's side bars."""
    page.load_workflow(workflow)
    page.close_dialogs()
    # Focus mode hides the side and top bars; the build server is a throw-away one, so its
    # canvas menu setting can go too. The focus-mode "show menu" button is hidden by a style.
    page.evaluate("""async () => {
        window.app.extensionManager.focusMode = true;
        await window.app.extensionManager.setting.set('Comfy.Graph.CanvasMenu', false);
        if (!document.getElementById('splice-docs-style')) {
          const style = document.createElement('style');
          style.id = 'splice-docs-style';
          style.textContent = '.comfy-menu-hamburger { visibility: hidden !important; }';
          document.head.appendChild(style);
        }
    }""")
    try:
        page.screenshot(path, clip=page.frame_graph())
    finally:
        page.evaluate("() => { window.app.extensionManager.focusMode = false; }")
    return path.read_bytes()


def compress_png(path: Path, colors: int = 256) -> None:
    """Quantise a UI screenshot (flat colours) so the docs copy stays small."""
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, format="PNG", optimize=True)


def start_server(workdir: Path) -> Any:
    """A real ComfyUI with this pack and the example inputs in its input folder."""
    from comfy_client import ComfyServer

    server = ComfyServer(workdir)
    server.start()
    make_examples.write_all(server.input_dir)
    comfy_page.apply_ui_settings(server.url)
    return server


def build_all(check: bool = False, screenshots: bool = True) -> list[str]:
    """Build every workflow; write them (or compare them, with check=True). Returns problems."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="splice-build-") as tmp:
        server = start_server(Path(tmp))
        try:
            version = server.system_stats()["system"]["comfyui_version"]
            with comfy_page.Session() as session:
                assert session.browser is not None
                context = comfy_page.new_context(session.browser)
                page = comfy_page.open_app(context, server.url, ("SpliceTrainGenerator",))
                for spec in WORKFLOWS:
                    text = build_in_page(page, spec, version)
                    if check:
                        old = spec.json_path.read_text() if spec.json_path.is_file() else ""
                        if old != text:
                            problems.append(f"{spec.json_path.name} differs from a fresh build")
                        continue
                    spec.json_path.write_text(text)
                    log.info("wrote %s", spec.json_path)
                    shot = graph_screenshot(page, json.loads(text), Path(tmp) / f"{spec.name}.png")
                    spec.thumbnail_path.write_bytes(thumbnail(shot))
                    log.info("wrote %s", spec.thumbnail_path)
                    if screenshots:
                        SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
                        target = SCREENSHOTS_DIR / f"{spec.name}.png"
                        shutil.copy(Path(tmp) / f"{spec.name}.png", target)
                        compress_png(target)
                        log.info("wrote %s", target)
                context.close()
        finally:
            server.stop()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead")
    parser.add_argument("--no-screenshots", action="store_true", help="skip workflows/screenshots/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problems = build_all(check=args.check, screenshots=not args.no_screenshots)
    for problem in problems:
        log.error(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
