"""The one place that imports ComfyUI's node API, and detects what the running core offers.

Every node module imports ``io``, ``ui`` and ``ComfyExtension`` from here. The pack imports
``comfy_api.latest``: 0.3.75's ``comfy_api.v0_0_2`` is only a re-export of ``latest`` (not a
frozen API), and the newest core may not serve it. ``latest`` grew since 0.3.75, so features
that only newer cores have are detected here, once, before they are used:

- ``advanced`` inputs (collapsed under "Advanced inputs" in Nodes 2.0 and the parameters panel of
  newer frontends): a native ``Input(advanced=...)`` attribute on newer cores; on 0.3.75 the same
  key reaches ``/object_info`` through the input's ``extra_dict``. Older frontends ignore it, so
  the input is simply shown.
- ``search_aliases`` (words the newer frontend's node search also matches): a ``Schema`` field on
  newer cores, a TypeError on 0.3.75; :class:`SearchAliases` puts them into ``/object_info``
  on both.
- ``ControlAfterGenerate`` (a seed control that starts at "fixed") is never used: on 0.3.75 it
  does not exist, and frontend 1.32.9 would take its string as the control's *name*. The pack's
  web extension (web/splice.js) sets seed controls to "fixed" instead.
"""

from __future__ import annotations

import sys

import dataclasses
from typing import Any, TypeVar

from comfy_api.latest import ComfyExtension, io, ui

# The menu category every node of the pack sits in (the README's *image/splice*).
CATEGORY = "image/splice"

HAS_SCHEMA_SEARCH_ALIASES = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}
"""True on cores whose ``io.Schema`` takes ``search_aliases`` (newer than 0.3.75)."""

InputT = TypeVar("InputT", bound=io.Input)


def advanced(inp: InputT) -> InputT:
    """Mark ``inp`` as an expert setting: ``"advanced": true`` in ``/object_info`` on every core.

    Only the display changes (newer frontends fold it away in Nodes 2.0); the widget keeps its
    place, so saved workflows' positional ``widgets_values`` still line up, and its value is
    still sent and used."""
    if "advanced" in vars(inp):  # newer cores: a native attribute that as_dict() emits
        inp.advanced = True
    else:  # 0.3.75: Input.as_dict() merges extra_dict into the input's options
        inp.extra_dict["advanced"] = True
    return inp


def schema(*, search_aliases: tuple[str, ...] = (), **fields: Any) -> io.Schema:
    """``io.Schema(**fields)``, with ``search_aliases`` passed only where the core knows the field.

    Use it together with :class:`SearchAliases` (same words in ``SEARCH_ALIASES``), which carries
    them into ``/object_info`` where the core does not."""
    if search_aliases and HAS_SCHEMA_SEARCH_ALIASES:
        fields["search_aliases"] = list(search_aliases)
    return io.Schema(**fields)


class SearchAliases:
    """Mixin for a node class (put it before ``io.ComfyNode``): its ``SEARCH_ALIASES`` appear as
    ``search_aliases`` in ``/object_info`` on 0.3.75 too, where the schema cannot hold them and
    frontend 1.58.1's search still reads them. A core that already fills them is left alone."""

    SEARCH_ALIASES: tuple[str, ...] = ()

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        info: dict[str, Any] = super().GET_NODE_INFO_V1()  # type: ignore[misc]
        if cls.SEARCH_ALIASES and not info.get("search_aliases"):
            info["search_aliases"] = list(cls.SEARCH_ALIASES)
        return info


__all__ = ["CATEGORY", "ComfyExtension", "HAS_SCHEMA_SEARCH_ALIASES", "SearchAliases", "advanced",
           "io", "schema", "ui"]


def prompt_server() -> Any | None:
    """ComfyUI's running PromptServer (its ``server`` module is imported before custom nodes),
    or None outside a server: where the pack's HTTP routes are added."""
    server_module = sys.modules.get("server")
    return getattr(getattr(server_module, "PromptServer", None), "instance", None)
