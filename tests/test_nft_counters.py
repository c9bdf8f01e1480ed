"""The kernel filter's counters read over netlink (lanspan/agent/nft_counters.py):
the request's bytes, a dump the kernel sent (golden), junk and truncations, and a
status that spawns no nft process when the in-process read works."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kernel_filter import FakeNft

from lanspan.agent.nft_counters import BadReply, parse_counters_untrusted, request
from lanspan.agent.nftables import FilterSpec, KernelFilter

# `nft -j list counters` of the same table said bad_shape 3, unknown_receiver 0;
# the dump was asked with seq 7 (captured from kernel 6.18 in a namespace).
DUMP = (Path(__file__).resolve().parent / "data" / "nft_counters_dump.bin").read_bytes()


def test_the_request_asks_for_the_counters_of_one_inet_table() -> None:
    raw = request("lanspan_x_1", 7)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", raw)
    assert (length, kind, flags, seq, pid) == (len(raw), 10 << 8 | 19, 0x301, 7, 0)
    assert raw[16:20] == bytes([1, 0, 0, 0])  # NFPROTO_INET, version 0, res_id 0
    assert raw[20:36] == struct.pack("=HH", 16, 1) + b"lanspan_x_1\0"
    assert raw[36:44] == struct.pack("=HH", 8, 3) + struct.pack(">I", 1)
    assert len(raw) % 4 == 0


def test_a_dump_from_the_kernel_parses() -> None:
    out: dict[str, int] = {}
    assert parse_counters_untrusted(DUMP, 7, out) is True
    assert out == {"bad_shape": 3, "unknown_receiver": 0}


def test_messages_of_another_dump_are_ignored() -> None:
    out: dict[str, int] = {}
    assert parse_counters_untrusted(DUMP, 8, out) is False
    assert out == {}


def test_an_error_answer_keeps_its_errno() -> None:
    err = struct.pack("=IHHII", 36, 2, 0, 5, 0) + struct.pack("=i", -1) + bytes(16)
    with pytest.raises(BadReply) as e:
        parse_counters_untrusted(err, 5, {})
    assert e.value.errno == 1


@given(cut=st.integers(min_value=0, max_value=len(DUMP)), tail=st.binary(max_size=64))
def test_truncated_or_extended_dumps_raise_only_bad_reply(cut: int, tail: bytes) -> None:
    out: dict[str, int] = {}
    with contextlib.suppress(BadReply):
        parse_counters_untrusted(DUMP[:cut] + tail, 7, out)
    assert set(out) <= {"bad_shape", "unknown_receiver"} or tail


@given(data=st.binary(max_size=512), seq=st.integers(min_value=0, max_value=2**32 - 1))
def test_random_bytes_raise_only_bad_reply(data: bytes, seq: int) -> None:
    with contextlib.suppress(BadReply):
        parse_counters_untrusted(data, seq, {})


def _filter(
    fake: FakeNft, read: Callable[[str], dict[str, int]], clock: list[float]
) -> KernelFilter:
    jobs: list[Callable[[], None]] = []
    kf = KernelFilter.start(
        FilterSpec("acme", 51820),
        fake,
        which=lambda _: "/usr/sbin/nft",
        clock=lambda: clock[0],
        spawn=jobs.append,
        read=read,
    )
    assert kf is not None
    kf.jobs = jobs  # type: ignore[attr-defined]
    return kf


def test_a_status_reads_in_process_and_spawns_no_nft() -> None:
    fake, clock, tables = FakeNft(), [10.0], []

    def read(table: str) -> dict[str, int]:
        tables.append(table)
        return {"bad_shape": 4}

    kf = _filter(fake, read, clock)
    st1 = kf.status()
    assert st1 is not None and st1.drops["kernel.bad_shape"] == 4  # read at once
    clock[0] += 0.5
    kf.status()
    clock[0] += 0.6
    kf.status()
    assert tables == ["lanspan_acme_51820"] * 2  # at most once a second
    assert kf.jobs == []  # type: ignore[attr-defined]
    assert not [a for a, _ in fake.calls if a[1:3] == ["-j", "list"]]


def test_a_failing_in_process_read_falls_back_to_nft(caplog: pytest.LogCaptureFixture) -> None:
    fake, clock = FakeNft(), [10.0]

    def read(table: str) -> dict[str, int]:
        raise OSError(93, "Protocol not supported")

    kf = _filter(fake, read, clock)
    fake.counters = {"bad_shape": 2}
    kf.status()
    assert len(kf.jobs) == 1  # type: ignore[attr-defined]
    kf.jobs.pop()()  # type: ignore[attr-defined]
    st1 = kf.status()
    assert st1 is not None and st1.drops["kernel.bad_shape"] == 2
    assert sum("over netlink" in r.getMessage() for r in caplog.records) == 1
