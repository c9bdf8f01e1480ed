"""`lanspan check | genkey | pubkey` driven through click's CliRunner."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from lanspan.config.commands import check, genkey, pubkey
from lanspan.config.keys import decode_key, encode_key, load_private_key, public_key

EXAMPLE = Path(__file__).parent.parent / "examples" / "network.toml"
# RFC 7748 section 6.1
RFC_PRIV = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC_PUB = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def run(cmd: object, args: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cmd, args, input=stdin)  # type: ignore[arg-type]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.stdout, result.stderr


def test_check_valid_file_prints_summary() -> None:
    code, out, err = run(check, [str(EXAMPLE)])
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith('network "acme": UDP port 51820, cipher aesgcm, 2 segment(s)')
    assert any(
        line.split()[:3] == ["lan", "10", "10"] and "198.18.10.0/24" in line for line in lines
    )
    assert any(line.split()[:3] == ["gra-hv1", "gra", "198.19.1.2:51820"] for line in lines)
    assert any("uplink:trunk" in line for line in lines)
    assert any(
        line.split()[:4] == ["gra-hv1", "uplink", "trunk", "lan(untagged),api"] for line in lines
    )
    assert lines[-1] == f"{EXAMPLE}: ok"
    assert len(lines) < 40  # one screen


def test_check_invalid_lists_every_error_on_stderr(tmp_path: Path) -> None:
    text = (
        EXAMPLE.read_text()
        .replace("vlan = 11", "vlan = 10")
        .replace('"198.19.2.2:51820"', '"198.19.2.2"')
    )
    p = tmp_path / "net.toml"
    p.write_text(text)
    code, out, err = run(check, [str(p)])
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert f'{p}: segment "api" vlan: 10 is already used by segment "lan"' in lines
    assert (
        f'{p}: node "rbx-db1" endpoints[0]: "198.19.2.2" has no port — write '
        '"198.19.2.2:51820" or "[fd00::1]:51820"'
    ) in lines
    assert lines[-1] == f"{p}: {len(lines) - 1} errors"
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "toml", "empty"])
def test_check_bad_files_never_traceback(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "net.toml"
    expected = {
        "missing": "no such file",
        "directory": "is a directory, not a network file",
        "binary": "line 1, column 1: byte 0xff is not UTF-8 — save the file as UTF-8 text",
        "toml": "line 1, column 5: invalid TOML: Invalid value",
        "empty": 'missing the [network] table — add [network] with name = "..."',
    }[kind]
    if kind == "directory":
        p.mkdir()
    elif kind == "binary":
        p.write_bytes(b"\xff\xfe\x00garbage")
    elif kind == "toml":
        p.write_text("a = = 1\n")
    elif kind == "empty":
        p.write_text("")
    code, out, err = run(check, [str(p)])
    assert (code, out) == (1, "")
    assert err == f"{p}: {expected}\n{p}: 1 error\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_check_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "net.toml"
    p.write_text(EXAMPLE.read_text())
    p.chmod(0)
    code, _, err = run(check, [str(p)])
    assert code == 1
    assert err.startswith(f"{p}: cannot be read: permission denied")


def test_genkey_stdout() -> None:
    code, out, err = run(genkey, [])
    assert code == 0 and err == ""
    assert len(decode_key(out)) == 32
    _, out2, _ = run(genkey, [])
    assert out2 != out


def test_genkey_out_creates_0600_and_prints_public(tmp_path: Path) -> None:
    p = tmp_path / "node.key"
    old = os.umask(0)
    try:
        code, out, err = run(genkey, ["--out", str(p)])
    finally:
        os.umask(old)
    assert code == 0
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    private = load_private_key(p)
    assert out.strip() == encode_key(public_key(private))
    assert str(p) in err


def test_genkey_refuses_overwrite_without_force(tmp_path: Path) -> None:
    p = tmp_path / "node.key"
    p.write_text("keep me")
    code, out, err = run(genkey, ["--out", str(p)])
    assert (code, out) == (1, "")
    assert err == f"{p} already exists: not overwriting it (use --force to replace it)\n"
    assert p.read_text() == "keep me"
    p.chmod(0o644)
    code, out, _ = run(genkey, ["--out", str(p), "--force"])
    assert code == 0
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert encode_key(public_key(load_private_key(p))) == out.strip()


def test_genkey_into_missing_directory(tmp_path: Path) -> None:
    p = tmp_path / "no" / "such" / "k"
    code, _, err = run(genkey, ["--out", str(p)])
    assert code == 1
    assert err == f"cannot write {p}: No such file or directory\n"


def test_pubkey_rfc7748_vector() -> None:
    code, out, err = run(pubkey, [], stdin=(encode_key(RFC_PRIV) + "\n").encode())
    assert (code, out, err) == (0, encode_key(RFC_PUB) + "\n", "")


def test_genkey_pubkey_pipeline() -> None:
    _, private, _ = run(genkey, [])
    code, out, _ = run(pubkey, [], stdin=private.encode())
    assert code == 0
    assert decode_key(out) == public_key(decode_key(private))


@pytest.mark.parametrize(
    ("stdin", "why"),
    [
        (b"", "the key is empty"),
        (b"hello world", "not valid base64"),
        (b"\xff\xfe", "the input contains non-ASCII bytes"),
        (b"QUFB\n", "decodes to 3 bytes, a key is 32"),
        (b"A" * 5000, "the input is far too long to be a key"),
    ],
)
def test_pubkey_bad_input(stdin: bytes, why: str) -> None:
    code, out, err = run(pubkey, [], stdin=stdin)
    assert (code, out) == (1, "")
    assert err.startswith(f"stdin is not a private key: {why}")
    assert "Traceback" not in err


def test_check_permission_denied_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # runs as root too: the loader's open() is made to fail as it would for a user
    def denied(*_args: object, **_kwargs: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("lanspan.config.load.open", denied, raising=False)
    p = tmp_path / "net.toml"
    code, _, err = run(check, [str(p)])
    assert code == 1
    assert err == f"{p}: cannot be read: permission denied\n{p}: 1 error\n"


def test_check_golden_bad_file() -> None:
    """tests/data/config/bad.toml holds one of nearly every mistake; all are reported."""
    data = Path(__file__).parent / "data" / "config"
    code, out, err = run(check, [str(data / "bad.toml")])
    assert (code, out) == (1, "")
    got = err.replace(str(data / "bad.toml"), "bad.toml")
    assert got == (data / "bad.expected").read_text()
