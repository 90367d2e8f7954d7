"""The campaign actor: one per running campaign (see `actor.py`)."""

from engine.actors.campaign.actor import CampaignActorStatistics, CampaignHandle, run

__all__ = ["CampaignActorStatistics", "CampaignHandle", "run"]
