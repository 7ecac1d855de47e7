"""Job engine: job states and specs, the dispatcher that runs jobs on Ray through the Ray Jobs
API, and the port (``engine.port.JobStore``) through which it is handed the jobs."""
