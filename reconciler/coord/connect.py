"""An etcd client from `failover.etcd`'s settings: endpoints, TLS files, credentials.

Credentials come from root-only files (`trust.check_file`); the password is read here and never
shown.  The agent, `status` and the lease keeper (which gets the same settings as paths on its
command line, never the password itself) all connect through `client`.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler import safefile, trust
from reconciler.coord.etcd import Credentials, EtcdClient

MAX_PASSWORD_BYTES = 1024


class CoordConfigError(Exception):
    pass


def _password(path: str) -> str:
    try:
        trust.check_file(path, "etcd password file", secret=True)
        data, _ = safefile.read_small(path, "etcd password file", MAX_PASSWORD_BYTES)
    except (trust.UntrustedError, safefile.SmallFileError) as e:
        raise CoordConfigError(str(e)) from None
    except OSError as e:
        raise CoordConfigError(f"{path}: cannot read the etcd password file: {e.strerror}") from None
    try:
        return data.decode("utf-8", errors="strict").strip()
    except UnicodeDecodeError:
        raise CoordConfigError(f"{path}: the etcd password file is not valid UTF-8") from None


def client(endpoints: Sequence[str], timeout: float, *, ca_file: str | None = None, cert_file: str | None = None,
           key_file: str | None = None, username: str | None = None, password_file: str | None = None) -> EtcdClient:
    creds = None
    if username is not None and password_file is not None:
        creds = Credentials(username, _password(password_file))
    for path, what in ((ca_file, "etcd CA file"), (cert_file, "etcd client certificate"), (key_file, "etcd client key")):
        if path is not None:
            try:
                trust.check_file(path, what, secret=what.endswith("key"))
            except trust.UntrustedError as err:
                raise CoordConfigError(str(err)) from None
    return EtcdClient(list(endpoints), timeout=timeout, ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                      credentials=creds)
