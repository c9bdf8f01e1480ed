"""Cold start at the node level (issue 10): every node starts within 200 ms of the
others, branches behind NAT (no endpoints, persistent keepalive, a NAT that lets in
only what answers what it sent), nodes not listening until they start; every pair
of guests must get frames through within 2 s of the first start."""

from __future__ import annotations

import itertools
import random

import pytest
from test_node_twocore import BCAST, Link, Net, frame, plain

from lanspan.addr import Addr
from lanspan.config import encode_key, generate_private_key, parse_network, public_key
from lanspan.node.core import NodeCore
from lanspan.node.outputs import Log, Send, Write
from lanspan.node.relays import (
    NATD_FIRST_GAP,
    REACH_FIRST_GAP,
    REACH_FLAP_LIMIT,
    REACH_INTERVAL,
    ReachGossip,
    change_interval,
    news_gap,
)
from lanspan.session import INITIATION_BURST_EXTRA
from lanspan.wire import control, vnet

GUEST_EVERY = 0.1  # each guest broadcasts (an ARP request, say) this often


def guest_mac(name: str) -> bytes:
    return bytes.fromhex("02000000") + int(name[1:]).to_bytes(2, "big")


class NatNet(Net):
    """Net whose NAT'd nodes receive only from addresses they sent to: `run_node`
    runs one node's timers and takes its outputs, `deliver` hands the link's
    datagrams to the nodes listening; `frame_through` says which guest frame
    reached whom."""

    nat: frozenset[str]
    pinholes: set[tuple[Addr, Addr]]  # (inside, outside)

    def frame_through(self, peer: str, name: str) -> None:
        raise NotImplementedError

    def run_node(self, name: str, node: NodeCore) -> None:
        if node.next_timer() <= self.now:
            node.handle_timer(self.now)
        for out in node.take_outputs():
            if isinstance(out, Send):
                for d in out.batch:
                    if name in self.nat:
                        self.pinholes.add((self.addr[name], out.target))
                    self.link.send(self.addr[name], out.target, d)
            elif isinstance(out, Write):
                src = out.data[vnet.VNET_HDR_LEN + 6 : vnet.VNET_HDR_LEN + 12]
                self.frame_through(f"n{int.from_bytes(src[4:], 'big')}", name)
            elif isinstance(out, Log):
                self.logged[name].append(out)

    def deliver(self, listening: dict[str, NodeCore]) -> None:
        for src, dst, data in self.link.take():
            target = self.by_addr.get(dst)
            if target is None or target not in listening:
                continue  # nobody listening
            if target in self.nat and (dst, src) not in self.pinholes:
                continue  # the NAT lets in only replies
            listening[target].datagram(data, src, self.now)


class ColdNet(NatNet):
    """Net whose nodes start at given times; a node behind NAT receives only from
    addresses it sent to; a node that has not started receives nothing."""

    def __init__(self, n: int, nat: frozenset[str], starts: dict[str, float], seed: int) -> None:
        super().__init__(n, Link(random.Random(seed)), {f"n{i}": ["a"] for i in range(1, n + 1)},
                         nat=nat)  # fmt: skip
        self.nat = nat
        self.t0 = self.now
        self.starts = {name: self.t0 + at for name, at in starts.items()}
        self.started: dict[str, NodeCore] = {}
        self.pinholes: set[tuple[Addr, Addr]] = set()  # (inside, outside)
        self.first: dict[tuple[str, str], float] = {}  # (from, to) -> first frame through

    def step(self, dt: float = 0.01) -> None:
        before, self.now = self.now, round(self.now + dt, 6)
        for name, at in self.starts.items():
            if name not in self.started and at <= self.now:
                self.started[name] = self.nodes[name] = NodeCore(
                    self.network, name, self.keys[name], random_bytes=self.rng.randbytes,
                    wall_time=lambda: 1.7e9 + self.now, now=self.now,
                )  # fmt: skip
        tick = int(self.now / GUEST_EVERY) != int(before / GUEST_EVERY)
        for name, node in self.started.items():
            if tick:
                node.frame_from_port("pa", plain(frame(BCAST, guest_mac(name))), self.now)
            self.run_node(name, node)
        self.deliver(self.started)  # a node that has not started hears nothing

    def frame_through(self, peer: str, name: str) -> None:
        self.first.setdefault((peer, name), self.now)


