"""``python -m clowder_ml.cli``: the same as ``clowder-ml``."""

from clowder_ml.cli.app import main

main()
