"""``python -m clowder_ml.runner``: the Ray job's entrypoint."""

import sys

from clowder_ml.runner.main import main

if __name__ == "__main__":
    sys.exit(main())
