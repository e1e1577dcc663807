"""Tests of the example ASGI service (examples/service), over HTTP against a real uvicorn."""
