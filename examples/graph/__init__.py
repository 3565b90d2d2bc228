"""Graph examples: each is a compiled graph that ``perdura worker --app`` can serve.

* :mod:`examples.graph.pipeline` — three steps that fail at random and retry with backoff;
* :mod:`examples.graph.batch` — a long node working through 1,000 items, checkpointing;
* :mod:`examples.graph.coordinator` — one child run per task on a ``workers`` task queue;
* :mod:`examples.graph.approval` — a human approval: the run suspends on ``interrupt()``.
"""
