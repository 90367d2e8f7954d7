"""The engine's public interface: `open_engine` runs it, `Engine` is what callers use.

Callers (the HTTP API, tools, tests) reach accounts, contacts, segments, campaigns
and monitoring through an `Engine`; they get plain values back (dicts as the API
shows them, frozen structs) and the errors of `engine.service.errors`, never the
store's rows or asyncpg's exceptions.
"""

from engine.actors.broadcaster import Broadcaster
from engine.service.accounts import NewAccount
from engine.service.campaigns import CampaignInput, Decide
from engine.service.contacts import ContactInput, UpsertResult
from engine.service.engine import Engine, EngineStatistics, open_engine
from engine.service.monitoring import MonitoringSnapshot
from engine.service.page import Page

__all__ = [
    "Broadcaster",
    "CampaignInput",
    "ContactInput",
    "Decide",
    "Engine",
    "EngineStatistics",
    "MonitoringSnapshot",
    "NewAccount",
    "Page",
    "UpsertResult",
    "open_engine",
]
