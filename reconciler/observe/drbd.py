"""DRBD resource state: `drbdsetup sh-status` (8.4), `drbdsetup events2 --now` (9), /proc/drbd.

The `parse_*` functions are pure and tested on verbatim tool output (tests/fixtures/drbd/).
`read_drbd` runs the right tool for the loaded kernel module and adds what DRBD 8.4 does
not print: whether the device is held open (observe.openers) and whether the kernel
logged a split brain that is still unresolved (observe.drbd_kernel.kmsg_split_brain).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from reconciler import _cmd
from reconciler.model import DrbdObs, DrbdRole
from reconciler.observe import drbd_kernel
from reconciler.observe.openers import device_number, is_open
from reconciler.spec.models import DrbdResource

RESOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DRBD_MAJOR = 147
STATUS_TIMEOUT_S = 10.0

# 8.4 connection states in which the two nodes are talking (handshake done).
CONNECTED_STATES = frozenset(
    "Connected StartingSyncS StartingSyncT WFBitMapS WFBitMapT WFSyncUUID SyncSource SyncTarget "
    "PausedSyncS PausedSyncT VerifyS VerifyT Ahead Behind".split()
)
_ROLES = ("Primary", "Secondary", "Unknown")


class DrbdObserveError(Exception):
    """DRBD state could not be read; the message says what failed."""


class DrbdModuleMissing(DrbdObserveError):
    """No drbd module is loaded or loadable.  `observations` is still true: nothing is up."""

    def __init__(self, message: str, observations: dict[str, DrbdObs]):
        super().__init__(message)
        self.observations = observations


@dataclass(frozen=True)
class VolumeState:
    """One DRBD volume as a parser saw it; `resource` is "" where the source has no names."""

    resource: str
    volume: int | None
    minor: int
    obs: DrbdObs


def check_name(name: str) -> str:
    if not RESOURCE_NAME_RE.match(name):
        raise ValueError(f"invalid DRBD resource name {name!r} (allowed: {RESOURCE_NAME_RE.pattern})")
    return name


def _role(value: str | None) -> DrbdRole:
    return cast(DrbdRole, value) if value in _ROLES else "Unknown"


def _obs(cstate: str, role: str, peer: str, disk: str, pdsk: str, open_: bool | None = None) -> DrbdObs:
    return DrbdObs(
        configured=True, role=_role(role), peer_role=_role(peer),
        connection=cstate, disk=disk or "Diskless", peer_disk=pdsk or "DUnknown", open=open_,
    )


def parse_sh_status(text: str) -> list[VolumeState]:
    """`drbdsetup sh-status <res>` (8.4): one `_key=value` block per volume, from `_minor=`."""
    blocks: list[dict[str, str]] = []
    for line in text.splitlines():
        key, eq, value = line.strip().partition("=")
        if not eq or not key.startswith("_"):
            continue
        if key == "_minor":
            blocks.append({})
        if blocks:
            blocks[-1][key] = value
    states = []
    for b in blocks:
        vol = b.get("_volume", "")
        if b.get("_known") == "Configured":
            cs, role, peer, disk, pdsk = (b.get(k, "") for k in ("_cstate", "_role", "_peer", "_disk", "_pdsk"))
            obs = _obs(cs, role, peer, disk, pdsk)
        else:  # "Unconfigured" or "NA # not available or not yet created"
            obs = DrbdObs(configured=False)
        states.append(VolumeState(b.get("_res_name", ""), int(vol) if vol.lstrip("-").isdigit() else None,
                                  int(b["_minor"]), obs))
    return states


_PROC_RE = re.compile(
    r"^\s*(?P<minor>\d+): cs:(?P<cs>\w+)"
    r"(?: ro:(?P<role>\w+)/(?P<peer>\w+) ds:(?P<disk>\w+)/(?P<pdsk>\w+))?"
)


def parse_proc_drbd(text: str) -> list[VolumeState]:
    """/proc/drbd (8.4): one line per minor, `cs:Unconfigured` for an allocated but idle minor."""
    states = []
    for line in text.splitlines():
        m = _PROC_RE.match(line)
        if not m:
            continue
        minor = int(m["minor"])
        if m["cs"] == "Unconfigured" or m["role"] is None:
            states.append(VolumeState("", None, minor, DrbdObs(configured=False)))
        else:
            states.append(VolumeState("", None, minor, _obs(m["cs"], m["role"], m["peer"], m["disk"], m["pdsk"])))
    return states


def _tokens(line: str) -> tuple[str, str, dict[str, str]] | None:
    parts = line.split()
    if parts and parts[0][:1].isdigit():  # --timestamps prefix
        parts = parts[1:]
    if len(parts) < 2 or parts[1] == "-":
        return None
    kv = dict(p.split(":", 1) for p in parts[2:] if ":" in p)  # split on the FIRST colon only
    return parts[0], parts[1], kv


def _connection_84(connection: str | None, replication: str | None) -> str:
    """Map 9-style connection/replication names to the 8.4 cstate vocabulary of DrbdObs."""
    if connection is None:
        return "StandAlone"
    if connection == "Connecting":
        return "WFConnection"
    if connection == "Connected":
        if replication == "Off":  # 8.4's events2 maps WFReportParams to Connected + Off
            return "WFReportParams"
        return "Connected" if replication in (None, "Established") else replication
    return connection


def parse_events2(text: str) -> list[VolumeState]:
    """`drbdsetup events2 --now <res>` (9, or 8.4.6+): `exists <object> key:value ...` lines."""
    objs: dict[tuple[str, ...], dict[str, str]] = {}
    for line in text.splitlines():
        tok = _tokens(line)
        if tok is None:
            continue
        action, kind, kv = tok
        key = (kind, kv.get("name", ""), kv.get("volume", "") if kind in ("device", "peer-device") else "",
               kv.get("peer-node-id", "") if kind in ("connection", "peer-device") else "")
        if action == "destroy":
            objs.pop(key, None)
        elif action in ("exists", "create", "change"):
            objs.setdefault(key, {}).update(kv)
    states = []
    for (kind, name, volume, _peer), dev in objs.items():
        if kind != "device" or "minor" not in dev:
            continue
        res = objs.get(("resource", name, "", ""), {})
        conn = next((v for k, v in objs.items() if k[0] == "connection" and k[1] == name), {})
        pdev = next((v for k, v in objs.items() if k[0] == "peer-device" and k[1:3] == (name, volume)), {})
        open_ = {"yes": True, "no": False}.get(dev.get("open", ""))
        obs = _obs(_connection_84(conn.get("connection"), pdev.get("replication")), res.get("role", ""),
                   conn.get("role", "Unknown"), dev.get("disk", ""), pdev.get("peer-disk", ""), open_)
        states.append(VolumeState(name, int(volume) if volume.isdigit() else None, int(dev["minor"]), obs))
    return states


def device_minor(device: str) -> int | None:
    """Minor of the resource's device: from a /dev/drbdN name, else from the node itself."""
    m = re.fullmatch(r"/dev/drbd(\d+)", device)
    if m:
        return int(m.group(1))
    num = device_number(device)
    return num[1] if num and num[0] == DRBD_MAJOR else None


