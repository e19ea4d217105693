"""What routes declare they need: the store, the settings, the clock. Held on ``app.state`` by
:func:`api.app.create_app`; tests replace any of them with ``app.dependency_overrides``, but the API's
settings on ``app.state`` (:mod:`api.guard` reads them before a route's dependencies are solved)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from api.settings import ApiSettings
from core.settings import Settings
from store import Store


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_api_settings(request: Request) -> ApiSettings:
    return request.app.state.api_settings


def get_now() -> float:
    """Now, unix seconds."""
    return time.time()


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ApiSettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
NowDep = Annotated[float, Depends(get_now)]
