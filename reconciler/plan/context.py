"""What every part of the planner reads: the spec, which node we are, both observations.

`Ctx` also answers the questions every subsystem asks the same way (am I the desired
Primary? is the peer observed? did the operator declare it fenced?) so that each
question has one answer and one wording.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model import NodeObservation
from reconciler.plan.actions import Guard
from reconciler.spec import LoadedSpec


@dataclass(frozen=True)
class Ctx:
    spec: LoadedSpec
    me: str
    own: NodeObservation
    peer: NodeObservation | None  # None: unreachable (or unauthenticated, or stale)

    @property
    def peer_name(self) -> str | None:
        return self.spec.model.peer_of(self.me)

    @property
    def is_primary(self) -> bool:
        return self.spec.model.primary == self.me

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
        return Guard(
            "peer_reachable",
            False,
            f"peer {p} is unreachable: cannot confirm {what} "
            f"(to take over without it, declare `fenced: [{p}]`, accepting the loss of "
            f"whatever {p} wrote that this node has not received)",
        )
