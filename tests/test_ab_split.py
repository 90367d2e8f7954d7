"""The A/B split: a pure function of (campaign, contact, weights), and PostgreSQL's
materialisation agreeing with it row for row."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import ab_split
from engine.store.campaigns import CampaignInput, create_campaign
from engine.store.database import Database
from engine.store.recipients import HELD_FOR_WINNER
from tests.store_helpers import OWNER, make_account, make_contacts, utc_now

weights_strategy = st.lists(
    st.floats(min_value=0.01, max_value=1000, allow_nan=False), min_size=2, max_size=5
)
ids = st.uuids().map(str)


@given(weights=weights_strategy, campaign=ids, contact=ids)
def test_the_variant_is_a_pure_function(weights: list[float], campaign: str, contact: str) -> None:
    first = ab_split.variant_of(campaign, contact, weights)
    assert first == ab_split.variant_of(campaign, contact, list(weights))
    assert first is not None and 0 <= first < len(weights)


@given(weights=weights_strategy, share=st.floats(min_value=0.01, max_value=0.99))
def test_cut_points_split_in_proportion(weights: list[float], share: float) -> None:
    end = ab_split.sample_cut(share)
    cuts = ab_split.cut_points(weights, end)
    assert cuts[0] == 0 and cuts == sorted(cuts) and cuts[-1] < end
    total = sum(weights)
    bounds = [*cuts, end]
    for i, weight in enumerate(weights):
        size = bounds[i + 1] - bounds[i]
        assert abs(size / end - weight / total) < 1e-9
    assert ab_split.variant_at(end, cuts, end) is None
    assert ab_split.variant_at(end - 1, cuts, end) == len(weights) - 1
    assert ab_split.variant_at(0, cuts, end) == 0


@settings(max_examples=20, deadline=None)
@given(weights=weights_strategy, campaign=ids)
def test_shares_converge_to_the_weights(weights: list[float], campaign: str) -> None:
    n = 4000
    counts = Counter(
        ab_split.variant_of(campaign, str(uuid.UUID(int=i)), weights) for i in range(n)
    )
    total = sum(weights)
    for index, weight in enumerate(weights):
        # Four standard deviations of a binomial share, plus a little.
        p = weight / total
        assert abs(counts[index] / n - p) < 4 * (p * (1 - p) / n) ** 0.5 + 0.005


def test_a_sample_keeps_the_share_and_the_proportions() -> None:
    campaign = str(uuid.uuid4())
    n = 20_000
    got = Counter(
        ab_split.variant_of(campaign, str(uuid.UUID(int=i)), [1, 3], sample_share=0.2)
        for i in range(n)
    )
    assert abs(got[None] / n - 0.8) < 0.02
    assert abs(got[1] / (got[0] + got[1]) - 0.75) < 0.03
    # Another campaign shuffles the same contacts anew.
    other = str(uuid.uuid4())
    same = sum(
        ab_split.variant_of(campaign, str(uuid.UUID(int=i)), [1, 1])
        == ab_split.variant_of(other, str(uuid.UUID(int=i)), [1, 1])
        for i in range(2000)
    )
    assert 800 < same < 1200


def test_refuses_what_it_cannot_split() -> None:
    for weights in ([], [1, 0], [1, -2]):
        with pytest.raises(ValueError):
            ab_split.cut_points(weights)
    for share in (0, 1, 1.5):
        with pytest.raises(ValueError):
            ab_split.sample_cut(share)


@pytest.mark.parametrize("sample_share", [None, 0.3])
async def test_materialisation_agrees_with_the_pure_split(
    db: Database, sample_share: float | None
) -> None:
    with trio.fail_after(20):
        account = await make_account(db)
        await make_contacts(db, 300)
        weights = [2, 1, 0.5]
        row = await create_campaign(
            db,
            OWNER,
            CampaignInput(
                account_id=account,
                name="AB",
                message_type="text",
                message_content="Hi",
                audience_type="all",
                audience_config={},
                schedule_type="now",
                throttle_config={},
                variants=[
                    {"name": n, "messageContent": f"Hi from {n}", "weight": w}
                    for n, w in zip("ABC", weights, strict=True)
                ],
                ab_test=None
                if sample_share is None
                else {"sampleShare": sample_share, "metric": "read_rate", "decideAfterMinutes": 5},
            ),
            now=utc_now(),
        )
        campaign_id = str(row["id"])
        stored = await db.fetch(
            """SELECT contact_id, variant, not_before FROM campaign_recipients
               WHERE campaign_id = $1""",
            campaign_id,
        )
        assert len(stored) == 300
        for r in stored:
            expected = ab_split.variant_of(
                campaign_id, str(r["contact_id"]), weights, sample_share=sample_share
            )
            assert r["variant"] == expected
            assert r["not_before"] == (HELD_FOR_WINNER if expected is None else None)
        assert len({r["variant"] for r in stored}) == 3 + (sample_share is not None)
        sample_size = await db.fetchval(
            "SELECT ab_sample_size FROM campaigns WHERE id = $1", campaign_id
        )
        in_sample = sum(r["variant"] is not None for r in stored)
        assert sample_size == (None if sample_share is None else in_sample)
