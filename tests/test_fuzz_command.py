"""bench/fuzz: a short fixed-seed run in CI, and planted bugs its oracles must catch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lanspan.errors import BadPacket
from lanspan.switch.core import Switch

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import fuzzlib  # noqa: E402


@pytest.fixture(scope="module")
def ci_run() -> dict[str, object]:
    """The CI run: `bench/fuzz --inputs 2000 --seed 1 --json`, as a command."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "fuzz"), "--inputs", "2000", "--seed", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(doc, dict)
    doc["_stderr"] = out.stderr
    doc["_rc"] = out.returncode
    return doc


def test_ci_run_gives_every_target_inputs(ci_run: dict[str, object]) -> None:
    targets = ci_run["targets"]
    assert isinstance(targets, dict)
    assert set(targets) == set(fuzzlib.TARGETS)
    assert all(t["inputs"] > 0 for t in targets.values())
    assert ci_run["inputs"] == 2000 == sum(t["inputs"] for t in targets.values())
    assert ci_run["uncovered_untrusted"] == []
    assert ci_run["failures"] == sum(t["failures"] for t in targets.values())


def test_ci_run_has_no_failures(ci_run: dict[str, object]) -> None:
    assert ci_run["failures"] == 0, ci_run["_stderr"]
    assert ci_run["_rc"] == 0


def test_every_untrusted_function_is_driven_by_a_target() -> None:
    found = fuzzlib.untrusted_functions()
    assert "lanspan.wire.messages.parse_untrusted" in found
    assert "lanspan.noise.handshake.HandshakeState.read_message_untrusted" in found
    assert len(found) >= 16
    covered = {c for t in fuzzlib._targets() for c in t.covers}
    assert found <= covered, found - covered


def _fake_parser(data: bytes) -> object:
    if len(data) > 40:
        raise ValueError("planted: a parser that raises something else than BadPacket")
    if len(data) == 13:
        raise BadPacket("Not A Reason")
    raise BadPacket("fake.short")


def test_a_planted_parser_bug_is_reported_with_a_reproducer_that_replays() -> None:
    target = fuzzlib.ParserTarget("fake.parser", (), _fake_parser, lambda: [bytes(60)])
    report = fuzzlib.run(300, 1, targets=[target])
    kinds = {f.kind: f for f in report.failures}
    assert set(kinds) == {"exception", "reason"}
    assert report.per_target["fake.parser"][0] == 300
    bug = kinds["exception"]
    assert "ValueError: planted" in bug.message and bug.count > 1
    assert len(bytes.fromhex(bug.reproducer)) > 40
    replayed = fuzzlib.replay("fake.parser", bug.reproducer, targets=[target])
    assert replayed is not None and "ValueError" in replayed
    assert fuzzlib.replay("fake.parser", "00", targets=[target]) is None
    assert json.loads(json.dumps(report.to_json()))["failures"] == report.failure_count


def _node_target() -> fuzzlib.Target:
    return fuzzlib.NodeTarget("node.frames", (fuzzlib.OP_FRAME,))


def _forging(
    monkeypatch: pytest.MonkeyPatch, forge: fuzzlib.Callable[[str, bytes], list[tuple[str, bytes]]]
) -> None:
    """Make the core's outputs, as the fuzzer sees them, carry extra writes."""
    real = fuzzlib.take_outputs

    def forged(core: fuzzlib.NodeCore, now: float) -> fuzzlib.Outputs:
        out = real(core, now)
        if core._me.name == "na":
            out.writes += [w for port, data in out.writes for w in forge(port, data)]
        return out

    monkeypatch.setattr(fuzzlib, "take_outputs", forged)


def test_a_planted_frame_across_segments_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    _forging(monkeypatch, lambda port, data: [("pb", data)] if port == "pa" else [])
    report = fuzzlib.run(300, 1, targets=[_node_target()])
    leaks = [f for f in report.failures if f.kind == "segment"]
    assert leaks and "left na port pb on segment b" in leaks[0].message


def test_a_planted_tagged_frame_on_an_access_port_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def tag(port: str, data: bytes) -> list[tuple[str, bytes]]:
        frame = data[10:]
        return [("pa", data[:10] + frame[:12] + b"\x81\x00\x00\x14" + frame[12:])]

    _forging(monkeypatch, tag)
    report = fuzzlib.run(300, 1, targets=[_node_target()])
    assert "tag" in {f.kind for f in report.failures}