def cold(seed: int, n: int = 13, nat: frozenset[str] = frozenset(f"n{i}" for i in range(8, 14))
         ) -> tuple[float, dict[tuple[str, str], float]]:  # fmt: skip
    rng = random.Random(seed)
    starts = {f"n{i}": rng.uniform(0.0, 0.2) for i in range(1, n + 1)}
    net = ColdNet(n, nat, starts, seed)
    pairs = [(a, b) for a in net.keys for b in net.keys if a != b]
    while len(net.first) < len(pairs) and net.now - net.t0 < 15.0:
        net.step()
    got = {p: round(net.first[p] - net.t0, 3) for p in pairs if p in net.first}
    return max(got.values()) if len(got) == len(pairs) else float("inf"), got


def test_cold_start_every_pair_within_2_s() -> None:
    # The lab's budget is 2 s from the first agent started, agent start-up included
    # (a second or more on a loaded machine), so the core's own share must be far
    # less: branch-to-branch pairs (through relays, after the hubs' REACH) were
    # 1.3-1.4 s when a hub's REACH was damped after its first three new peers.
    for seed in range(3):
        worst, got = cold(seed)
        slow = sorted(got.items(), key=lambda kv: -kv[1])[:5]
        assert worst <= 2.0, (seed, worst, slow)
        assert worst <= 1.0, (seed, worst, slow)


def test_every_pair_of_many_nodes_is_dialed_early_by_one_of_the_two() -> None:
    # 31 peers each: the budget sends 9 initiations at once and the rest at its rate.
    # In the file's order every node dialed the first nodes first, and two nodes late
    # in the file waited ~1.1 s for each other's turn (worst pair 1.18 and 1.19 s with
    # these seeds); each node starts after itself and wraps around, so of any two one
    # dials the other in its first half (0.88 and 0.83 s).
    for seed in range(2):
        worst, got = cold(seed, n=32, nat=frozenset())
        slow = sorted(got.items(), key=lambda kv: -kv[1])[:3]
        assert worst <= 1.0, (seed, worst, slow)


def test_a_node_dials_the_nodes_after_it_first_and_lists_peers_in_the_files_order() -> None:
    net = Net(5, Link(random.Random(0)), {f"n{i}": ["a"] for i in range(1, 6)})
    node = net.nodes["n3"]
    node.handle_timer(net.now)
    sends = [o for o in node.take_outputs() if isinstance(o, Send)]
    dialed = [net.by_addr[o.target] for o in sends for d in o.batch if d[0] == 1]
    assert dialed == ["n4", "n5", "n1", "n2"]
    assert [p.name for p in node.status(net.now).peers] == ["n1", "n2", "n4", "n5"]


def test_a_hubs_first_reach_of_each_peer_goes_out_within_the_gap() -> None:
    gossip = ReachGossip()
    now = 0.0
    reach: dict[str, int] = {}
    sent_at = []
    for i in range(12):  # a hub at a cold start: a new peer every 50 ms
        reach = {**reach, f"p{i}": 1000}
        if gossip.due(reach, now):
            sent_at.append(now)
        else:  # held: the node looks again when the gap ends
            held = gossip.held_until
            assert held is not None and now < held <= now + REACH_FIRST_GAP, i
        assert now - sent_at[-1] < REACH_FIRST_GAP + 1e-9, i  # news waits < the gap
        now = round(now + 0.05, 6)
    # one REACH per gap, not one per new peer (each goes to every peer, listing all)
    assert len(sent_at) <= 0.6 / REACH_FIRST_GAP + 1, sent_at
    # A peer that goes and comes back is a flap: the budget applies to it.
    sends = 0
    for tick in range(20):
        flapping = reach if tick % 2 == 0 else {k: v for k, v in reach.items() if k != "p0"}
        sends += gossip.due(flapping, now)
        now += 0.05
    assert sends <= REACH_FLAP_LIMIT + 1


