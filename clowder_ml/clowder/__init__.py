"""The Clowder connector: clowder-ml's tasks as Clowder v2 extractors (event listeners).

So far: :mod:`~clowder_ml.clowder.extractor_info`, the ``extractor_info.json`` each task
announces, generated from the task's params model, and :mod:`~clowder_ml.clowder.messages`,
the extraction requests Clowder sends, parsed and checked. The RabbitMQ listener and the
write-back to Clowder are not built yet.
"""
