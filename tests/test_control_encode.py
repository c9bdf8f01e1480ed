"""The control server's encoder (orjson, peers written field by field) says what `to_json`
and `json` say: the same document, parsed, for any status; what orjson refuses falls
back to `json`."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing

from hypothesis import given, settings
from hypothesis import strategies as st

from lanspan.control.document import status_encodable, to_json
from lanspan.control.server import _encode, handle_request
from lanspan.node import status as s

floats = st.floats(allow_nan=True, allow_infinity=True) | st.none()
counters = st.integers(min_value=0, max_value=2**64 - 1)
text = st.text(max_size=12)  # any code point: orjson writes UTF-8 where json escapes

paths = st.builds(
    s.PathStatus, text, st.sampled_from(["up", "down"]), floats, st.floats(), st.booleans(),
    st.booleans(),
)  # fmt: skip
peer_segments = st.builds(
    s.PeerSegment, text, st.sampled_from(["kernel_vxlan", "mesh"]), text | st.none()
)
peers = st.builds(
    s.PeerStatus, text, text, st.sampled_from(["up", "handshaking", "down"]), text | st.none(),
    text | st.none(), floats, floats, floats, counters, counters, counters, counters,
    st.lists(paths, max_size=4).map(tuple), st.lists(peer_segments, max_size=3).map(tuple),
)  # fmt: skip
counts = st.dictionaries(text, counters, max_size=4).map(s.Counts.of)
statuses = st.builds(
    s.NodeStatus, text, text, text, st.integers(1, 65535), st.floats(0, 1e9),
    st.lists(st.builds(s.SegmentStatus, text, st.integers(1, 4094), st.integers(1, 2**24 - 1),
                       st.integers(576, 9000), st.integers(0, 10**6)), max_size=2).map(tuple),
    st.just(()), st.lists(peers, max_size=5).map(tuple), counts, counts,
    st.none() | st.builds(s.UdpStatus, st.booleans(), st.booleans()),
)  # fmt: skip


def finite(value: object) -> object:
    """`to_json`'s document as JSON carries it: NaN and infinities are null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


@given(statuses)
@settings(max_examples=300, deadline=None)
def test_the_encoded_status_is_to_jsons_document(status: s.NodeStatus) -> None:
    line = _encode({"ok": True, "result": status_encodable(status)})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"ok": True, "result": finite(to_json(status))}


def leaves(hint: object) -> set[object]:
    """The types a field annotation can hold, tuples and unions opened."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return {type(a) for a in typing.get_args(hint)}
    if origin in (typing.Union, types.UnionType, tuple):
        return {t for a in typing.get_args(hint) if a is not Ellipsis for t in leaves(a)}
    return {hint}


def test_peers_hold_only_what_is_written_field_by_field_as_to_json_writes_it() -> None:
    # a Counts, a location or an optional-None field inside PeerStatus would be written
    # differently by orjson than by to_json: status_encodable's promise would break
    plain = {str, int, float, bool, type(None)}
    seen, todo = set(), [s.PeerStatus]
    while todo:
        cls = todo.pop()
        seen.add(cls)
        for f in dataclasses.fields(cls):
            for t in leaves(typing.get_type_hints(cls)[f.name]):
                if t not in plain:
                    assert t in (s.PathStatus, s.PeerSegment), f"{cls.__name__}.{f.name}: {t}"
                    if t not in seen:
                        todo.append(t)  # type: ignore[arg-type]
    assert seen == {s.PeerStatus, s.PathStatus, s.PeerSegment}


def test_what_orjson_refuses_is_written_by_json() -> None:
    big = {"ok": True, "result": {"n": 2**70, "s": "\ud800"}}
    assert json.loads(_encode(big)) == {"ok": True, "result": {"n": 2**70, "s": "\ud800"}}


def test_a_status_request_answers_with_the_peers_written_in_full() -> None:
    peer = s.PeerStatus(
        "b", "k", "up", "198.18.0.2:51820", None, 1.5, 0.25, 0.0, 1, 2, 3, 4,
        (s.PathStatus("198.18.0.2:51820", "up", 0.25, 0.0, True, False),),
        (s.PeerSegment("lan", "mesh"),),
    )  # fmt: skip
    node = s.NodeStatus("a", "t", "k", 51820, 1.0, (), (), (peer,), s.Counts(), s.Counts())

    class Source:
        def status(self) -> s.NodeStatus:
            return node

    reply = handle_request(b'{"op": "status"}', Source())  # type: ignore[arg-type]
    doc = json.loads(_encode(reply))["result"]
    assert doc["peers"] == [to_json(peer)]
    assert doc["peers"][0]["paths"][0]["endpoint"] == "198.18.0.2:51820"
    assert "udp" not in doc  # an optional field left out, as to_json does
