"""Read the nodes' schemas (from the source, without ComfyUI) and the help pages in web/docs/.

ComfyUI's frontend shows a custom node's help from ``/extensions/<pack dir>/docs/<NodeId>.md``
(after trying ``<NodeId>/<locale>.md``), and ComfyUI serves the pack's WEB_DIRECTORY (web/) at
``/extensions/<pack dir>/``: so a page per node lives in web/docs/. The tests compare each page
with its node's schema, so a page cannot miss an input or keep one the node no longer has.
The schemas are read with ``ast`` from nodes/*.py because nodes/ imports ComfyUI, which the
core tests never load; the reader understands the forms the node modules use: ``io.X.Input("id",
...)`` calls in the ``inputs=[...]`` list of ``io.Schema(...)``, and calls (also starred) of a
module-level function that builds such inputs.

Page layout the tests rely on: the first line is ``# <display name>``; ``## Inputs`` and
``## Outputs`` hold a Markdown table whose first column is each input's/output's name as the
node shows it (bold or code marks allowed), in the node's order; ``## Cost`` says what it costs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NODES_DIR = REPO_ROOT / "nodes"
DOCS_DIR = REPO_ROOT / "web" / "docs"

IMAGE_REF = re.compile(r"!\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@dataclass
class NodeSchema:
    """What a help page must agree with: the node's id, display name, and its slots' names as shown."""

    node_id: str
    display_name: str
    module: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


class SchemaReadError(ValueError):
    """A schema written in a form this reader does not understand (extend ``_slots``)."""


def _constants(module: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments (nodes/names.py holds the display names)."""
    found = {}
    for statement in module.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant) \
                and isinstance(statement.value.value, str):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = statement.value.value
    return found


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _text(node: ast.expr | None, names: dict[str, str], where: str) -> str:
    """A string literal, or ``names.X`` / ``X`` resolved through nodes/names.py."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "names":
        if node.attr in names:
            return names[node.attr]
    raise SchemaReadError(f"{where}: expected a string or names.X, got {ast.unparse(node) if node else None}")


def _slot_calls(node: ast.AST, kind: str) -> list[ast.Call]:
    """Every ``<anything>.<kind>(...)`` call under ``node`` whose first argument is a string, in source order."""
    calls = [c for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
             and c.func.attr == kind and c.args and isinstance(c.args[0], ast.Constant)
             and isinstance(c.args[0].value, str)]
    return sorted(calls, key=lambda c: (c.lineno, c.col_offset))


def _slots(listing: ast.expr | None, kind: str, functions: dict[str, ast.FunctionDef],
           names: dict[str, str], where: str) -> list[str]:
    """The names the node shows for the ``kind`` ("Input"/"Output") slots of a schema list."""
    if listing is None:
        return []
    if not isinstance(listing, ast.List):
        raise SchemaReadError(f"{where}: {kind.lower()}s is not a list literal")
    shown: list[str] = []
    for element in listing.elts:
        item = element.value if isinstance(element, ast.Starred) else element
        if not isinstance(item, ast.Call):
            raise SchemaReadError(f"{where}: cannot read {ast.unparse(element)}")
        # The slot itself, or a wrapper around one (e.g. a helper that marks an input advanced)...
        calls = _slot_calls(item, kind)
        # ...or a helper function (of any node module) that builds the slots.
        if not calls and isinstance(item.func, ast.Name) and item.func.id in functions:
            calls = _slot_calls(functions[item.func.id], kind)
        if not calls:
            raise SchemaReadError(f"{where}: cannot read {ast.unparse(element)} (no {kind} call found)")
        for call in calls:
            display = _keyword(call, "display_name")
            shown.append(_text(display, names, where) if display is not None
                         else ast.literal_eval(call.args[0]))
    return shown


def node_schemas() -> dict[str, NodeSchema]:
    """Every node of nodes/*.py by id, read from the source."""
    names = _constants(ast.parse((NODES_DIR / "names.py").read_text(encoding="utf-8")))
    modules = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(NODES_DIR.glob("*.py"))}
    # Helpers are imported between node modules (e.g. a shared block input): index them all.
    functions = {f.name: f for module in modules.values() for f in module.body if isinstance(f, ast.FunctionDef)}
    schemas: dict[str, NodeSchema] = {}
    for path, module in modules.items():
        for call in ast.walk(module):
            # io.Schema(...) or nodes.api.schema(...) (the wrapper that adds search aliases);
            # the wrapper's own io.Schema(**fields) names no node.
            if not isinstance(call, ast.Call):
                continue
            is_schema = ((isinstance(call.func, ast.Attribute) and call.func.attr == "Schema")
                         or (isinstance(call.func, ast.Name) and call.func.id == "schema"))
            if not (is_schema and _keyword(call, "node_id") is not None):
                continue
            where = f"{path.name}:{call.lineno}"
            node_id = _text(_keyword(call, "node_id"), names, where)
            schemas[node_id] = NodeSchema(
                node_id=node_id,
                display_name=_text(_keyword(call, "display_name"), names, where),
                module=path.name,
                inputs=_slots(_keyword(call, "inputs"), "Input", functions, names, where),
                outputs=_slots(_keyword(call, "outputs"), "Output", functions, names, where))
    return schemas


def page_path(node_id: str) -> Path:
    return DOCS_DIR / f"{node_id}.md"


def sections(text: str) -> dict[str, list[str]]:
    """The page's ``## `` sections (title -> lines); lines before the first are under ""."""
    found: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            found[current] = []
        else:
            found[current].append(line)
    return found


def table_names(lines: list[str]) -> list[str]:
    """The first column of the Markdown table(s) in ``lines``, without the header and rule rows."""
    rows = [line for line in lines if line.lstrip().startswith("|")]
    names = []
    for index, row in enumerate(rows):
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        is_rule = all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells)
        next_is_rule = index + 1 < len(rows) and all(
            re.fullmatch(r":?-{3,}:?", c.strip()) for c in rows[index + 1].strip().strip("|").split("|"))
        if is_rule or next_is_rule:
            continue
        names.append(cells[0].replace("**", "").replace("`", "").strip())
    return names


def image_refs(text: str) -> list[str]:
    """The pictures a page shows (``![alt](file)``), as written."""
    return IMAGE_REF.findall(text)