def test_a_planted_exception_in_the_core_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Switch.from_port

    def buggy(self: Switch, port: str, frame: bytes, now: float, hold: bool = False) -> object:
        if len(frame) % 7 == 3:
            raise KeyError("planted")
        return real(self, port, frame, now, hold)

    monkeypatch.setattr(Switch, "from_port", buggy)
    report = fuzzlib.run(200, 1, targets=[_node_target()])
    bug = next(f for f in report.failures if "KeyError" in f.message)
    assert bug.kind == "exception" and "from_port" in bug.where
    assert fuzzlib.replay("node.frames", bug.reproducer, targets=[_node_target()]) is not None


def test_state_over_its_cap_is_caught() -> None:
    fx = fuzzlib._Fixture()
    core = fx.cores["na"]
    assert fuzzlib.bound_violations(core) == []
    where = next(p.where for p in core._switch._ports.values() if p.name == "pa")
    core._switch._by_where[where].update((10, bytes([2, 0, 0, 0, 1, i])) for i in range(9))
    core._paths["nb"].paths += [
        fuzzlib.node_paths.Path((f"198.18.9.{i}", 1), configured=False) for i in range(5)
    ]
    # a keypair left in the index map after its peer let it go (a leak), and one peer
    # holding more than current + previous + offered ones (1 + 2 x _MAX_NEXT)
    st = core._sessions
    held = next(kp for p in st._peers.values() for kp in p.keypairs())
    st._keypairs[0xDEAD] = held
    peer = st._peers["nb"]
    peer.nexts = [held] * 3
    peer.previous = [held] * 4
    bad = fuzzlib.bound_violations(core)
    assert any(b.startswith("macs: 9 MACs behind port:pa, cap 8") for b in bad), bad
    assert any(b.startswith("paths: 5 learned paths to nb") for b in bad), bad
    assert "session: 1 keypairs no peer holds" in bad, bad
    assert any(b.startswith("session: 8 keypairs for nb") for b in bad), bad


def test_a_run_is_deterministic_for_a_seed() -> None:
    only = ["parse.payload", "node.mixed", "metrics.request"]
    a = fuzzlib.run(240, 7, only=only, episode=40)
    b = fuzzlib.run(240, 7, only=only, episode=40)
    assert a.per_target == b.per_target
    assert [f.to_json() for f in a.failures] == [f.to_json() for f in b.failures]


