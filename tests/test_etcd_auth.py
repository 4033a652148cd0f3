"""reconciler.coord.etcd with etcd's user/password authentication on (three real members in
namespaces, tokens that expire after 2 s): the right password works and survives a token's
expiry; a wrong one is an EtcdAuthError naming the user and never the password."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from reconciler.coord.etcd import Credentials, EtcdAuthError, EtcdClient, EtcdError
from tests.conftest import need_etcd
from tests.etcd_cluster import EtcdCluster, etcd_cluster

PASSWORD = "s3cret-for-the-test"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    need_etcd()
    with etcd_cluster(tmp_path_factory.mktemp("etcd-auth"), flags=("--auth-token", "simple",
                                                                     "--auth-token-ttl", "2")) as c:
        admin = c.client()
        for path, req in (("/v3/auth/user/add", {"name": "root", "password": PASSWORD}),
                          ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                          ("/v3/auth/enable", {})):
            c.run("mx1", admin._post, path, req)
        yield c


def _client(c: EtcdCluster, password: str | None) -> EtcdClient:
    creds = Credentials("root", password) if password is not None else None
    return EtcdClient(c.endpoints, timeout=2.0, credentials=creds)


def test_the_right_password_works_and_survives_token_expiry(cluster: EtcdCluster) -> None:
    cl = _client(cluster, PASSWORD)
    assert cluster.run("mx1", cl.put, "/auth/k", "v") > 0
    token = cl._token
    assert token
    time.sleep(4)  # the simple token expires after 2 s idle
    kv = cluster.run("mx2", cl.get, "/auth/k")
    assert kv is not None and kv.value == "v"
    assert cl._token and cl._token != token  # it authenticated again, once


def test_a_wrong_password_is_an_auth_error_without_the_password(cluster: EtcdCluster) -> None:
    with pytest.raises(EtcdAuthError) as info:
        cluster.run("mx1", _client(cluster, "wrong-password").get, "/auth/k")
    assert "'root'" in str(info.value) and "wrong-password" not in str(info.value)


def test_no_credentials_is_refused(cluster: EtcdCluster) -> None:
    with pytest.raises(EtcdError):
        cluster.run("mx1", _client(cluster, None).put, "/auth/k", "x")
