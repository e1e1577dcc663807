"""An ASGI service embedding the reference flow (Starlette, served by uvicorn).

`python -m examples.service` (or `make service`) starts it; see docs/service.md.
"""

from examples.service.app import create_app
from examples.service.lag import LoopLag

__all__ = ["LoopLag", "create_app"]
