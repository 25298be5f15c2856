"""A real ComfyUI to test against: comfy_server (a ComfyUI process of our own, on the embedded
or the user's ComfyUI from tools.provision), comfy_client (its HTTP + websocket client) and
comfy_page (its web app in headless Chromium). Used by tests/host, tests/browser and
tools.assets; imports only tools.provision."""
