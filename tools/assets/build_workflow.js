// Builds one workflow spec (tools/assets/workflow_specs.py) in the ComfyUI page; called by
// tools/assets/build_workflows.py through page.evaluate, returns the new nodes' ids.
async (spec) => {
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
  // Numbers: frontend 1.58 keeps node ids as strings in the page (it still saves numbers).
  return spec.nodes.map((n) => Number(byKey[n.key].id));
}
