"""Typed keys of what the app and its requests carry (the resource modules share them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from dispatcher.delivery.secrets import SecretBox
from dispatcher.settings import Settings

if TYPE_CHECKING:
    from api.schemas import Schemas
    from dispatcher.delivery.http.sender import Sender
    from dispatcher.kafka.producer import Producer

SETTINGS = web.AppKey("settings", Settings)
POOL: web.AppKey[asyncpg.Pool[asyncpg.Record]] = web.AppKey("pool")
SECRET_BOX = web.AppKey("secret_box", SecretBox)
SENDER: web.AppKey[Sender] = web.AppKey("sender")
PRODUCER: web.AppKey[Producer] = web.AppKey("producer")
SCHEMAS: web.AppKey[Schemas] = web.AppKey("schemas")

# Set by the auth middleware on every authenticated request.
TENANT_ID = web.RequestKey("tenant_id", str)
# The id of the API key that authenticated the request (unset on portal pages).
API_KEY_ID = web.RequestKey("api_key_id", str)
