"""What an agent remembers of the leadership, and how one etcd read changes it.

Two facts survive a restart (the agent's state file): the highest epoch this agent has ever
seen, so that an etcd showing less (restored from an old snapshot) is never decided on; and
the claim it made (the epoch it acquired, under which lease, with which spec revision), so
that it knows what it holds and, with no candidate published, that nobody can have written
since its epoch.  `observed` is the bookkeeping after each successful read; the planner only
reads the result (plan/leadership.py).  The simulated cluster runs this same function.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Claim:
    remembered_epoch: int = 0
    held_epoch: int | None = None  # acquired (with held_lease), or last held before a release (without)
    held_lease: int | None = None
    held_revision: str | None = None


def observed(claim: Claim, epoch: int, leader_epoch: int | None) -> Claim:
    """After a linearizable read showing `epoch` (and the leader key at `leader_epoch`, or none):
    remember the higher epoch; forget the claim once etcd shows a later epoch or a leader key of
    a later one.  An etcd behind what this agent has seen changes nothing: nothing is concluded
    from it (and a leader key of an *older* epoch is the leftover of such a restore)."""
    if epoch < claim.remembered_epoch:
        return claim
    out = replace(claim, remembered_epoch=max(claim.remembered_epoch, epoch))
    held = claim.held_epoch
    if held is not None and (epoch > held or (leader_epoch is not None and leader_epoch > held)):
        out = replace(out, held_epoch=None, held_lease=None, held_revision=None)
    return out


def acquired(claim: Claim, epoch: int, lease: int, revision: str) -> Claim:
    return Claim(remembered_epoch=max(claim.remembered_epoch, epoch), held_epoch=epoch, held_lease=lease,
                 held_revision=revision)


def released(claim: Claim) -> Claim:
    """After a planned release: no key held, but the epoch it last held is kept (without a
    lease): it wrote last, so with no candidate published it may take the key back."""
    return Claim(remembered_epoch=claim.remembered_epoch, held_epoch=claim.held_epoch)
