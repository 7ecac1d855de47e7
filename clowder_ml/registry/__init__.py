"""The model registry: versions, references, aliases and the best rule (``models``), lineage
(``lineage``), files in and out (``artifacts``), reproduce runs and their verdicts
(``reproduction``), and the publish step that turns a finished job's outputs into entries
(``publish``). Same layer as ``services``; routers call it directly."""
