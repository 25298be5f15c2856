"""Host tests: a real ComfyUI server with this pack installed.

The server fixtures (``comfy_server``, ``comfy_server_factory``) live in tests/conftest.py so
that browser tests share the same server; the server and its client are in tools/harness/comfy_server.py
and tools/harness/comfy_client.py. This file adds host-only checks.
"""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def _server_survives_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that crashed the shared server is named as the culprit, not the next test."""
    yield
    if "comfy_server" in request.fixturenames:
        server = request.getfixturevalue("comfy_server")
        if not server.is_running():
            pytest.fail(f"the ComfyUI server died during this test\n{server.log_report()}", pytrace=False)
