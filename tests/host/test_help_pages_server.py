"""The real server serves every node's help page where both frontends look for it.

The frontend (1.32.9 and 1.58.1, NodeHelpService.fetchCustomNodeHelp) takes the pack's folder
name from a node's ``python_module`` ("custom_nodes.<dir>") and fetches
``/extensions/<dir>/docs/<NodeId>/<locale>.md``, then ``/extensions/<dir>/docs/<NodeId>.md``;
1.58.1 rejects a ``text/html`` answer. Relative pictures resolve against ``/extensions/<dir>/docs/``.
"""

from __future__ import annotations

from tools import provision
from tools.harness.comfy_server import ComfyServer
from tools.assets.help_pages import DOCS_DIR, image_refs

CUSTOM_NODES = "custom_nodes."


def _pack_nodes(comfy_server: ComfyServer) -> dict[str, dict]:
    """The pack's nodes as /object_info lists them (by python_module, as the frontend tells them apart)."""
    module = CUSTOM_NODES + provision.PACK_LINK_NAME
    return {name: info for name, info in comfy_server.object_info().items()
            if info.get("python_module") == module}


def _help_dir(python_module: str) -> str:
    """The frontend's rule: the second part of "custom_nodes.<dir>[...]", without any "@version"."""
    assert python_module.startswith(CUSTOM_NODES), python_module
    return python_module.split(".")[1].split("@")[0]


def test_every_node_of_the_pack_has_its_help_page_served(comfy_server: ComfyServer) -> None:
    nodes = _pack_nodes(comfy_server)
    assert nodes and set(nodes) == {page.stem for page in DOCS_DIR.glob("*.md")}, sorted(nodes)
    for node_id, info in nodes.items():
        url = f"{comfy_server.url}/extensions/{_help_dir(info['python_module'])}/docs/{node_id}.md"
        response = comfy_server.http.get(url, timeout=30)
        assert response.status_code == 200, f"{url}: {response.status_code}"
        content_type = response.headers.get("Content-Type", "")
        assert "text/html" not in content_type, f"{url} is served as {content_type}; 1.58.1 would reject it"
        text = response.content.decode("utf-8")
        assert text.splitlines()[0] == f"# {info['display_name']}", url
        assert text == (DOCS_DIR / f"{node_id}.md").read_text(encoding="utf-8")


def test_the_locale_page_falls_back_to_the_node_page(comfy_server: ComfyServer) -> None:
    """No ``<NodeId>/en.md`` is shipped: the first request fails, so the frontend takes the
    fallback page (a stale locale page would shadow it for every English user)."""
    url = f"{comfy_server.url}/extensions/{provision.PACK_LINK_NAME}/docs/SpliceTrainGenerator/en.md"
    assert comfy_server.http.get(url, timeout=30).status_code == 404


def test_pictures_of_the_pages_are_served(comfy_server: ComfyServer) -> None:
    refs = sorted({ref for page in DOCS_DIR.glob("*.md") for ref in image_refs(page.read_text(encoding="utf-8"))})
    assert refs, "no page shows a picture"
    for ref in refs:
        url = f"{comfy_server.url}/extensions/{provision.PACK_LINK_NAME}/docs/{ref}"
        response = comfy_server.http.get(url, timeout=30)
        assert response.status_code == 200, f"{url}: {response.status_code}"
        assert response.headers.get("Content-Type", "").startswith("image/"), (url, response.headers)
        assert response.content == (DOCS_DIR / ref).read_bytes()