def test_a_large_networks_news_waits_a_gap_that_grows_with_it() -> None:
    """Each REACH of news goes to every peer: at 100 nodes a cold start's growth went out
    ~4 times a second to 99 peers (issue 10). The gap keeps it near a second there;
    small networks keep REACH_FIRST_GAP (cold start <= 2 s with NAT'd branches)."""
    assert news_gap(12) == REACH_FIRST_GAP
    gap = news_gap(99)
    assert 0.9 <= gap <= 1.0
    gossip = ReachGossip()
    now, sent_at = 100.25259155107136, []  # awkward floats: the hold's end
    reach: dict[str, int] = {}
    for i in range(60):  # a new peer every 50 ms for 3 s
        reach = {**reach, f"p{i}": 1000}
        if gossip.due(reach, now, 99):
            sent_at.append(now)
        else:
            held = gossip.held_until
            assert held is not None and now < held <= sent_at[-1] + gap, i
            if held - now < 0.05:  # the node looks again as the hold ends: news goes then
                now = held
                assert gossip.due(reach, now, 99), i
                sent_at.append(now)
        now += 0.05
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert gaps and min(gaps) >= gap - 1e-9, gaps
    assert len(sent_at) <= 3.0 / gap + 1, sent_at


def test_a_large_networks_losses_wait_longer_than_its_comebacks() -> None:
    """A flapping path made every relay tell all 99 peers once a second: on an
    overloaded machine that kept the overload going (issue 10). Losses now wait
    `change_interval` (~10 s at 100 nodes, REACH_INTERVAL in small networks);
    comebacks within the flap budget still go after the news gap."""
    assert change_interval(10) == REACH_INTERVAL
    wait = change_interval(99)
    assert 9.0 <= wait <= 10.0
    gossip = ReachGossip()
    full = {f"p{i}": 1000 for i in range(99)}
    assert gossip.due(full, 0.0, 99)
    now, sent = 0.0, [0.0]
    while now < 60.0:  # p0 lost, back, lost...: one flapping path, every 0.5 s
        now = round(now + 0.5, 6)
        lost = int(now * 2) % 2 == 1
        reach = {k: v for k, v in full.items() if k != "p0"} if lost else full
        if gossip.due(reach, now, 99):
            sent.append(now)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    # comebacks: at most REACH_FLAP_LIMIT per window at the news gap; the rest waits
    assert min(gaps) >= news_gap(99) - 1e-9, gaps
    assert len(sent) <= 1 + 60.0 / wait + REACH_FLAP_LIMIT * (60.0 / 10.0 + 1), sent
    assert len(sent) >= 60.0 / wait - 1, sent  # the losses are still told


# -- the lab's healing.toml, as far as the fake net goes -------------------------------
# Seven public nodes (a two-provider site, four hubs) and three NAT'd branches of two
# nodes each behind one public address (the second node's mapping on another port),
# started over 1.8 s as 13 agents sharing 2 cores are (the lab: 1.3-1.8 s from spawn
# to listening). "nat-first": the branches start first and their first initiations
# reach hubs not listening yet (nobody can dial a branch: it must retry).
BRANCHES = (("n8", "n9"), ("n10", "n11"), ("n12", "n13"))


