"""Tooling around the pack (not the pack, not tests), in three layers, each importing only the
ones before it:

- ``tools.provision``: the venv, the embedded ComfyUI, Chromium and `make run` (standard library
  only, so it runs before the venv exists);
- ``tools.harness``: a ComfyUI server process of our own, its HTTP/websocket client and the page
  driver (what the host and browser tests run against);
- ``tools.assets``: what the repository ships that is built rather than written (the workflows
  and their example inputs), built with the harness.

Run from the repository root: ``python -m tools.provision``, ``python -m tools.assets.<module>``.
"""
