"""ControlServer + client over a real unix socket in a temp dir, driven by a selector loop."""

from __future__ import annotations

import json
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanspan.control.client import ControlUnavailable, request
from lanspan.control.server import (
    MAX_REQUEST_BYTES,
    ControlError,
    ControlServer,
    handle_request,
)

STATUS: dict[str, object] = {
    "node": "gra-hv1",
    "network": "acme",
    "segments": [{"name": "lan", "vlan": 10, "vni": 10, "mtu": 1400, "macs": 1}],
}
MACS: list[dict[str, object]] = [
    {"segment": "lan", "mac": "52:54:00:00:00:01", "port": "vm1", "peer": None, "age_s": 1.5},
    {"segment": "api", "mac": "52:54:00:00:00:02", "port": None, "peer": "rbx-db1", "age_s": 3},
]


class FakeSource:
    def __init__(self) -> None:
        self.reloads = 0
        self.fail_status = False

    def status(self) -> dict[str, object]:
        if self.fail_status:
            raise RuntimeError("boom")
        return STATUS

    def sessions(self) -> dict[str, str]:
        return {"rbx-db1": "up", "bhs-app1": "handshaking"}

    def macs(self, segment: str | None) -> list[dict[str, object]]:
        return [m for m in MACS if segment is None or m["segment"] == segment]

    def reload(self) -> dict[str, object]:
        self.reloads += 1
        return {"ok": True, "changes": ["segment api: mtu 1400 -> 1380"], "error": None}