def cold_branches(seed: int, order: str) -> tuple[float, float]:
    """(last start, worst pair), seconds from the first start; a pair that never
    answers within 15 s is inf."""
    rng = random.Random(seed)
    nat = frozenset(n for pair in BRANCHES for n in pair)
    names = [f"n{i}" for i in range(1, 14)]
    if order == "nat-first":
        starts = {n: rng.uniform(0.0, 0.3) if n in nat else rng.uniform(1.2, 1.8) for n in names}
    else:
        starts = {n: rng.uniform(0.0, 1.8) for n in names}
    net = ColdNet(13, nat, starts, seed)
    for j, pair in enumerate(BRANCHES):  # one NAT, one public address per branch
        for k, name in enumerate(pair):
            del net.by_addr[net.addr[name]]
            net.addr[name] = (f"198.18.1.{j + 1}", 51820 if k == 0 else 40000 + j)
            net.by_addr[net.addr[name]] = name
    pairs = [(a, b) for a in names for b in names if a != b]
    while len(net.first) < len(pairs) and net.now - net.t0 < 15.0:
        net.step()
    worst = max(net.first.values()) - net.t0 if len(net.first) == len(pairs) else float("inf")
    return max(starts.values()), worst


@pytest.mark.parametrize("order", ["random", "nat-first"])
def test_nat_branches_behind_one_address_every_pair_soon_after_the_last_start(
    order: str,
) -> None:
    # What the core adds to the agents' start-up: every pair through within 1 s of
    # the last agent listening (measured on the `cold` branch: 0.2-0.3 s in random
    # order, up to 0.65 s with the branches first, seeds 0-11).
    for seed in range(3):
        last, worst = cold_branches(seed, order)
        assert worst - last <= 1.0, (order, seed, last, worst)


def test_initiations_nothing_can_carry_do_not_delay_the_ones_that_can() -> None:
    # A node that starts first used its whole initiation budget on its NAT'd peers
    # (no relay offered them yet: every one dropped unsent), so its retries to the
    # hubs that had started meanwhile waited for tokens, 0.2-0.3 s late: the slowest
    # pair was 0.52-0.66 s over seeds 0-7; with those initiations not made, 0.42-0.49 s.
    for seed in range(8):
        worst, got = cold(seed)
        assert worst <= 0.5, (seed, worst, sorted(got.items(), key=lambda kv: -kv[1])[:3])


def test_a_new_session_sends_where_the_response_came_from_not_to_every_path() -> None:
    """With no path active yet, what the initiator sends once the response is in (its
    keepalive, its queue, a relay's offer) goes to the response's source alone: it
    went to every candidate path, so at a 100-node cold start ~7 000 copies (relays'
    among them) arrived only to be dropped as replays (issue 10)."""
    keys = {name: generate_private_key() for name in ("a", "b")}
    ends = {"a": ['"198.18.1.1:51820"'], "b": ['"198.18.2.1:51820"', '"198.18.3.1:51820"']}
    text = ['[network]\nname = "t"\n[[segment]]\nname = "s"\nvlan = 10\n']
    for name, key in keys.items():
        text.append(
            f'[[node]]\nname = "{name}"\nsite = "{name}"\nrelay = true\n'
            f'public_key = "{encode_key(public_key(key))}"\n'
            f'endpoints = [{", ".join(ends[name])}]\nsegments = ["s"]\n'
            '  [[node.port]]\n  kind = "access"\n  name = "ps"\n  segment = "s"\n'
        )
    network = parse_network("\n".join(text), "dual.toml")
    rng, now = random.Random(3), 100.0
    a, b = (
        NodeCore(network, n, keys[n], random_bytes=rng.randbytes,
                 wall_time=lambda: 1.7e9 + now, now=now)
        for n in ("a", "b")
    )  # fmt: skip
    a_addr, live, dead = ("198.18.1.1", 51820), ("198.18.2.1", 51820), ("198.18.3.1", 51820)
    a.frame_from_port("ps", plain(frame(BCAST, guest_mac("n1"))), now)  # queued for b
    a.handle_timer(now)
    inits = [(o.target, d) for o in a.take_outputs() if isinstance(o, Send) for d in o.batch]
    assert {t for t, _ in inits} == {live, dead}  # the initiation goes both ways
    b.datagram(next(d for t, d in inits if t == live), a_addr, now)
    out = [d for o in b.take_outputs() if isinstance(o, Send) for d in o.batch]
    response = [d for d in out if d[0] == 2]  # (b may be initiating too)
    assert len(response) == 1
    a.datagram(response[0], live, now)  # the response, from the live endpoint
    assert a._sessions.status("b").established
    sent = [o.target for o in a.take_outputs() if isinstance(o, Send)]
    assert sent and set(sent) == {live}, sent  # the queued frame and keepalive: one way


