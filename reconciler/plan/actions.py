"""The closed set of actions the planner can emit, and the plan that orders them.

An `Action` is data: what it changes (`kind`, `target`, `items`), why (`reason`, for
humans only: the executor never reads it), and the guards it waits on.  A guard that
does not hold makes the action *blocked*; execution stops at the first blocked action
and the loop waits (polls) instead of retrying.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.address import Address
from reconciler.plan.kinds import Kind, Payload

__all__ = ["Action", "Guard", "Kind", "Plan"]


@dataclass(frozen=True)
class Guard:
    """A condition on observed state an action waits for; `text` says what is awaited."""

    name: str
    holds: bool
    text: str


@dataclass(frozen=True)
class Action:
    kind: Kind
    target: str  # interface, mount point, resource, service or "postgres"
    reason: str  # the diff that caused it, one sentence; for humans only
    items: tuple[Address, ...] = ()  # addresses for the address kinds
    guards: tuple[Guard, ...] = ()
    loses: str | None = None  # what executing it discards, when it discards anything
    payload: Payload | None = None  # what the executor needs besides the target: see kinds.Row.payload

    def __post_init__(self) -> None:
        expected = self.kind.row.payload
        if self.payload is not None and (expected is None or not isinstance(self.payload, expected)):
            raise TypeError(f"{self.kind.value} takes {expected.__name__ if expected else 'no payload'}, "
                            f"not {type(self.payload).__name__}")

    @property
    def blocked(self) -> bool:
        return any(not g.holds for g in self.guards)

    @property
    def waiting_on(self) -> tuple[str, ...]:
        return tuple(g.text for g in self.guards if not g.holds)

    @property
    def symbol(self) -> str:
        return self.kind.row.symbol

    @property
    def payload_text(self) -> dict[str, str]:
        """The payload as text by field name: `params` in `plan --json`, and the fields of its title."""
        return self.payload.text_fields() if self.payload is not None else {}


@dataclass(frozen=True)
class Plan:
    node: str
    actions: tuple[Action, ...] = ()
    notes: tuple[str, ...] = field(default=())  # things the operator must know that no action fixes
    peer_reachable: bool = True

    @property
    def empty(self) -> bool:
        return not self.actions

    @property
    def next_action(self) -> Action | None:
        return self.actions[0] if self.actions else None
