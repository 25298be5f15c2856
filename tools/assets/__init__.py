"""What the repository ships that is generated, with the generators kept beside the data:
workflow_specs (the shipped workflows as data), build_workflows + build_workflow.js (their
builder in the real page, and its page script) and make_examples (the example inputs in
workflows/input/). Run as ``python -m tools.assets.build_workflows`` or
``python -m tools.assets.make_examples``."""
