"""The ``clowder-ml`` command line (Typer + Rich).

Server side: ``serve``, ``demo``. Client side (talks to ``CLOWDER_ML_URL`` with
``CLOWDER_ML_TOKEN`` or the saved login): ``login``, ``upload``, ``datasets ...``,
``tokens ...``, ``users ...``, ``jobs ...``, ``models ...``, ``tasks``, and ``sandbox ...``
(local). Errors print the server's message and hint, never a traceback.

Layout (imports point down only, so there are no circles):

- :mod:`~clowder_ml.cli.app`: the root app; registers every group below; :func:`main`.
- :mod:`~clowder_ml.cli.server`: ``serve``, ``demo``.
- :mod:`~clowder_ml.cli.accounts`: ``login``, ``tokens ...``, ``users ...``.
- :mod:`~clowder_ml.cli.datasets`: ``upload``, ``datasets ...``.
- :mod:`~clowder_ml.cli.jobs`: ``jobs ...``.
- :mod:`~clowder_ml.cli.models`: ``models ...``, ``tasks``.
- :mod:`~clowder_ml.cli.sandbox`: ``sandbox ...``.
- :mod:`~clowder_ml.cli.clowder`: ``clowder ...`` (tasks as Clowder extractors).
- :mod:`~clowder_ml.cli.common`: what they share (consoles, client, errors, JSON, sizes).
"""

from __future__ import annotations

from clowder_ml.cli.app import app, main

__all__ = ["app", "main"]
