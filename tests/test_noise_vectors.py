"""Run every Noise test vector in ../shared/vectors/noise/ whose protocol we implement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lanspan.errors import BadPacket
from lanspan.noise import CipherState, HandshakeState, ProtocolName

VECTOR_DIR = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "noise"


def _load(directory: Path = VECTOR_DIR) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        vectors = data["vectors"] if isinstance(data, dict) else data
        for i, vector in enumerate(vectors):
            out.append(
                (f"{path.name}#{i}:{vector.get('protocol_name', vector.get('name'))}", vector)
            )
    return out


def _supported(vector: dict[str, Any]) -> bool:
    name = vector.get("protocol_name")
    if not isinstance(name, str) or vector.get("fail"):
        return False
    try:
        ProtocolName.parse(name)
    except ValueError:
        return False
    return True


VECTORS = _load()
SUPPORTED = [(vid, v) for vid, v in VECTORS if _supported(v)]


def _opt(vector: dict[str, Any], key: str) -> bytes | None:
    value = vector.get(key)
    return bytes.fromhex(value) if isinstance(value, str) else None


def _side(vector: dict[str, Any], prefix: str, initiator: bool) -> HandshakeState:
    return HandshakeState(
        vector["protocol_name"],
        initiator=initiator,
        prologue=bytes.fromhex(vector.get(f"{prefix}_prologue", "")),
        static_private=_opt(vector, f"{prefix}_static"),
        remote_static=_opt(vector, f"{prefix}_remote_static"),
        ephemeral_private=_opt(vector, f"{prefix}_ephemeral"),
        remote_ephemeral=_opt(vector, f"{prefix}_remote_ephemeral"),
        psks=[bytes.fromhex(p) for p in vector.get(f"{prefix}_psks", [])],
    )


def test_vectors_present_and_required_protocols_covered() -> None:
    names = {v["protocol_name"] for _, v in SUPPORTED}
    assert SUPPORTED, f"no supported Noise vector found in {VECTOR_DIR}"
    for required in (
        "Noise_IK_25519_ChaChaPoly_BLAKE2s",
        "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s",
        "Noise_IK_25519_AESGCM_BLAKE2s",
        "Noise_IKpsk2_25519_AESGCM_BLAKE2s",
    ):
        assert required in names


@pytest.mark.parametrize(("vid", "vector"), SUPPORTED, ids=[vid for vid, _ in SUPPORTED])
def test_vector(vid: str, vector: dict[str, Any]) -> None:
    _run(vid, vector)


def _run(vid: str, vector: dict[str, Any]) -> None:
    """Run one vector; fields the format marks optional (prologue, psks, keys, the
    handshake hash) are checked when present and never required."""
    init = _side(vector, "init", True)
    resp = _side(vector, "resp", False)
    n_handshake = len(init.protocol.pattern.messages)
    messages = vector["messages"]
    assert len(messages) >= n_handshake
    ran = 0
    for i, msg in enumerate(messages[:n_handshake]):
        sender, receiver = (init, resp) if i % 2 == 0 else (resp, init)
        payload = bytes.fromhex(msg["payload"])
        ciphertext = sender.write_message(payload)
        assert ciphertext.hex() == msg["ciphertext"], f"{vid}: handshake message {i}"
        assert receiver.read_message_untrusted(ciphertext) == payload
        ran += 1
    assert init.complete and resp.complete
    expected_hash = vector.get("handshake_hash")
    if expected_hash is not None:
        assert init.handshake_hash.hex() == expected_hash
        assert resp.handshake_hash.hex() == expected_hash
    assert init.handshake_hash == resp.handshake_hash
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    # Transport messages keep alternating initiator/responder as the handshake did.
    for i, msg in enumerate(messages[n_handshake:], start=n_handshake):
        pairs: tuple[CipherState, CipherState] = (
            (i_send, r_recv) if i % 2 == 0 else (r_send, i_recv)
        )
        payload = bytes.fromhex(msg["payload"])
        ciphertext = pairs[0].encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == msg["ciphertext"], f"{vid}: transport message {i}"
        assert pairs[1].decrypt_with_ad_untrusted(b"", ciphertext) == payload
        ran += 1
    assert ran == len(messages)


def test_tampered_handshake_message_is_bad_packet() -> None:
    vector = next(v for _, v in SUPPORTED if v["protocol_name"].startswith("Noise_IKpsk2"))
    init = _side(vector, "init", True)
    resp = _side(vector, "resp", False)
    first = bytearray(init.write_message(b"hello"))
    first[40] ^= 1
    with pytest.raises(BadPacket):
        resp.read_message_untrusted(bytes(first))


def test_wrong_psk_fails_on_second_message() -> None:
    vector = next(v for _, v in SUPPORTED if v["protocol_name"].startswith("Noise_IKpsk2"))
    init = _side(vector, "init", True)
    resp = _side(vector, "resp", False)
    resp.psks = [bytes(32)]
    resp.read_message_untrusted(init.write_message(b""))
    with pytest.raises(BadPacket, match=r"session\.noise_bad_auth"):
        init.read_message_untrusted(resp.write_message(b""))


def test_vector_file_without_optional_fields(tmp_path: Path) -> None:
    """The Noise test-vector format makes handshake_hash (and prologue, psks) optional:
    a file without them is run, not a KeyError."""
    _, vector = next((vid, v) for vid, v in SUPPORTED if v["protocol_name"].startswith("Noise_IK_"))
    stripped = {k: v for k, v in vector.items() if k != "handshake_hash"}
    stripped["messages"] = [dict(m) for m in vector["messages"]]
    assert "handshake_hash" not in stripped
    (tmp_path / "synthetic.json").write_text(json.dumps({"vectors": [stripped]}))
    (tmp_path / "bare-list.json").write_text(json.dumps([stripped]))
    loaded = _load(tmp_path)
    assert len(loaded) == 2 and all(_supported(v) for _, v in loaded)
    for vid, v in loaded:
        _run(vid, v)
    # It still checks what it is given: a wrong ciphertext fails.
    broken = json.loads(json.dumps(stripped))
    first = broken["messages"][0]["ciphertext"]
    broken["messages"][0]["ciphertext"] = ("0" if first[0] != "0" else "1") + first[1:]
    with pytest.raises(AssertionError):
        _run("broken", broken)
