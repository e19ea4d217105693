"""The ClickHouse store: connection by DSN, versioned schema, and the writer that fills it.

Its own package because the stream worker, the API and analysts all depend on it and it depends on
none of them: the schema is a public interface of its own.
"""

from store.client import Store, connect

__all__ = ["Store", "connect"]