def pick(states: Sequence[VolumeState], resource: str, minor: int | None) -> VolumeState | None:
    """The volume that is `resource`'s device: same minor, else volume 0, else the only one."""
    mine = [s for s in states if s.resource in (resource, "")]
    for s in mine:
        if minor is not None and s.minor == minor:
            return s
    named = [s for s in mine if s.resource == resource]
    return next((s for s in named if s.volume == 0), named[0] if len(named) == 1 else None)


def _states(name: str, major: int | None) -> list[VolumeState]:
    """Run the status tool for the loaded module; on 8.4 fall back to /proc/drbd."""
    if major is not None and major >= 9:
        res = _cmd.run(["drbdsetup", "events2", "--now", name], timeout=STATUS_TIMEOUT_S)
        if not res.ok:
            raise DrbdObserveError(f"cannot read DRBD state of {name}: {res.describe()}")
        return parse_events2(res.stdout)
    res = _cmd.run(["drbdsetup", "sh-status", name], timeout=STATUS_TIMEOUT_S)
    if res.ok:
        return parse_sh_status(res.stdout)
    try:
        with open(drbd_kernel.PROC_DRBD, encoding="utf-8", errors="replace") as f:
            return parse_proc_drbd(f.read())
    except OSError as e:
        raise DrbdObserveError(f"cannot read DRBD state of {name}: {res.describe()}; /proc/drbd: {e}") from e


def _is_open(obs: DrbdObs, device: str, major: int | None) -> bool | None:
    if obs.open is not None:  # DRBD 9 utils >= 9.29 print open:yes|no
        return obs.open
    if major == 8 and obs.role != "Primary":
        return False  # 8.4 refuses every open of a Secondary ("Wrong medium type")
    return is_open(device)


def complete(state: VolumeState | None, res: DrbdResource, major: int | None, kmsg: list[str] | None) -> DrbdObs:
    """The parsed volume plus `open` and `split_brain`: unresolved in the kernel log AND not connected since."""
    if state is None or not state.obs.configured:
        return DrbdObs(configured=False)
    obs = state.obs
    split = (
        kmsg is not None
        and obs.connection not in CONNECTED_STATES
        and drbd_kernel.kmsg_split_brain(kmsg, state.minor)
    )
    return obs.model_copy(update={"open": _is_open(obs, res.device, major), "split_brain": split})


def read_drbd(resources: Sequence[DrbdResource]) -> dict[str, DrbdObs]:
    """Observe each resource.  Raises DrbdModuleMissing (with the diagnosis) if no module exists.

    `split_brain` comes from the kernel log and is False when /dev/kmsg cannot be read.
    """
    for r in resources:
        check_name(r.name)
    try:
        with open(drbd_kernel.PROC_DRBD, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except FileNotFoundError:
        down = {r.name: DrbdObs(configured=False) for r in resources}
        facts = drbd_kernel.gather_module_facts()
        mine = next((k for k in facts.installed if k.kernel == facts.running_kernel), None)
        if mine is None or not mine.has_drbd:
            raise DrbdModuleMissing(drbd_kernel.diagnose_module(facts), down) from None
        return down  # installed but not loaded yet: nothing is up; `drbdadm up` loads it
    version = drbd_kernel.parse_version(first)
    major = version[0] if version else None
    kmsg = drbd_kernel.read_kmsg() if resources else None
    out = {}
    for r in resources:
        states = _states(r.name, major)
        out[r.name] = complete(pick(states, r.name, device_minor(r.device)), r, major, kmsg)
    return out
