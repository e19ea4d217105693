"""The ClickHouse store: connection by DSN (:mod:`store.client`), versioned schema (:mod:`store.schema`), the
writer that fills it (:mod:`store.writer`, rows checked by :mod:`store.validate`), analysts' queries
(:mod:`store.cookbook`, :mod:`store.readonly`) and its settings (:mod:`store.settings`). See docs/store.md.

Its own package because the stream worker, the API and analysts all depend on it and it depends on
none of them: the schema is a public interface of its own.
"""

from store.client import Store, connect

__all__ = ["Store", "connect"]