@pytest.mark.parametrize(
    ("target", "reproducer"),
    [
        # vnet header valid for a 64 KiB frame (hdr_len 65 535): the trunk tag push raised
        ("parse.vnet_validate", "0000ffff000000000000ffff0000"),
        # a local port's vnet header with csum_start < 4 on a frame losing its tag: raised
        (
            "node.frames",
            "0002040101040000a8050000000070ecb77c5a19ccac539546ce810070004ecd98311cb1",
        ),
        # a member's sealed datagrams from ever new source addresses (learned paths): a
        # probe of every path of the peer per datagram, 7 outstanding on one (seed 20)
        (
            "node.sealed",
            (
                "02000103fc6e7792a20e0000000007d0000001020202010046bf6eeb802224662790adb3461a5963b5ef"
                "67a22f8520b6f6d635a420764c6167178c3802c94eb397362f45a026070a89182a832af9bbb897cf98da"
                "d66730b5ec62b801aa5a98cfe360d78fcf4680e25bf07ce01ccfafac02db9a77085cc3e5c5a60a7da0a9"
                "efbdd43a051eca8f2da204913643a758d1c64930821de140416d9f54ddcd5b2d6380a04c6c714f25b2fb"
                "fcaef899ae48b8723d500baf7d37f9e579901efdc1.05010001045300800000000000000002011ec2a97"
                "b9ebcad77a563b290.020201000800000000001e0001005e0000010200000000030800.0000070100000"
                "0000000000000002c9ef9cbeaaad2db3d23e4590806e2e3659a.020100035caf1b15da0b00000000000a"
                "0000032241bf771449de3240728feb3fdeaeb18701d6c72136feb7312d3d3aede06080fa7d3c50f3f173"
                "3c1b946babe275784d5fd8be97eae32648713c3b3e7dcd777d92a210b22fe6a928ada4d7e91b51d316e9"
                "93e2e2489bd0cbab1bde8fa70fba227eb4e16d9eb895e44a6f9d97.04010004097f00bdbb02000000000"
                "1f0d1578694de81000185cde0e84ef2fa7670fa0103e804390f7f.02010000080000ff00000000020000"
                "00.040000010003012fc902aa000000010200000000a0810000dfe81f7ed75e516999160103e803f64cf"
                "d.04010101000301352ad2db3d23e4592869061ef8c781000162ae29f89295188b21000103da019f24b0"
                ".00000600a805cefd2ed40200000000020806eeb2b33f.020000021c0a20a5150c32.000103018a5ed06"
                "b505064ddf93ad2db3d23e4590200000000020806.02000000800000000000000004026e611f0d47202f"
                "ebc25b0849e2110b5071f7bc40201dd5679d479ed30949d5c4fbf731c9de4b8632c3eb6c7dc2155e77b0"
                "4fe45a8825a37deaf1081c43e6384dfe.0500010101aa0080000000000000000103f0405d733827d4c9a"
                "1a9866c.05010001024d010800000000000000fcd1c4c058650200000000028100101488a8000a910050"
                "21b058159b3b28f43b51c6204a30bd10dcde5039dff9b534368fd46ac9e67c710fad9b4ca1297458f725"
                "0047988babf391d5fc9b6539e0a9bc14737e87e2f22187f705d35df386f28923122ddab3c4e023aae5cb"
                "dfd5edabee111a4fcf80581a52bc722a407553c52e7155bcc3270889f43b2165ea96c9cf2e711702b815"
                "bef23924694c27ca14d2a66d44042faed9972334c4ed49acf6ed2dd06dec1d0b940b6cda48445d9d166d"
                "cbd520d2d95eac8d896318cc15447324a9da320eb96e20510fae708c84cf0d14b74648b375f7872cf466"
                "f7adbe811ef739a8dede6b2f54ebd4891c8341752d164c24c43b0ca9a79ad42c4e28bddb070b217c3b9f"
                "4105d7aa12f97de583b13d0a812e696b66a41afe11c018eb6e3926a1fe6ed882dd7aab2b55a371726b7f"
                "afc804acfcf1a2165666bff97e7a09cbb2fbba4de00f10dec32c6e5b8b45ef3470e5092f5d1b9de52d57"
                "d6fd10ae0f48244de24651ea291934ac4d2077f14428c068b7a0db22b51182830b39cc3c2eca3ddd3c26"
                "269ce789cf7355e1828c67d7bb835201df3e8139507cec475f313455d81cb9285456f00971cfeae77d27"
                "64fdfce15696cc4846f193a69e24.020101034f39da957371.0202010101c8b6c8080000009b256e00f6"
                "d42e84725cd2db3d23e459810017ac810061602d0448dfb1edcc92976606eab045b54fdd21ff4d94bb83"
                "fb25c701f279632f95a8502f0ff471d4ca320bdc3a.0201000008000000000063001840f590357d02000"
                "0000003f8efb305d0df.05000002045000080000000000140002ffffffff0302000100000281008e94f2"
                "e73813be9511765e42e7071ae836ef70a582d6c861911600a7142e651d306f5f0520a472c7.020001008"
                "0000000000000000500.020001029e603daf48523a.0201000273a702154f20fb.020001000800000000"
                "0000000728590e6a3301005e00000188a8e087ba2d.0202000331012ae56080000000000000000502026"
                "e632f9ca67b286e616e616e616e616e616e616e616e616e616e616e616e616e616e616e616e616e616e6"
                "16e616e61ceadd22c.02010003a1a913d2f3b62ada9bd7449fe0842cb3a1d9f0f1565ad6f4a197ae253a"
                "e0cd0c7bd0765f6c260a5b020804820717622fb29f6c0cf5d46175f20b551ed37b27d862cfc009843585"
                "f70d510f394a03f31fd026730482f9ff5aa955926e0e6a3fd87e.0001050060661c80574301005e00000"
                "187c00a8e537f58909d3b2ea58f9df02282d9e9992b1aeee1d8d5f3f6af2d.0201010080000000c40004"
                "000502026e615e084605026e6165fbe056f3c6abf4b2452ee274187c652af68382.02000103b344d2364"
                "280000000000000000502027a7adc719f71026e624a47e2b5.0200010008000000000000007e78c8353e"
                "9e64d0d21aa1d69100c3e93f018738f5e19e83d0703396b3be828406acdef252f6dbd94d9b5469c95c87"
                "4f5b37a527fc144e622d08e2bdaf946be7f2401287f8c48ba2a5211d8cbec8647931241a94d969d5e927"
                "76a85c84833e8650d0bc73257342f0c61dbc0eddb59e54dd084afed72a631a3fc3e06eec16780c903123"
                "99133e0b64528d5ff05f9fff4c424edc155d6c24f307af12580d996b5560cb3f412f8a50d06245da5f89"
                "10fa1a29265414395afba40e880c1bcde897870ecc2797aee0b011719280e3e43a6947af78f8c810e597"
                "352faff38812758bef022491f0487974cfcdd00aad12299b8a0fb2e6489de2044b0b47a1431d544820bb"
                "29f4d26ffa5a06342f1dd108635718a8a727172deeac34e5616b4fbf7643a860bd45a71f9d8af63732e2"
                "33de04422b316c9eb484135e0b6df2f4a1400cce8f3f0457cda219ddc2bcf407e9284763e045d664778a"
                "1c1ac602c63ff78af7fd867cd50e54a463cc8ea78d5f52619967b8b3727892dc0b8b649dbd5b68d77086"
                "7cd23a961a11854d271a2fc3205f4f4fd0f75fafb8ea8bf8cfcbf449744643f8b7858cd22eb4a2eba235"
                "41106a6f582a331008efb2506ad7d1015154b442331d505e11e5fad9fab170fe87afad6dfa0322c6469d"
                "8fd05a029bff770036821d94e53e1ce82b5ec215699f22584b8b2e15024a90a75329a5e026a9dd153a6b"
                "4ca02492e87aa0c37e57c4faa499e3f2aff79031b3fe8807f30a33792ba71c7cb881894e3b05541446bd"
                "40ba77ee4d6c9960ff964403c22b681866ec102ffd1b8719b24d2fd134b28fd6beb7dc7c8cd1a113642b"
                "1e24f526a48e028536848f479db4e43e5d7edeb4603c9068ffcfc75a81f3085f32cc81f3d3dfc46da688"
                "513bfdb5a4cac64bc2f475a2fe9e4e31e83620a5c8bc6d55e813d31060c712f256f872e10bc2ca6b213f"
                "a5a40ab399b8cdae76c082de9ec0a81b6a7cb532c40024a68cd1353ee565cd4c67c58f769940c092f28a"
                "ce2b3862ada2c907c227acc18f1f486877083b92c13341b62690f64d3488f2e5434bd50c165c79f0bde5"
                "c987e945408da787f4164003429bc57718cd34778c18be7e5fe93e61e49e158643207d9d534240de3ae4"
                "ca56f7ef4aa5e0287c60711537db5288cc233b6be5c3615ffaef0f9af116ea67dcc7a9b1f5bd4d570971"
                "92e88f5cc185afe3d57b93d96bd1393216988597b97606035ae58c1c75197dcf6f9508f1bd9e0f9d443c"
                "ab0331c186341eaaa3769db5c806be8e0c6a637d5bc7c01f68cdd07894326b5eda3cbc7d8b2d17d69f47"
                "f4e5a5233a81c1462e6c988d328a6f127e4da08ebde4dcc371e9e6d95dec7bf9a86ff2096bccd6f1d985"
                "bcf079416f3459ec529146835b5d46f30bbf797221ff0b2767437fba3d7237c14cbe5242bc0b8cd6ca44"
                "87bc03ff9943ebb6b3124a272485bf59f4439d7c8fe89988ac381246ecfa98f07f3eb8d81ee18fd46555"
                "5cbe1ed531b675b644a57b773ebd1ca5f6e7c7a3dba2d79ca0db2afa0e3ccf688934076780df9a1c0680"
                "cede040fdeab5d6c5220ab66af1871f3e2d98547156d53fc903afe425f6fbb7225af6b32343fa395e560"
                "047e18cbaa43730f389bdbdd78e4c69cf2b47722bc46a985e8afac81015990f217ad264cd2c2e3bc2d56"
                "9dd516aa4ef471c3aff60c0eeac7ac5a7077aeef03ee1bd5f5945dd16281a953601a30d8f5b0e4c4eb94"
                "1d03e4d1bf301b709730be46614efa62eb271f906b0cf0f7c20ad639b3e254facc09dc794f77a4575fb2"
                "77b283d8cc45cfd39a1f73d17cf4b744ce2b65dcf624696e7e29d6fb76d061a8391cef5898b4b6ce02f6"
                "ee10281fb242ebbf132c0f4065abb6184a38eb6cb1fe7c2f7bfc53682edae8c59b02fd2c0ebbf301f3f7"
                "a6396d9f15b98792ac163c601510869f5c56bd5a1b46cd6e3fd5f1575fc9b5690a20ede07b7ee0836ac7"
                "568265665aab26011743c195577e46f945a0c2d1c24e68031d5cd1381d326c5d8dc963258284763fe429"
                "0dad8d9e2e95b6c8b3c3b6cc72c7d4dc6efa06ce5cf0fa1fef8dfe769ef7e8872cd5c5aa668f51aff544"
                "76062c6db10ea2d1410d6ab7a3af40.02010000080000000007d000d2db3d23e459020000000003c277."
                "02010000.02000002c7cf245a555a2b.020100000800000005981700b23b45546a400200000000025be6"
                ".040201040003017e5c0200000000a001005e0000018100002ece1e65430ac3f57a500001e30339b6d5."
                "020201026b3235375af1f1.02020001037fced8d8179eeb0f2b80000000000000000503026e61d91c01a"
                "8027a7a7946ffe8286e616e616e616e616e616e616e616e616e616e616e616e616e616e616e616e616e6"
                "16e616e616e611192104b.02000102fb158ad109a433.0201010313fd68d4f7800000000000000005020"
                "26e614423e6d1027a7ac9fdd4a3.02010000080000000007d0002801b8461541b23b45546a4088b5e7d9"
                "338e995860756cc08bac19d8f66b8cebb4e2b23a919cb63a4895bb1381a052ef672e649c25a6046ab88d"
                ".0201010080000000000000000501027a7afc7a84da.02000100080000000000000002000000000302aa"
                "0000000181000fffd61c64d0bd6c.020201000800000000001e000200000000030200000000a081000ca"
                "d4dda82669074d4074b5f1bfdd735cb0dbb15383c7d52cb57a111190aca20ac8621f99b0e50590268670"
                "fe60dbd4906ee.020001008000000000000000020542550f2a92085242f2d3ca42.0400010400030170b"
                "9ffffffffffff020000000003810000df82a032c5cd50a868bd01004001ee6a07.0201000026b2f311e5"
                "2044352c79c36fb2b7dd370aadb2343717468cef11ab8f254cdfdbe5e3c16a1396cd11974e30be94ea33"
                "79e8cc69c02a822418ad2164d2497ed47de278648b8842da7fe7ba648eb538d82c010000004d5d3f1941"
                "e566ac4e280c063ea21ee6be35528e49bd9df52d73cb10afbe46cb00209091f286492945e19b79633163"
                "734a66c4f346773b97991c76e084c1fc9dcf5c8035.04000102080d006c7dd2db3d23e45902000000000"
                "3080000fdbf162afb2beda2feda0103e80484a2ea.020101000800000000000000020000000001285010"
                "061a9786dd96cb2187fda3aee820d12758ae713b27dba0242f538fde7233da92fa.05000100009f01800"
                "00000000000000504026e6102f66f45026e6371db6b0d286e616e616e616e616e616e616e616e616e616"
                "e616e616e616e616e616e616e616e616e616e616e611e941bab286e616e616e616e616e616e616e616e6"
                "16e616e616e616e616e616e616e616e616e616e616e616e61817ab924.0201000355fd300a8e09000000"
                "00000a000000000000000000000002aa0000000160f23b1f1f658100900188a80357ca2ff10d251fa87b"
                "acc8a8fd7445d4006cf59154d309ec05d62e6cbbd5e891af6e6948a75385d8bdf57501d2.05020002023"
                "b0080000000000000000205aca378815f0e05c6d66de71b.0202000009000000fed4e0001af7cad94fe6"
                "2ce7f2660200000000010000000000000800.020100000b0000000000630000030001268a899a28146c9"
                "c132943b77827123a5c361ceeb25ade0ec3b3c79ca0a4b0ee261410325454f5578fb329d1d1481715cd0"
                "b70ea9ecf354e6a91ec7a04d46304751ec357be4fd8a8d25cebb024e0777962cf981f6ed0e7f26e5a2fb"
                "365ec3a093b05cd190314ac26956ed7c26ad216f7c6c7ef6a18897bd58d3a54742e714c2c8098080cc9f"
                "7c8205662f7ccb8392870da04.02000100800000000000000002052f2f5e25860c2bc8bb9f7111.02010"
                "003b577eb396f080000000007d000b23b45546a40fa13762a87b70806996565593f82fe8b8a6b8485d0d"
                "290fe33e85874662deafe0440ef6ff2464fe74ed4703250ab2d5313fcb924c5056265a58e3c0a8cbaac1"
                "13adfdea4e461ca2e78ece82c50894c346918607b4a61126a0f80e142e60cf01182fc85016019c880e62"
                "59ba6af9a85219b6d4a2cbf37226d0c114ff9a7173a73363a5b725c7cad6a406bb814246d227fa7032d2"
                "cde18bbde158c6dab60ad8a365811cac2ee4ce54a034a21ed837284bf1ec87c1fa48aabde7decbcc5327"
                "9aaeba4b76f144fb451ab83a644ea8469b468e5baae1896c6f4ed83df9a01743ddd8bd37ff811b394e52"
                "5052e93b0c261c840d9ccd4bc664ebd5b085d73f20f3d2b09f0b0e2290fabb7d967c954fb3a6b58daf1c"
                "ac5c58616a76a48d1e55347f8abcf6395378b7708a4f765b88277fc384fd80e106e5c2c97b2d911943e2"
                "d27c5f39567484b50ced3b95ab08bacc9af78b2f19bee18573bdcbdcf6603c38278c821cb7c520b5d94b"
                "f682c07630e149c9118e04181ec43093f316c187211ea50dd2c33c60ab00c21a9cc1c0e4ea74eac41bc9"
                "e25867f4bc9e1276d85c867784a554a3aa2ce656e89c913c32233a8363b6fdd526eb77f3e75c38c175ba"
                "38fa74df0852f5b126c6ff49aef138443fe411af4df9cdc1ac79019245436a5a16dbbb78dd5b78c6d8cf"
                "31a069801bf5b6dceb9df341cb7e2673f39d8e730aecaa6f8b46a03e6a9b1c7e447ca4369fa16ab81ce9"
                "f12c0f38b51df48fe8828f5974ff4d0128a7c15bbf279e7c0ac44ddc0a392d7eefb2a5cf4a283822a931"
                "16c8d52ab4fcfd6fc498626a67dbd411bfeb1f1f20ab246bce1b4f460550fc50657c1451a67b21f8028a"
                "67964fc073ceb8c5cc0186b78d7849a922ee4824f0262be7c93be97126aa7e7a50473417e128cd6cfbc1"
                "80b066b268ca61e8ef28e5707a43a6d626088ee56f0cfee809d29182d942ef09e42cc7bf5e258fe6448e"
                "50d340c648ee6876a6fe9a250cbdddc044969ea3c51ab3a8bb8dcb08aa5c530fbcb41183d471dd91c751"
                "ed3d9b042c16764f6c0dc42420c415bd61faa12b9c72e9d3a1885d4fa43cac7dd1ccfd60b8e8404bb59a"
                "9d255209636e83cf71359302363ec.04020100ffdc00f54a0200000000a00200000000a081000064a25d"
                "90b45d2c3cc897000040041b0fa4.02020000080000000000140001005e0000010200000000020806581"
                "d5f45.040001029b5400cfb2c6da106dab4e020000000002080000cdb507c7f21993ef1d280105780348"
                "eef3.0501000102230080000000000000000504286e616e616e616e616e616e616e616e616e616e616e6"
                "16e616e616e616e616e616e616e616e616e619cea1a93026e623c5a4890027a7ad9589f8e026e629e74e"
                "7fd.0201010102276090ffe25880000000000000000201e1a584ed39880461602f813b.02010103be720"
                "910230800000000000a00d2db3d23e45902000000000388a812e79078.0202010240cd4fb73f1659.050"
                "0000004d000090000000000140000000000000000000000d4848987a76926fcd029cfea8100e000c7b6a"
                "e9d2d64.000206011f480e2ec16a61619d31b23b45546a400200000000028100a00088a80b2b81007229"
                "07c2.02020100080000000007d000b23b45546a40020000000002810013e681004059018bb0091fa9320"
                "120eb9938622d678ae03e1421cc9aae422a7002ae92f353b5623661d7b831bfb21c6bdbc433ef44faa80"
                "15c8209fca18a73603c9c4e043119226b8bddc2080a0581c477c0333be09e86357cb0cc95ddd0e2d56b0"
                "9e0f96921346e7bba8fa178569b26cbd55148afcee0f8d1df979df72b65cb25c6a99d9721144793370ff"
                "c9cf4c405acf0186c580ef9ae1721570f908163e4d4d70bebb52523ecdac6037094213ef0769055b6bb1"
                "7e86cf2a9620238b413a823053247af5e13760da98bd53337a81b01cc91323d8d5de915d824a8bea9a4c"
                "1e174ca5fe8778e8bf48e9172ca5a24cfec88d8928a62b4bc9d1178bebf675dfbacf334ee12f0c53d490"
                "f0152b6650b4475f7ecce7a9eed5c03aaa5a3c47236bbb5832a1de33ba32c24925590f6cab55dd9bd187"
                "5ba60b2277f12c306b8a858e7efde3d4b4df818d7c42e8211cba66f6957787e1bfdfae18de855ca45c5f"
                "a62d138c017790ede2596c56509b12f6a531d1e5c3625f1f2f656e4d56ba99e6192da2adb48b544952a5"
                "d1f6b2f09d854cfb14c0082a3f12f07c2e52b5767f3079f7cf2d0ddf35e55e1c98bd756d3acbaa162451"
                "908ef229de605e44d4545e6b85e0d0c7f64b4359816f2a17dc679aeaf8ff64c4aba494fb285c8ed68d25"
                "85ea8fdfee4a11b5f56468270cb64101af5952ae46fff1411a22526c4dbe8b6e6848465c9de2d4c7406d"
                "bdb4ec04026c3c76282aae88ebd76812a08989ae929480c03f1ab6fb67a3ed72780117de20d8d5bd88d1"
                "471509f7e6dd3c29463746195da8676e8ad7498c45ff14e9fca7bea56df721634fbe10b9844579f24df8"
                "26b4b8bc5e2d675.02010102ede8dc7cc120d8.05020001019b00.02010003742b5e007d800000000000"
                "000004026e61da9ba57b4f78940100000051c99242a2218233cbb526cb44e9ab63fe79b9aeb4c335bcfd"
                "68000606fbcfc81abaa524ab1255a7172f1e70264a7fff2b3bf80011.0201000357e20af784800000000"
                "0000000020222eab2e2264819b716838d79.04010004aa4d00336201005e0000010200000000a0810001"
                "40ad71ba04e60c24688b01057805509a03.000007000201000000020200000000038100a0019100.0200"
                "000102b6b32048f95eda9dca427c2d7e9f0e437ba8f92a45b41044a257bbc713cb32a422acb29a2cda77"
                "98f63b2e385d0733f2ecd2270fcb94119a9e7b6c8c6a8f2f59c9335e7ecb7a3fd9152170a50c8c112a.0"
                "20200027a018682a0c6f1.020200000800000000001400ffffffffdf800000000000038100400188a800"
                "1e08003f630f222f54ef9b713cd34559c8cabc623a930dd4ad6ab16a6f89a751ac2c411481e3ca.04020"
                "10100030109b8b23b45546a402626d63cfb62810001d171284d544840a217b20103e805aea38c.020101"
                "01021bc54342163a800000000000000001011c530faf88e01b72978d9942.020100000800000000000a0"
                "0487f47c6cf3502000000000388a867406976a9782c51e108bc99d10e4c5f30073b2c05d9697a40fa13f"
                "d54cb7ee7e21340632eea0aacc41b7152033f.02020001036c4eeaab47804cd7fb080000000000000090"
                "b9901985a601005e0000011992a2e97294ddb82d475bf93b112a1a9c4093e0f7500c08970c2884734ff4"
                "86ab1d75bffa2e3085a83a4dfea24dedfb.020000035ca6b4fc390800000000000000020000000001b23"
                "b45546a40810020010806ddcbf00bbbe9aa7859af894583f781e27838671491e35cd502f7979bc7604df"
                "cffa8254c260f6ed1790dc06a8b3b88c9c00c4847f0a9923d21a29ee572be5c91babbacb4a730558eee0"
                "943614900ef3f73d1138ee1a2ab586f2c5011c1600aceae3d679a003794fe24bb3cf541f0420711df554"
                "cad7d9f74ea1eaeda7d44135951c35e39584c1a810bff419117f103c9b9c4c642429d68318c5f29d52d7"
                "0f62a9d8bfb02afe67f072176be6c38c14604e5be2ba9c2089342df02faed9c6520a8d371d8859658295"
                "f1850d5edece2fe1e65596217634b2d9926546e9420fbfc0b8ac0b4d6d7c13379fc1410733643ed658d8"
                "98403bddf1e5215fcb0d12a2da43d61cc6b468db95928ac9801855b1d186e62bc18230b422486d8f90b6"
                "423e43eebe540e06fae14c9613a2d2adfc739f979e35f2e2756e479c36eee3839bbe0608c4d1beb6ea0f"
                "b730485945f131ef9cc74155656814f45863c25d630b694f62bf8a9b5b79fcf7eea321aba21e550faa83"
                "301cdef9c1b2c07fd256ffd32a35a17214645a32569ea87add5c9c3952f216f203e5d75358b26c809b30"
                "574b3fbd712df188b4e2ee6ded5632dcb37ec63c618de4156731fd011e9fe3971009af8f24a09c62bfb1"
                "2b5c17e1960f7e3e11c41aae65247b7790f3da28550774dd91a74a75d0718262bc90bc5781281bf7b2f5"
                "a018f4f27c78291d2bfa789fad6d18912dee6bd4f5318308bd95c5288e2989e76fbbe2a08a0908ae8c19"
                "d67dbb6657c08147c19ff76bc2ff9b9a637f9c743e7983b7ec17d29b5ea93ce0a7e3a77c84e7f5c5a891"
                "790c2f714243e15d1398d8bfdd1e887015a19bbf3829f4573d694189b44e07697ec15e51160f92d1ca1d"
                "269cb3640f14c221ed2a9acc65fdce02322b7a092fba619fc10cb0db76c65fd02b12d71dbee916e111fe"
                "8fc88853ccae365aba6de82344711ff61a5df072bccf60595d4c52362c9c518e57297d5e56ed15c04862"
                "0208f27c42171746f42e5c8a1b4f45581ce5eef8fce801a747394b69f7ca7c5e1569feeb396502ebb3a5"
                "8ef2b21490515d1148dc99fd9417e2f7d4d3512c529845c077904784ee4c3b6a0681ad29b75a47c9adcb"
                "01d35e0fce1d1dd8831e6c3f41eb7d3e0c10d740beccbbfbc0a142a655218681ecef8f5f6c5b3eb61df7"
                "acbfce243ceffc176e2635edb3e2e8d944f3c7d0ce274c6589ea5ec58eebeab8f83f01a52147c198355e"
                "9a6e56145b4efe5637848428a1477fd1144edb920eb559ec03567e10f10849ac331b89740bbd3cd04316"
                "dc2fdea095afe14729c80b74e3b0f514af7e0508518c77409e199b0003cc22bf3b57624f2cfb54ef7883"
                "b59efb2369241724715d628a918a083a9636219debd9ab35d052623574b5d2a49f947515bb0903e5d951"
                "d225fa1e41ca3c089e50e769b54448dc64767f7945744386d689ac6efc6c4933fb3e44825d99306b9c3c"
                "26818cac6552d59800970c20c1997cadb667195380800b5191331c3107599fc9f1696a798d8bcd446c06"
                "8689b318e3d645690b1f072546d2126685e95ed7869f7e0757ca6ddc0b9f449b98e6a16cd632ade808fb"
                "23fbd96fbc01a262cd477fcf6b769a19da88b1e7fbd8b32a0098bfd5b2e9a5a8eeb28c75fc15fee9f498"
                "28daed21b9f9a0691235206859dfe3120eb59f7812d219ef6566fc12a95121596f2dba1ba23df3255d17"
                "78bc499f5353d064559b8521c7006b09b22ad16b717548ec73176fe98285ea285e8c48a2850f59a29cff"
                "b701608b7d286fc131c626b507b0bbc341403a2e5c69c1ff7b3cb2b4ed6a1af28aad009d3a030f78b806"
                "e1cc783fec5e3005320a9348f6d21b69a22e91996743c86dac9823a47bc3673f07bcaea1122877214a7a"
                "a33443d94357a484630c7fdf47360cefc0aa09b3eb6d49b316916174c7d8949a97ec0e5958d034fddc5."
                "050000020300010802000000001400000000000000020000000001784bff1467ab.02010003328cfa268"
                "10800000000001e000200000000020e6645f470338100c01e8100.04010002e6f700899d020000000001"
                "0200000000a008000006a64cc9652656fdb87f00057803b3ee0c"
            ),
        ),
        # a REACH_PART (a type the round-trip oracle did not know): AssertionError (seed 21)
        ("parse.control", "07e62eff00"),
        # ~1 500 nested "[" on the control socket: RecursionError out of handle_request
        ("control.request", "00" + "5b" * 1500),
        # a 5 000-digit integer on the control socket: ValueError out of json.loads
        ("control.request", "00" + "7b226f70223a" + "39" * 5000 + "7d"),
    ],
)
def test_the_bugs_the_fuzzer_found_stay_fixed(target: str, reproducer: str) -> None:
    assert fuzzlib.replay(target, reproducer) is None
