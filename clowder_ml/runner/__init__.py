"""What runs inside a Ray job: ``python -m clowder_ml.runner`` (see ``clowder_ml.runner.main``).

``STARTED_AT`` is taken as the first thing the runner does, before its heavier imports: it is
the moment the job reports as "runner started" (and what bench/dispatch.py measures).
"""

import time

STARTED_AT = time.time()
