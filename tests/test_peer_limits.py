"""Peer server limits on loopback: who is answered, how many at once, how long one request may take.

"This host" is 127.0.0.1, ::1 and the bound address, exactly: 127.0.0.2 is another source
here (Linux routes all of 127.0.0.0/8 to lo, so a test can connect from it).  Every socket
is closed and every server stopped, even when an assertion fails.
"""

from __future__ import annotations

import errno
import socket
import time

import pytest

from reconciler.peer import PeerServer, fetch_peer
from tests import test_peer
from tests.test_peer import HOST, SECRET

server = test_peer.server  # the same fixture (a PeerServer on 127.0.0.1) as the peer tests


def _connect(port: int, source: str = HOST) -> socket.socket | None:
    """A connected socket, or None when the server reset it before connect() returned."""
    s = socket.socket()
    try:
        s.settimeout(2.0)
        s.bind((source, 0))
        s.connect((HOST, port))
    except ConnectionResetError:
        s.close()
        return None
    except BaseException:
        s.close()
        raise
    return s


def _answer(s: socket.socket | None, request: bytes = b"GET /healthz HTTP/1.0\r\n\r\n", wait: float = 2.0) -> bytes:
    """Send `request`, read to EOF (or `wait` s); a reset counts as no answer."""
    if s is None:
        return b""
    s.settimeout(wait)
    chunks = []
    try:
        s.sendall(request)
        while chunk := s.recv(4096):
            chunks.append(chunk)
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        pass
    except OSError as e:
        if e.errno not in (errno.ECONNRESET, errno.EPIPE):
            raise
    finally:
        s.close()
    return b"".join(chunks)


def test_loopback_is_answered_another_local_source_is_not(server: PeerServer) -> None:
    assert _answer(_connect(server.port)).startswith(b"HTTP/1.0 200"), "127.0.0.1 must be answered"
    t0 = time.monotonic()
    reply = _answer(_connect(server.port, "127.0.0.2"))
    elapsed = time.monotonic() - t0
    assert reply == b"", f"a connection from 127.0.0.2 was answered: {reply[:80]!r}"
    assert elapsed < 1.0, f"the refused connection was held {elapsed:.2f} s, not closed at accept"


def test_a_fifth_request_from_one_source_is_refused_and_the_others_still_served(server: PeerServer) -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(4):  # silent: each holds a handler until the deadline
            s = _connect(server.port)
            assert s is not None, "one of the first 4 connections was reset"
            held.append(s)
        time.sleep(0.3)
        reply = _answer(_connect(server.port), wait=1.0)
        assert reply == b"", f"a 5th concurrent connection from 127.0.0.1 was answered: {reply[:80]!r}"
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # the held ones hung up: their slots free at once
        if fetch_peer(HOST, server.port, SECRET, timeout=1.0).reachable:
            break
        time.sleep(0.05)
    else:
        pytest.fail("slots were not released after the clients closed")


def test_a_byte_a_second_is_cut_off_at_the_whole_request_deadline(server: PeerServer) -> None:
    """The 5 s deadline runs from accept; a read timeout of 5 s would never fire here."""
    request = b"GET /healthz HTTP/1.0\r\nX-Pad: " + b"a" * 64
    s = _connect(server.port)
    assert s is not None
    with s:
        t0 = time.monotonic()
        cut_at: float | None = None
        reply = b""
        for byte in request[:12]:  # at most 12 s, a byte each second
            try:
                s.sendall(bytes([byte]))
                s.settimeout(1.0)
                reply = s.recv(4096)  # b"": the server hung up (it sends no reply to a timed-out request)
                cut_at = time.monotonic() - t0
                break
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                cut_at = time.monotonic() - t0
                break
    assert cut_at is not None, "a client sending a byte a second was still connected after 12 s"
    assert 4.5 <= cut_at <= 6.5, f"cut off after {cut_at:.1f} s, expected at the 5 s deadline"
    assert not reply.startswith(b"HTTP/1.0 200"), reply[:80]
