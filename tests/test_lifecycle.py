"""The campaign state machine, over every (action, status) pair."""

from __future__ import annotations

import pytest

from engine.core.lifecycle import (
    ALL_ACTIONS,
    ALL_STATUSES,
    FINAL_STATUSES,
    CampaignAction,
    CampaignStatus,
    TransitionRefused,
    allowed_from,
    check,
    editable_fields,
    is_final,
)

RUNNING_PAUSE_HINT = "only a scheduled or running campaign can be paused"

# (action, status) -> resulting status, or (code, message) of the refusal.
TABLE: dict[tuple[str, str], str | tuple[str, str]] = {
    ("start", "draft"): "scheduled",
    ("start", "scheduled"): "scheduled",
    ("start", "running"): ("campaign_already_running", "Campaign is already running"),
    ("start", "paused"): ("campaign_paused", "Campaign is paused; resume it to continue sending"),
    ("start", "completed"): ("campaign_finished", "Campaign is already completed"),
    ("start", "failed"): ("campaign_finished", "Campaign is already failed"),
    ("start", "cancelled"): ("campaign_finished", "Campaign is already cancelled"),
    ("pause", "draft"): (
        "campaign_not_running",
        f"Campaign is not running (it is draft); {RUNNING_PAUSE_HINT}",
    ),
    ("pause", "scheduled"): "paused",
    ("pause", "running"): "paused",
    ("pause", "paused"): ("campaign_already_paused", "Campaign is already paused"),
    ("pause", "completed"): (
        "campaign_not_running",
        f"Campaign is not running (it is completed); {RUNNING_PAUSE_HINT}",
    ),
    ("pause", "failed"): (
        "campaign_not_running",
        f"Campaign is not running (it is failed); {RUNNING_PAUSE_HINT}",
    ),
    ("pause", "cancelled"): (
        "campaign_not_running",
        f"Campaign is not running (it is cancelled); {RUNNING_PAUSE_HINT}",
    ),
    ("resume", "draft"): ("campaign_not_paused", "Campaign is not paused"),
    ("resume", "scheduled"): ("campaign_not_paused", "Campaign is not paused"),
    ("resume", "running"): ("campaign_not_paused", "Campaign is not paused"),
    ("resume", "paused"): "scheduled",
    ("resume", "completed"): ("campaign_not_paused", "Campaign is not paused"),
    ("resume", "failed"): ("campaign_not_paused", "Campaign is not paused"),
    ("resume", "cancelled"): ("campaign_not_paused", "Campaign is not paused"),
    ("cancel", "draft"): "cancelled",
    ("cancel", "scheduled"): "cancelled",
    ("cancel", "running"): "cancelled",
    ("cancel", "paused"): "cancelled",
    ("cancel", "completed"): ("campaign_finished", "Campaign is already completed"),
    ("cancel", "failed"): ("campaign_finished", "Campaign is already failed"),
    ("cancel", "cancelled"): ("campaign_finished", "Campaign is already cancelled"),
    ("edit", "draft"): "draft",
    ("edit", "scheduled"): "scheduled",
    ("edit", "running"): "running",
    ("edit", "paused"): "paused",
    ("edit", "completed"): ("campaign_finished", "Campaign is already completed"),
    ("edit", "failed"): ("campaign_finished", "Campaign is already failed"),
    ("edit", "cancelled"): ("campaign_finished", "Campaign is already cancelled"),
    ("delete", "draft"): "draft",
    ("delete", "scheduled"): "scheduled",
    ("delete", "running"): (
        "campaign_running",
        "Campaign is running; pause or cancel it before deleting it",
    ),
    ("delete", "paused"): "paused",
    ("delete", "completed"): "completed",
    ("delete", "failed"): "failed",
    ("delete", "cancelled"): "cancelled",
}


def test_table_covers_every_pair() -> None:
    assert set(TABLE) == {(action, status) for action in ALL_ACTIONS for status in ALL_STATUSES}
    assert len(ALL_ACTIONS) == 6
    assert len(ALL_STATUSES) == 7


@pytest.mark.parametrize(("action", "status"), TABLE.keys())
def test_check(action: CampaignAction, status: CampaignStatus) -> None:
    expected = TABLE[(action, status)]
    if isinstance(expected, str):
        assert check(action, status) == expected
        assert status in allowed_from(action)
    else:
        with pytest.raises(TransitionRefused) as refused:
            check(action, status)
        assert (refused.value.code, refused.value.message) == expected
        assert str(refused.value) == refused.value.message
        assert status not in allowed_from(action)


def test_final_statuses() -> None:
    assert FINAL_STATUSES == ("completed", "failed", "cancelled")
    assert [status for status in ALL_STATUSES if is_final(status)] == list(FINAL_STATUSES)


def test_nothing_leaves_a_final_status_but_delete() -> None:
    for action in ALL_ACTIONS:
        for status in FINAL_STATUSES:
            if action != "delete":
                assert status not in allowed_from(action)


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        ("draft", None),
        ("scheduled", None),
        ("paused", None),
        ("running", frozenset({"throttleConfig"})),
        ("completed", frozenset()),
        ("failed", frozenset()),
        ("cancelled", frozenset()),
    ],
)
def test_editable_fields(status: CampaignStatus, fields: frozenset[str] | None) -> None:
    assert editable_fields(status) == fields
    # Whatever accepts an edit at all accepts one through check().
    assert (fields != frozenset()) == (status in allowed_from("edit"))


def test_unknown_names_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="action"):
        check("duplicate", "draft")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        check("start", "archived")  # type: ignore[arg-type]