class Loop:
    """A selector loop in a thread, like the agent's; `call` runs code inside it."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._calls: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, mask in self.sel.select(0.02):
                try:
                    key.data(mask)
                except BaseException as e:  # pragma: no cover - the test fails on it
                    self.errors.append(e)
            with self._lock:
                calls, self._calls = self._calls, []
            for fn in calls:
                fn()

    def call(self, fn: Callable[[], Any]) -> Any:
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            box.append(fn())
            done.set()

        with self._lock:
            self._calls.append(run)
        assert done.wait(5)
        return box[0]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sel.close()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "acme.sock"


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def server(sock_path: Path, source: FakeSource) -> Iterator[tuple[ControlServer, Loop]]:
    srv = ControlServer(sock_path, source)
    loop = Loop()
    srv.register(loop.sel)
    loop.start()
    yield srv, loop
    loop.stop()
    srv.close()
    assert loop.errors == []


def raw(path: Path, payload: bytes, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Send raw bytes, half-close, and return every response line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_ping_status_macs_reload_round_trip(
    server: tuple[ControlServer, Loop], sock_path: Path, source: FakeSource
) -> None:
    assert request(sock_path, "ping") == {"ok": True, "result": "pong"}
    assert request(sock_path, "status") == {"ok": True, "result": STATUS}
    assert request(sock_path, "sessions") == {
        "ok": True,
        "result": {"rbx-db1": "up", "bhs-app1": "handshaking"},
    }
    assert request(sock_path, "macs") == {"ok": True, "result": MACS}
    assert request(sock_path, "macs", segment="api") == {"ok": True, "result": [MACS[1]]}
    assert request(sock_path, "macs", segment=None)["result"] == MACS
    reply = request(sock_path, "reload")
    assert reply == {
        "ok": True,
        "result": {"ok": True, "changes": ["segment api: mtu 1400 -> 1380"], "error": None},
    }
    assert source.reloads == 1


def test_pipelined_requests_answered_in_order(
    server: tuple[ControlServer, Loop], sock_path: Path
) -> None:
    payload = b'{"op":"ping"}\n\n{"op":"status"}\n{"op":"macs","segment":"lan"}\n'
    assert raw(sock_path, payload) == [
        {"ok": True, "result": "pong"},
        {"ok": True, "result": STATUS},
        {"ok": True, "result": [MACS[0]]},
    ]


def test_many_pipelined_requests_do_not_recurse_or_drop(
    server: tuple[ControlServer, Loop], sock_path: Path
) -> None:
    n = 3000
    replies = raw(sock_path, b'{"op":"status"}\n' * n)
    assert len(replies) == n
    assert all(r == {"ok": True, "result": STATUS} for r in replies)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"segment": "lan"}', 'missing "op"'),
        (b'{"op": 3}', 'missing "op"'),
        (b'{"op": "nope"}', "unknown op 'nope'"),
        (b'{"op": "macs", "segment": 5}', '"segment" must be a string'),
    ],
)
def test_malformed_requests_get_error_responses(
    server: tuple[ControlServer, Loop], sock_path: Path, line: bytes, needle: str
) -> None:
    # an error answer keeps the connection usable: a ping follows on the same stream
    replies = raw(sock_path, line + b'\n{"op":"ping"}\n')
    assert replies[0]["ok"] is False
    assert needle in replies[0]["error"]
    assert replies[1] == {"ok": True, "result": "pong"}


def test_source_exception_becomes_error_response(
    server: tuple[ControlServer, Loop], sock_path: Path, source: FakeSource
) -> None:
    source.fail_status = True
    reply = request(sock_path, "status")
    assert reply["ok"] is False
    assert "boom" in str(reply["error"])
    assert request(sock_path, "ping")["ok"] is True


def test_huge_line_drops_client_and_server_survives(
    server: tuple[ControlServer, Loop], sock_path: Path
) -> None:
    srv, loop = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        blob = b"x" * (MAX_REQUEST_BYTES * 4)
        try:
            s.sendall(blob)
            tail = s.recv(10)
        except (BrokenPipeError, ConnectionResetError):
            tail = b""
        assert tail == b""  # dropped without an answer
    wait_for(lambda: loop.call(lambda: srv.client_count) == 0)
    assert request(sock_path, "ping")["ok"] is True


def test_client_that_never_reads_does_not_block_others(
    server: tuple[ControlServer, Loop], sock_path: Path
) -> None:
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(sock_path))
    stuck.setblocking(False)
    sent = 0
    try:
        for _ in range(2000):
            try:
                sent += stuck.send(b'{"op":"status"}\n' * 64)
            except BlockingIOError:
                break
        # the agent keeps answering everyone else
        for _ in range(5):
            assert request(sock_path, "ping", timeout=2.0)["ok"] is True
    finally:
        stuck.close()
    assert sent > 0


def test_silent_client_does_not_block(server: tuple[ControlServer, Loop], sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(sock_path))
        idle.sendall(b'{"op": "pi')  # half a request, then nothing
        assert request(sock_path, "ping", timeout=2.0)["ok"] is True


def test_socket_mode_is_0600(server: tuple[ControlServer, Loop], sock_path: Path) -> None:
    st = os.stat(sock_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_second_server_on_live_path_is_refused(
    server: tuple[ControlServer, Loop], sock_path: Path, source: FakeSource
) -> None:
    with pytest.raises(ControlError, match="already listening"):
        ControlServer(sock_path, source)
    # the refused attempt did not remove the live socket
    assert request(sock_path, "ping")["ok"] is True


def test_stale_socket_is_replaced(sock_path: Path, source: FakeSource) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))
    dead.close()  # file stays, nobody listens
    assert sock_path.exists()
    with pytest.raises(ControlUnavailable, match="nothing listens"):
        request(sock_path, "ping")
    srv = ControlServer(sock_path, source)
    loop = Loop()
    srv.register(loop.sel)
    loop.start()
    try:
        assert request(sock_path, "ping")["ok"] is True
    finally:
        loop.stop()
        srv.close()
    assert not sock_path.exists()


def test_regular_file_is_never_replaced(sock_path: Path, source: FakeSource) -> None:
    sock_path.write_text("precious")
    with pytest.raises(ControlError, match="not a socket"):
        ControlServer(sock_path, source)
    assert sock_path.read_text() == "precious"


def test_missing_directory_is_explained(tmp_path: Path, source: FakeSource) -> None:
    with pytest.raises(ControlError, match="does not exist"):
        ControlServer(tmp_path / "nope" / "x.sock", source)


def test_close_keeps_a_socket_file_that_is_not_ours(sock_path: Path, source: FakeSource) -> None:
    srv = ControlServer(sock_path, source)
    sock_path.unlink()
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(sock_path))
    other.listen(1)
    try:
        srv.close()
        assert sock_path.exists()
    finally:
        other.close()


def test_close_drops_clients_and_unlinks(sock_path: Path, source: FakeSource) -> None:
    srv = ControlServer(sock_path, source)
    sel = selectors.DefaultSelector()
    srv.register(sel)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(str(sock_path))
    for key, mask in sel.select(1):
        key.data(mask)
    assert srv.client_count == 1
    srv.close()
    assert not sock_path.exists()
    assert len(sel.get_map()) == 0
    c.settimeout(2)
    assert c.recv(1) == b""
    c.close()
    sel.close()


def test_register_later_picks_up_nothing_missing(sock_path: Path, source: FakeSource) -> None:
    srv = ControlServer(sock_path, source)
    try:
        assert isinstance(srv.fileno(), int)
        sel = selectors.DefaultSelector()
        srv.register(sel)
        assert sel.get_key(srv.fileno()).data == srv.handle
        sel.close()
    finally:
        srv.close()


def test_client_reports_missing_agent(tmp_path: Path) -> None:
    path = tmp_path / "acme.sock"
    with pytest.raises(ControlUnavailable) as exc:
        request(path, "status")
    assert str(exc.value).startswith(f"no agent at {path}: is `lanspan agent` running?")


def test_client_times_out_on_mute_agent(sock_path: Path) -> None:
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(sock_path))
    mute.listen(1)
    try:
        with pytest.raises(ControlUnavailable, match=r"did not answer within 0\.2s"):
            request(sock_path, "status", timeout=0.2)
    finally:
        mute.close()


def test_agent_values_are_made_json(sock_path: Path) -> None:
    import enum
    import ipaddress

    class State(enum.Enum):
        UP = "up"

    odd: dict[str, object] = {
        "mac": b"\x52\x54\x00\x00\x00\x01",
        "key": b"\x00" * 32,
        "state": State.UP,
        "addr": ipaddress.ip_address("fd00::1"),
        "path": Path("/etc/lanspan/acme.toml"),
        "tags": {"b", "a"},
        "loss": float("nan"),
        "rtt": [float("inf"), 1.5],
    }

    class OddSource(FakeSource):
        def status(self) -> dict[str, object]:
            return odd

        def macs(self, segment: str | None) -> list[dict[str, object]]:
            return [{"x": object()}]

    srv = ControlServer(sock_path, OddSource())
    loop = Loop()
    srv.register(loop.sel)
    loop.start()
    try:
        assert request(sock_path, "status")["result"] == {
            "mac": "52:54:00:00:00:01",
            "key": "A" * 43 + "=",
            "state": "up",
            "addr": "fd00::1",
            "path": "/etc/lanspan/acme.toml",
            "tags": ["a", "b"],
            "loss": None,
            "rtt": [None, 1.5],
        }
        reply = request(sock_path, "macs")
        assert reply["ok"] is False
        assert "not serialisable" in str(reply["error"])
    finally:
        loop.stop()
        srv.close()


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_handle_request_never_raises(line: bytes) -> None:
    reply = handle_request(line, FakeSource())
    assert isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert isinstance(reply["error"], str)
    json.dumps(reply)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids),
        max_leaves=10,
    )
)
@settings(max_examples=200, deadline=None)
def test_any_json_request_gets_a_json_answer(obj: object) -> None:
    reply = handle_request(json.dumps(obj).encode(), FakeSource())
    assert set(reply) in ({"ok", "result"}, {"ok", "error"})


def test_request_fed_byte_by_byte(server: tuple[ControlServer, Loop], sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        for b in b'{"op": "macs", "segment": "lan"}\n':
            s.sendall(bytes([b]))
        data = b""
        while not data.endswith(b"\n"):
            data += s.recv(65536)
    assert json.loads(data) == {"ok": True, "result": [MACS[0]]}
