"""perdura.history.postgres: the PostgreSQL store for many workers on many machines.

``from history.postgres import PostgresStore``; most programs never import it and open a
store by URL instead (``history.open_store("postgresql://…")``, ``--store``, ``$PERDURA_STORE``).
"""

from ._postgres import DEFAULT_SCHEMA as DEFAULT_SCHEMA
from ._postgres import SCHEMA_VERSION as SCHEMA_VERSION
from ._postgres import PostgresStore as PostgresStore
from ._postgres import redact_url as redact_url

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresStore", "redact_url"]
