"""clowder-ml: fine-tune and run models on managed compute from nothing but a dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clowder_ml.errors import ClowderMLError

if TYPE_CHECKING:
    from clowder_ml.client import Client

__all__ = ["Client", "ClowderMLError", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The SDK is imported lazily so that the server does not pay for it (and vice versa).
    if name == "Client":
        from clowder_ml.client import Client

        return Client
    raise AttributeError(name)
