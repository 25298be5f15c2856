"""Tooling around the pack (not the pack, not tests): provisioning the embedded ComfyUI and
`make run` (provision), a ComfyUI server process (comfy_server) and its HTTP/websocket client
(comfy_client), the page driver (comfy_page), and the builders of the shipped workflows and
example inputs. Run from the repository root: ``python -m tools.<module>``."""
