"""What every part of the planner reads: the spec, which node we are, both observations.

`Ctx` also answers the questions every subsystem asks the same way (am I the desired
Primary? is the peer observed? did the operator declare it fenced?) so that each
question has one answer and one wording.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.model import NodeObservation
from reconciler.plan import leadership
from reconciler.plan.actions import Guard
from reconciler.spec import LoadedSpec


@dataclass(frozen=True)
class Ctx:
    spec: LoadedSpec
    me: str
    own: NodeObservation
    peer: NodeObservation | None  # None: unreachable (or unauthenticated, or stale)
    # Who is the Primary for this node: the spec's `primary:` in manual mode, the leader key's
    # holder in automatic mode (plan/leadership.py).
    role: leadership.Role = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", leadership.role(self.spec.model, self.me, self.own, self.spec.digest,
                                                          self.peer))

    @property
    def primary(self) -> str:
        """The node this node plans for as the Primary, or "none"."""
        return self.role.primary

    @property
    def peer_name(self) -> str | None:
        return self.spec.model.peer_of(self.me)

    @property
    def is_primary(self) -> bool:
        return self.role.primary == self.me

    @property
    def peer_lease_ended(self) -> bool:
        """This node took the leader key over as the candidate: the peer's lease ended on the
        server first, and a holder stops writing by its own, earlier, deadline."""
        return self.role.took_over

    @property
    def peer_fenced(self) -> bool:
        return self.peer_name is not None and self.peer_name in self.spec.model.fenced

    @property
    def me_fenced(self) -> bool:
        return self.me in self.spec.model.fenced

    @property
    def peer_known(self) -> bool:
        """The peer's state is known: observed, or there is no peer at all."""
        return self.peer is not None or self.peer_name is None

    def peer_reachable_guard(self, what: str) -> Guard | None:
        """None when the peer is observed (or absent); else a guard that holds only if fenced."""
        if self.peer_known:
            return None
        p = self.peer_name
        if self.peer_fenced:
            return Guard(
                "peer_reachable",
                True,
                f"peer {p} is unreachable and declared fenced: proceeding without it",
            )
        if self.peer_lease_ended:
            return Guard(
                "peer_reachable",
                True,
                f"peer {p} is unreachable; its lease ended before {self.me} took the leader key over "
                f"(epoch {self.own.coord.held_epoch if self.own.coord else '?'}): it stopped writing by its own deadline",
            )
        return Guard(
            "peer_reachable",
            False,
            f"peer {p} is unreachable: cannot confirm {what} "
            f"(to take over without it, declare `fenced: [{p}]`, accepting the loss of "
            f"whatever {p} wrote that this node has not received)",
        )
