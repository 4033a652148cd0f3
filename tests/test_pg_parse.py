"""Pure PostgreSQL parsers and the owned-config rendering, on verbatim PostgreSQL 15 output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.execute.pgconf import guc_quote, render_conninfo, render_owned_conf, render_passfile
from reconciler.model import TimelineSwitch
from reconciler.observe.pgparse import (
    guc_key,
    parse_conninfo,
    parse_controldata,
    parse_guc_file,
    parse_history,
    parse_waldump_checkpoint_end,
    wal_record_end,
)
from reconciler.pgrun import parse_postmaster_pid
from reconciler.spec.models import Postgres

FIX = Path(__file__).parent / "fixtures" / "postgres"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


@pytest.mark.parametrize(
    "name, state, checkpoint",
    [
        ("controldata_running_primary.txt", "in production", "0/2000060"),
        ("controldata_running_standby.txt", "in archive recovery", "0/2000060"),
        ("controldata_shut_down.txt", "shut down", "0/30199D0"),
        ("controldata_shut_down_in_recovery.txt", "shut down in recovery", None),
        ("controldata_crashed_primary.txt", "in production", None),
    ],
)
def test_controldata(name: str, state: str, checkpoint: str | None) -> None:
    cd = parse_controldata(fixture(name))
    assert cd.cluster_state == state
    if checkpoint:
        assert cd.checkpoint_lsn == checkpoint
    assert cd.checkpoint_lsn is not None and cd.checkpoint_timeline in (1, 2)
    assert cd.system_identifier is not None and cd.system_identifier.isdigit()
    assert cd.rewind_possible is True  # initdb --data-checksums


def test_controldata_rewind_flags() -> None:
    text = fixture("controldata_shut_down.txt")

    def with_flags(hints: str, checksums: str) -> str:
        text2 = re.sub(r"(wal_log_hints setting: +)\w+", rf"\g<1>{hints}", text)
        return re.sub(r"(Data page checksum version: +)\d+", rf"\g<1>{checksums}", text2)

    assert parse_controldata(with_flags("off", "0")).rewind_possible is False
    assert parse_controldata(with_flags("on", "0")).rewind_possible is True
    assert parse_controldata(with_flags("off", "1")).rewind_possible is True
    assert parse_controldata("").rewind_possible is None


def test_waldump_end_of_shutdown_checkpoint() -> None:
    end = parse_waldump_checkpoint_end(fixture("waldump_shutdown.stdout"), fixture("waldump_shutdown.stderr"))
    assert end == "0/3019A48"
    # the same run's promotion forked exactly there (promotion forks at the end of the last replayed record)
    assert parse_history(fixture("history_00000002.history")) == (TimelineSwitch(parent=1, switchpoint=end),)


def test_waldump_when_wal_follows_the_checkpoint() -> None:
    out, err = fixture("waldump_not_last.stdout"), fixture("waldump_not_last.stderr")
    assert parse_waldump_checkpoint_end(out, err) is None
    assert parse_waldump_checkpoint_end("", fixture("waldump_shutdown.stderr")) is None


def test_waldump_pg16_wording_must_agree_with_the_record() -> None:
    # PG16+ wording (not captured: no PG16 here)
    out = fixture("waldump_shutdown.stdout")
    err = "pg_waldump: error: error in WAL record at 0/30199D0: invalid record length at {}: expected at least 24"
    assert parse_waldump_checkpoint_end(out, err.format("0/3019A48")) == "0/3019A48"
    assert parse_waldump_checkpoint_end(out, err.format("0/3019A50")) is None


@pytest.mark.parametrize(
    "case, end",
    [  # same runs: the promoted standby's history switchpoint was exactly this
        ("page_boundary", "0/3004000"),  # "invalid magic number 0000 in log segment ..., offset 16384"
        ("segment_boundary", "0/4000000"),  # 'could not find file "000000010000000000000004"'
    ],
)
def test_waldump_checkpoint_ending_on_a_boundary(case: str, end: str) -> None:
    out, err = fixture(f"waldump_{case}.stdout"), fixture(f"waldump_{case}.stderr")
    assert "invalid record length" not in err
    assert parse_waldump_checkpoint_end(out, err) == end


def test_wal_record_end_crossing_page_headers() -> None:
    page, seg = 8192, 16 << 20
    assert wal_record_end(0x30199D0, 114, page, seg) == 0x3019A48  # inside a page: MAXALIGN
    assert wal_record_end(0x3003FD0, 114, page, seg) == 0x3004000 + 24 + 66 + 6  # short page header
    assert wal_record_end(0x3FFFFD0, 114, page, seg) == 0x4000000 + 40 + 66 + 6  # long header at a segment
    assert wal_record_end(0x3000000 + 40, 3 * page, page, seg) == 0x3000000 + 40 + 3 * page + 3 * 24


def test_history_multi_line_and_comments() -> None:
    text = "1\t0/3019A48\tno recovery target specified\n\n# comment\n2\t0/50000A0\tbefore 2000-01-01\n"
    assert parse_history(text) == (
        TimelineSwitch(parent=1, switchpoint="0/3019A48"),
        TimelineSwitch(parent=2, switchpoint="0/50000A0"),
    )


def test_postmaster_pid() -> None:
    pm = parse_postmaster_pid(fixture("postmaster.pid"))
    assert pm is not None
    assert (pm.pid, pm.port, pm.socket_dir, pm.status) == (10934, 35149, "/tmp/rcpg-lab/sock", "ready")
    single = parse_postmaster_pid("-4242\n/data\n")
    assert single is not None and (single.pid, single.port, single.status) == (4242, None, None)
    assert parse_postmaster_pid("") is None


def test_guc_file() -> None:
    text = (
        "# comment\nport = 5433\nshared_buffers 128MB  # trailing\n"
        "primary_conninfo = 'host=a application_name=''x'' passfile=/p\\\\q'\n"
        "include_if_exists = 'reconciler.conf'\nport=5434\n"
    )
    kv = parse_guc_file(text)
    assert kv["port"] == "5434"  # the last one wins, as in PostgreSQL
    assert kv["shared_buffers"] == "128MB"
    assert kv["primary_conninfo"] == "host=a application_name='x' passfile=/p\\q"
    assert guc_key("  # port = 1") is None and guc_key("Port = 1") == "port"


def test_conninfo() -> None:
    got = parse_conninfo("host=10.0.0.1 port = 5432 application_name='a b' passfile='/x/it\\'s'")
    assert got == {"host": "10.0.0.1", "port": "5432", "application_name": "a b", "passfile": "/x/it's"}
    with pytest.raises(ValueError) as e:
        parse_conninfo("host=a password='secret")
    assert "secret" not in str(e.value)


@pytest.mark.parametrize("value", ["plain", "with space", "it's", "back\\slash", "q'u\\o te'", ""])
def test_owned_conf_round_trip(value: str) -> None:
    params = {"host": "10.0.0.2", "port": "5432", "user": "rep", "application_name": value, "passfile": f"/d/{value}"}
    cfg = Postgres(data_dir="/d", port=5439)
    text = render_owned_conf(cfg, render_conninfo(params))
    kv = parse_guc_file(text)
    assert kv["port"] == "5439" and kv["wal_log_hints"] == "on"
    assert parse_conninfo(kv["primary_conninfo"]) == params
    assert parse_guc_file(f"x = {guc_quote(value)}")["x"] == value


def test_passfile_escaping() -> None:
    assert render_passfile("rep", "a:b\\c") == "*:*:*:rep:a\\:b\\\\c\n"


def test_synchronous_standby_names_parsed_and_rendered() -> None:
    from reconciler.observe.pgparse import parse_sync_names, render_sync_names

    assert parse_sync_names("") == ()
    assert parse_sync_names("mx2") == ("mx2",)
    assert parse_sync_names('FIRST 1 ("mx2", mx-3)') == ("mx2", "mx-3")
    assert parse_sync_names("ANY 2 (a, b, c)") == ("a", "b", "c")
    assert parse_sync_names('2 ("a""b", c)') == ('a"b', "c")
    assert parse_sync_names("*") == ("*",)
    assert render_sync_names(()) == ""
    assert render_sync_names(("mx2",)) == 'FIRST 1 ("mx2")'
    for names in (("mx2",), ("db.1", "db-2")):
        assert parse_sync_names(render_sync_names(names)) == names
