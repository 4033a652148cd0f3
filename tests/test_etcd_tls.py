"""etcd over TLS with client certificates: three real members configured from `reconciler
etcd-config` output (the CA of the spec, each member's certificate where the printed file says, with
the paths moved into the test's directory), and the agents' client and `status` using the spec's
ca_file, cert_file and key_file.  A client without a certificate, or trusting another CA, gets nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.coord.etcd import EtcdClient, EtcdError
from tests.conftest import need, need_etcd
from tests.etcd_cluster import ROLES, EtcdCluster, etcd_cluster

ADDRS = {"mx1": "10.77.0.1", "mx2": "10.77.0.2", "wit": "10.77.0.3"}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.crt"), "-days", "1", "-subj", f"/CN={name}")


def _cert(d: Path, name: str, ca: str, ip: str | None) -> None:
    key, csr, crt, ext = (d / f"{name}.{x}" for x in ("key", "csr", "crt", "ext"))
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
             "-out", str(csr), "-subj", f"/CN={name}")
    san = f"subjectAltName=IP:{ip},IP:127.0.0.1\n" if ip else ""
    ext.write_text(san + "extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.crt"), "-CAkey", str(d / f"{ca}.key"),
             "-CAcreateserial", "-out", str(crt), "-days", "1", "-extfile", str(ext))
    key.chmod(0o600)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdCluster, Path, Path]]:
    need_etcd()
    need(subprocess.run(["which", "openssl"], capture_output=True).returncode == 0, "needs openssl")
    d = tmp_path_factory.mktemp("etcd-tls")
    _ca(d, "ca")
    _ca(d, "other-ca")
    for role in ROLES:
        _cert(d, role, "ca", ADDRS[role])
    _cert(d, "agent", "ca", None)
    spec = d / "cluster.yaml"
    spec.write_text(f"""cluster: mail
nodes:
  mx1: {{address: {ADDRS['mx1']}}}
  mx2: {{address: {ADDRS['mx2']}}}
primary: mx1
failover:
  witness: {{name: wit, address: {ADDRS['wit']}}}
  etcd: {{prefix: /tls, ca_file: {d}/ca.crt, cert_file: {d}/agent.crt, key_file: {d}/agent.key}}
""")
    configs = {}
    for role in ROLES:
        r = subprocess.run([sys.executable, "-m", "reconciler", "etcd-config", str(spec), role],
                           capture_output=True, text=True, timeout=60, check=True)
        env = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if ln and not ln.startswith("#"))
        assert env["ETCD_TRUSTED_CA_FILE"] == f"{d}/ca.crt" and env["ETCD_CLIENT_CERT_AUTH"] == "true"
        assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"https://{ADDRS[role]}:2379"
        for side in ("", "PEER_"):  # where the printed file says the member's certificate goes, moved here
            assert env[f"ETCD_{side}CERT_FILE"] == f"/etc/etcd/{role}.crt"
            env[f"ETCD_{side}CERT_FILE"], env[f"ETCD_{side}KEY_FILE"] = str(d / f"{role}.crt"), str(d / f"{role}.key")
        configs[role] = env
    client_tls = {"ca_file": str(d / "ca.crt"), "cert_file": str(d / "agent.crt"), "key_file": str(d / "agent.key")}
    with etcd_cluster(d, config=configs.__getitem__, tls=client_tls) as c:
        yield c, d, spec


def test_the_agents_client_talks_tls_with_its_certificate(tls: tuple[EtcdCluster, Path, Path]) -> None:
    c, _, _ = tls
    cl = c.client()
    assert c.run("mx1", cl.put, "/tls/k", "v") > 0
    assert c.run("wit", cl.get, "/tls/k").value == "v"  # type: ignore[union-attr]


def test_no_certificate_or_another_ca_gets_nothing(tls: tuple[EtcdCluster, Path, Path]) -> None:
    c, d, _ = tls
    no_cert = EtcdClient(c.endpoints, timeout=1.0, ca_file=str(d / "ca.crt"))
    with pytest.raises(EtcdError):
        c.run("mx1", no_cert.get, "/tls/k")
    wrong_ca = EtcdClient(c.endpoints, timeout=1.0, ca_file=str(d / "other-ca.crt"), cert_file=str(d / "agent.crt"),
                          key_file=str(d / "agent.key"))
    with pytest.raises(EtcdError):
        c.run("mx1", wrong_ca.get, "/tls/k")


def test_status_reads_through_the_specs_tls_settings(tls: tuple[EtcdCluster, Path, Path]) -> None:
    from reconciler.cli.coord_status import coordination_lines
    from reconciler.spec.load import load_spec

    c, _, spec = tls
    lines = c.run("mx2", coordination_lines, load_spec(str(spec)).model)
    assert sum(": up, " in ln for ln in lines if ln.startswith("etcd ")) == 3, lines
    assert lines[-1].startswith("Leader    held by nobody"), lines
