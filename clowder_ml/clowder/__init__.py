"""The Clowder connector: clowder-ml's tasks as Clowder v2 extractors (event listeners).

* :mod:`~clowder_ml.clowder.extractor_info`: the ``extractor_info.json`` each task announces,
  generated from its params model;
* :mod:`~clowder_ml.clowder.messages`: the extraction requests Clowder sends, parsed and
  checked;
* :mod:`~clowder_ml.clowder.listener`: RabbitMQ (queues, heartbeats, statuses, acks);
* :mod:`~clowder_ml.clowder.extraction`: one request carried out (import, submit, watch,
  write back), safe to redeliver;
* :mod:`~clowder_ml.clowder.importer`, :mod:`~clowder_ml.clowder.rest`,
  :mod:`~clowder_ml.clowder.export`: Clowder data in, results and model versions out.

See docs/clowder.md.
"""
