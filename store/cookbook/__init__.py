"""Analysts' cookbook: one query per ``.sql`` file here, each opening with a ``-- purpose:`` line.

Parameters are ClickHouse's ``{name:Type}``; pass them by name. The same files run on chdb and on a
ClickHouse server, and the tests run each on generated data with known answers.

>>> sorted(recipes())[:2]
['aspect_ratio_histogram', 'blur_brightness_distribution']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from store.client import QueryResult, Store

HERE = Path(__file__).parent
_PARAM = re.compile(r"\{(\w+):([^}]+)\}")


@dataclass(frozen=True)
class Recipe:
    name: str
    purpose: str
    sql: str

    @property
    def parameters(self) -> dict[str, str]:
        """Parameter name -> ClickHouse type."""
        return dict(_PARAM.findall(self.sql))


def recipes() -> dict[str, Recipe]:
    out = {}
    for path in sorted(HERE.glob("*.sql")):
        sql = path.read_text()
        first = sql.splitlines()[0]
        if not first.startswith("-- purpose:"):
            raise ValueError(f"{path.name} must open with a '-- purpose:' line")
        out[path.stem] = Recipe(path.stem, first.removeprefix("-- purpose:").strip(), sql)
    return out


def run(store: Store, name: str, **parameters) -> QueryResult:
    """Run recipe ``name`` with ``parameters`` (all of its ``{name:Type}``, nothing else)."""
    recipe = recipes()[name]
    missing = set(recipe.parameters) - set(parameters)
    extra = set(parameters) - set(recipe.parameters)
    if missing or extra:
        raise TypeError(f"{name} takes {sorted(recipe.parameters)}; missing {sorted(missing)}, extra {sorted(extra)}")
    return store.query_result(recipe.sql, parameters=parameters)
