"""The agent's leadership memory (reconciler/coord/claim.py): what one etcd read changes."""

from __future__ import annotations

from reconciler.coord.claim import Claim, acquired, observed, released


def test_the_highest_epoch_is_remembered_and_a_lower_one_changes_nothing() -> None:
    c = observed(Claim(), epoch=3, leader_epoch=3)
    assert c.remembered_epoch == 3
    mine = acquired(c, 4, lease=7, revision="r1")
    assert observed(mine, epoch=2, leader_epoch=2) == mine  # etcd went back: nothing concluded
    assert observed(mine, epoch=2, leader_epoch=None) == mine


def test_a_claim_is_forgotten_only_once_etcd_shows_a_later_epoch() -> None:
    mine = acquired(Claim(remembered_epoch=3), 4, lease=7, revision="r1")
    assert mine == Claim(4, 4, 7, "r1")
    assert observed(mine, epoch=4, leader_epoch=4) == mine
    assert observed(mine, epoch=4, leader_epoch=None) == mine  # key gone, epoch unchanged: last holder
    assert observed(mine, epoch=5, leader_epoch=5) == Claim(remembered_epoch=5)
    assert observed(mine, epoch=5, leader_epoch=None) == Claim(remembered_epoch=5)


def test_a_leftover_leader_key_of_an_older_epoch_does_not_cancel_a_claim() -> None:
    """After a restore and the operator's repair of the epoch key, the restored leader key names
    an older epoch: the holder of the current one keeps its claim."""
    mine = acquired(Claim(remembered_epoch=5), 6, lease=9, revision="r2")
    assert observed(mine, epoch=6, leader_epoch=2) == mine


def test_release_keeps_the_epoch_it_last_held_without_a_lease() -> None:
    assert released(Claim(6, 6, 9, "r2")) == Claim(remembered_epoch=6, held_epoch=6)
    assert observed(released(Claim(6, 6, 9, "r2")), epoch=7, leader_epoch=7) == Claim(remembered_epoch=7)