def test_growth_that_is_not_news_to_an_audience_waits_the_interval() -> None:
    """A peer with endpoints dials everyone it needs: what a relay newly reaches is only
    a standby relay to it, sent with the other changes; a peer behind NAT is news."""
    gossip = ReachGossip()
    assert gossip.due({"hub": 1000}, 0.0, 5, news=())  # the first offer
    assert not gossip.due({"hub": 1000, "web": 1000}, 0.1, 5, news=())  # not news: held
    assert gossip.held_until is None  # and not on the news gap's hold either
    assert gossip.due({"hub": 1000, "web": 1000}, REACH_INTERVAL, 5, news=())
    natd = ReachGossip(NATD_FIRST_GAP)
    assert natd.due({"hub": 1000}, 0.0, 5, news={"branch"})
    assert not natd.due({"hub": 1000, "web": 1000}, 0.2, 5, news={"branch"})
    assert natd.due({"hub": 1000, "branch": 1000}, 0.2, 5, news={"branch"})  # at once


def _reach_count(n: int, natd: int, seed: int) -> tuple[int, float]:
    """REACH messages built, and the slowest pair, in a cold start of `n` nodes, the
    last `natd` of them behind NAT."""
    built = 0
    build = control.build_reach_messages

    def counted(entries: list[bytes], gen: int, budget: int) -> list[bytes]:
        nonlocal built
        out = build(entries, gen, budget)
        built += len(out)
        return out

    rng = random.Random(seed)
    starts = {f"n{i}": rng.uniform(0.0, 0.2) for i in range(1, n + 1)}
    nat = frozenset(f"n{i}" for i in range(n - natd + 1, n + 1))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(control, "build_reach_messages", counted)
        net = ColdNet(n, nat, starts, seed)
        pairs = [(a, b) for a in net.keys for b in net.keys if a != b]
        while len(net.first) < len(pairs) and net.now - net.t0 < 15.0:
            net.step()
    worst = max(net.first[p] - net.t0 for p in pairs) if len(net.first) == len(pairs) else 1e9
    return built, worst


def test_a_relays_news_goes_at_once_only_to_peers_behind_nat() -> None:
    # 30 nodes, 8 behind NAT: 2 727 REACH when all news went to every peer at once,
    # 1 479 with it (the slowest pair 1.16 and 1.23 s). At 100 nodes on this machine
    # (bench/scale's lab, cold start): 78 000 REACH -> 21 000, 215 000 datagrams ->
    # 115 000, the cold start 15.4-16.4 s -> 9.8-11.1 s (issue 10).
    built, worst = _reach_count(30, 8, 0)
    assert worst <= 1.5, worst
    assert built <= 2000, built


def test_a_node_behind_nat_dials_every_peer_in_its_first_wave() -> None:
    """No peer can dial a node behind NAT, so its first initiations each bring their
    own token: all go at once. A node with endpoints sends INITIATION_BURST_EXTRA + 1
    or so and the rest at the budget's rate (its peers dial it too)."""
    n = 30
    net = Net(n, Link(random.Random(1)), {f"n{i}": ["a"] for i in range(1, n + 1)},
              nat=frozenset({"n1"}))  # fmt: skip
    first: dict[str, set[Addr]] = {}
    for name in ("n1", "n2"):
        node = net.nodes[name]
        node.handle_timer(net.now)
        sends = [o for o in node.take_outputs() if isinstance(o, Send)]
        first[name] = {o.target for o in sends for d in o.batch if d[0] == 1}  # initiations
    assert len(first["n1"]) == n - 1  # every peer, at once
    assert INITIATION_BURST_EXTRA < len(first["n2"]) <= INITIATION_BURST_EXTRA + 3
