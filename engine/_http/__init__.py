"""The HTTP management surface: a JSON API under ``/api/durable`` and the web UI.

Internals of :mod:`engine.server`, which is the public entry point (``create_app`` and
``serve``). Split by concern:

* ``_schemas``: every request and response body as a ``msgspec.Struct``; the OpenAPI
  document is generated from these, so the document and the validation cannot disagree.
* ``_errors``: the error body and the stable error codes; perdura errors mapped by type.
* ``_guard``: the ASGI middleware that checks the Host header, the bearer token and the
  origin of mutating requests, and turns every failure into the JSON error body.
* ``_views``: runs, histories and timelines as the API shows them (pure functions).
* ``_api``: the endpoints, declared once in a table that both routes and documents them.
* ``_openapi``: the OpenAPI 3.1 document built from that table.
* ``static/``: the web UI, plain HTML, CSS and ES modules; nothing to build. ``graph.js``
  lays out and draws a graph run (the built-in ``graph`` extension) as SVG.
"""
