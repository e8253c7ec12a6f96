"""The provider registry: which adapter serves which channel (an explicit map, kombu-style).

Adapters are built lazily from settings, once per process.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from shared.providers.base import Provider
from shared.settings import get_settings

PROVIDER_FOR_CHANNEL: dict[str, str] = {
    "viber": "messaggio", "sms": "messaggio", "rogerthat": "rogerthat",
    "inapp": "contactatonce"}
_ADAPTERS: dict[str, str] = {
    "messaggio": "shared.providers.messaggio:MessaggioGateway",
    "rogerthat": "shared.providers.rogerthat:RogerthatService",
    "contactatonce": "shared.providers.contactatonce:ContactAtOnceService",
}


# Operations only one provider offers, and the channel it serves them on: the worker asks for
# the operation, never for the provider by name.
CHANNEL_FOR_OPERATION: dict[str, str] = {
    "seal": "rogerthat", "friendships": "rogerthat", "native_flows": "rogerthat"}


def channel_for(operation: str) -> str:
    """The channel whose provider offers ``operation`` (e.g. ``friendships``)."""
    return CHANNEL_FOR_OPERATION[operation]


def provider_for(operation: str) -> Provider:
    """The adapter that offers ``operation``."""
    return get_provider(provider_name(channel_for(operation)))


def provider_name(channel: str) -> str:
    try:
        return PROVIDER_FOR_CHANNEL[channel]
    except KeyError:
        raise LookupError(f"no provider serves channel {channel!r}") from None


@cache
def get_provider(name: str) -> Provider:
    module_name, _, class_name = _ADAPTERS[name].partition(":")
    adapter = getattr(import_module(module_name), class_name)
    return adapter.from_settings(get_settings())
