"""The impairment model: seeded statistics, reproducibility and release-time properties."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpchat.endpoint import Address
from udpchat.impair import Impairment, ImpairmentConfig, parse_duration, parse_rate
from udpchat.sim import PathModel, SimNetwork

pytestmark = pytest.mark.unit

N = 20_000


def run(config: ImpairmentConfig, n: int = N) -> tuple[list[bool], Impairment[int]]:
    """Submit n datagrams one per virtual millisecond; return per-datagram 'arrived' flags."""
    imp: Impairment[int] = Impairment(config)
    arrived = [False] * n
    for i in range(n):
        imp.submit(b"x", i / 1000, i)
    for _, i in imp.due(math.inf):
        arrived[i] = True
    return arrived, imp


def loss_runs(arrived: list[bool]) -> list[int]:
    runs, current = [], 0
    for ok in arrived:
        if ok:
            if current:
                runs.append(current)
            current = 0
        else:
            current += 1
    if current:
        runs.append(current)
    return runs


def delays(config: ImpairmentConfig, n: int = 5_000) -> list[float]:
    """Per-datagram latency, measured one datagram at a time through next_deadline."""
    imp: Impairment[None] = Impairment(config)
    out = []
    for i in range(n):
        now = float(i)
        imp.submit(b"x", now)
        deadline = imp.next_deadline()
        assert deadline is not None
        out.append(deadline - now)
        assert imp.due(deadline) == [(b"x", None)]
    return out


# --- parsers ----------------------------------------------------------------------------


def test_parse_rate() -> None:
    assert parse_rate("20%") == parse_rate("0.2") == 0.2
    assert parse_rate("0") == 0.0
    assert parse_rate("100%") == parse_rate("1") == 1.0
    assert parse_rate(" 5 % ") == 0.05


@pytest.mark.parametrize("text", ["-0.1", "1.5", "101%", "abc", "", "5%%", "nan", "inf", "1e3"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid rate") as info:
        parse_rate(text)
    assert "\n" not in str(info.value)


def test_parse_duration() -> None:
    assert parse_duration("30ms") == parse_duration("0.03") == 0.03
    assert parse_duration("2s") == 2.0
    assert parse_duration("250us") == 0.00025
    assert parse_duration("0") == 0.0


@pytest.mark.parametrize("text", ["-1ms", "fast", "", "10 min", "1e999", "ms"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert "\n" not in str(info.value)


# --- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": 1.5}, "loss must be a probability"),
        ({"duplicate": -0.1}, "duplicate must be a probability"),
        ({"reorder": math.nan}, "reorder must be a probability"),
        ({"delay": -0.001}, "delay must be"),
        ({"jitter": math.inf}, "jitter must be"),
        ({"p_good_to_bad": 0.1}, "p_bad_to_good must be > 0"),
    ],
)
def test_config_validation(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImpairmentConfig(**kwargs)  # type: ignore[arg-type]


def test_is_noop() -> None:
    assert ImpairmentConfig(seed=7).is_noop
    assert ImpairmentConfig(reorder=0.5, reorder_delay=0).is_noop
    assert not ImpairmentConfig(loss=0.01).is_noop
    assert not ImpairmentConfig(jitter=0.001).is_noop
    assert not ImpairmentConfig().with_bursts(0.05, 3).is_noop


def test_with_bursts_validation() -> None:
    with pytest.raises(ValueError, match="mean_burst"):
        ImpairmentConfig().with_bursts(0.1, 0.5)
    with pytest.raises(ValueError, match="too high"):
        ImpairmentConfig().with_bursts(0.9, 1.0)


def test_derive_gives_independent_reproducible_seeds() -> None:
    config = ImpairmentConfig(loss=0.5, seed=3)
    assert config.derive("out") == config.derive("out")
    assert config.derive("out").seed != config.derive("in").seed
    assert config.derive("out").loss == 0.5


# --- statistics --------------------------------------------------------------------------


def test_zero_config_is_perfect_pass_through() -> None:
    imp: Impairment[int] = Impairment(ImpairmentConfig(seed=1))
    for i in range(100):
        imp.submit(bytes([i]), 5.0, i)
    assert imp.next_deadline() == 5.0
    assert imp.due(5.0) == [(bytes([i]), i) for i in range(100)]
    assert imp.next_deadline() is None and len(imp) == 0
    c = imp.counters
    assert (c.passed, c.dropped, c.duplicated, c.reordered, c.delayed) == (100, 0, 0, 0, 0)


@pytest.mark.parametrize("loss", [0.01, 0.1, 0.3])
def test_loss_rate(loss: float) -> None:
    arrived, imp = run(ImpairmentConfig(loss=loss, seed=11))
    rate = arrived.count(False) / N
    assert rate == pytest.approx(loss, abs=0.01)
    assert imp.counters.dropped == arrived.count(False)
    assert imp.counters.submitted == N


def test_total_loss_drops_everything() -> None:
    arrived, imp = run(ImpairmentConfig(loss=1.0), n=1000)
    assert not any(arrived) and imp.counters.dropped == 1000


def test_bursty_loss_has_longer_runs_at_same_average() -> None:
    bursty = ImpairmentConfig(seed=5).with_bursts(0.1, 5)
    assert bursty.mean_loss == pytest.approx(0.1)
    burst_arrived, _ = run(bursty, n=50_000)
    plain_arrived, _ = run(ImpairmentConfig(loss=0.1, seed=5), n=50_000)
    assert burst_arrived.count(False) / 50_000 == pytest.approx(0.1, abs=0.02)
    burst_runs = statistics.mean(loss_runs(burst_arrived))
    plain_runs = statistics.mean(loss_runs(plain_arrived))
    assert plain_runs == pytest.approx(1 / 0.9, abs=0.1)
    assert burst_runs == pytest.approx(5, rel=0.15)
    assert max(loss_runs(burst_arrived)) > 2 * max(loss_runs(plain_arrived))


def test_gilbert_elliott_both_states_lossy() -> None:
    config = ImpairmentConfig(
        loss=0.02, burst_loss=0.5, p_good_to_bad=0.01, p_bad_to_good=0.1, seed=2
    )
    arrived, _ = run(config, n=50_000)
    assert arrived.count(False) / 50_000 == pytest.approx(config.mean_loss, abs=0.015)


def test_duplicate_rate() -> None:
    _, imp = run(ImpairmentConfig(duplicate=0.1, seed=3))
    assert imp.counters.duplicated / N == pytest.approx(0.1, abs=0.01)


def test_duplicates_are_released_twice() -> None:
    imp: Impairment[None] = Impairment(ImpairmentConfig(duplicate=1.0))
    imp.submit(b"a", 0.0)
    assert imp.due(0.0) == [(b"a", None), (b"a", None)]


def test_reorder_rate_and_overtaking() -> None:
    config = ImpairmentConfig(reorder=0.2, reorder_delay=0.005, seed=4)
    arrived, imp = run(config)
    assert all(arrived)
    assert imp.counters.reordered / N == pytest.approx(0.2, abs=0.015)
    # Released in release order: replay to see the order in which datagrams come out.
    imp2: Impairment[int] = Impairment(config)
    for i in range(N):
        imp2.submit(b"x", i / 1000, i)
    order = [i for _, i in imp2.due(math.inf)]
    inversions = sum(1 for a, b in itertools.pairwise(order) if a > b)
    assert inversions / N == pytest.approx(0.2 * 0.8, abs=0.03)


def test_delay_and_jitter_distribution() -> None:
    samples = delays(ImpairmentConfig(delay=0.05, jitter=0.02, seed=9))
    assert min(samples) >= 0.03 - 1e-12 and max(samples) <= 0.07 + 1e-12
    assert statistics.mean(samples) == pytest.approx(0.05, abs=0.001)
    assert statistics.pstdev(samples) == pytest.approx(0.02 / math.sqrt(3), rel=0.05)


def test_fixed_delay() -> None:
    samples = delays(ImpairmentConfig(delay=0.03), n=100)
    assert all(s == pytest.approx(0.03) for s in samples)


def test_jitter_larger_than_delay_is_never_negative() -> None:
    samples = delays(ImpairmentConfig(delay=0.001, jitter=0.01, seed=1))
    assert min(samples) == 0.0
    assert max(samples) <= 0.011


def test_same_seed_same_decisions_different_seed_different() -> None:
    def decisions(seed: int) -> list[tuple[bytes, int]]:
        config = ImpairmentConfig(loss=0.2, duplicate=0.1, reorder=0.1, jitter=0.01, seed=seed)
        imp: Impairment[int] = Impairment(config)
        for i in range(2000):
            imp.submit(b"d", i / 100, i)
        return imp.due(math.inf)

    assert decisions(1) == decisions(1)
    assert decisions(1) != decisions(2)


# --- properties --------------------------------------------------------------------------

configs = st.builds(
    ImpairmentConfig,
    loss=st.floats(0, 1),
    duplicate=st.floats(0, 1),
    reorder=st.floats(0, 1),
    reorder_delay=st.floats(0, 1),
    delay=st.floats(0, 1),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
ops = st.lists(
    st.tuples(st.sampled_from(["submit", "due"]), st.floats(0, 100, allow_nan=False)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(configs, ops)
def test_release_properties(config: ImpairmentConfig, operations: list[tuple[str, float]]) -> None:
    imp: Impairment[int] = Impairment(config)
    submitted: dict[int, float] = {}
    released: dict[int, int] = {}
    for n, (op, now) in enumerate(operations):
        if op == "submit":
            imp.submit(n.to_bytes(2, "big"), now, n)
            submitted[n] = now
        else:
            for data, tag in imp.due(now):
                assert data == tag.to_bytes(2, "big")
                assert tag in submitted, "released something never submitted"
                assert submitted[tag] <= now, "released before its submit time"
                released[tag] = released.get(tag, 0) + 1
        deadline = imp.next_deadline()
        assert (deadline is None) == (len(imp) == 0)
    assert all(count <= 2 for count in released.values())
    c = imp.counters
    assert c.passed + c.dropped == len(submitted)
    # The deadline is exact: nothing is due just before it, something is due at it.
    deadline = imp.next_deadline()
    at_deadline: list[tuple[bytes, int]] = []
    if deadline is not None:
        assert imp.due(math.nextafter(deadline, -math.inf)) == []
        at_deadline = imp.due(deadline)
        assert at_deadline
    leftover = imp.due(math.inf)
    assert sum(released.values()) + len(at_deadline) + len(leftover) == c.passed + c.duplicated
    assert imp.next_deadline() is None


# --- the simulated network decides with the same model --------------------------------------


def test_fate_is_what_submit_schedules() -> None:
    config = ImpairmentConfig(loss=0.2, duplicate=0.2, reorder=0.2, delay=0.01, jitter=0.005)
    held: Impairment[None] = Impairment(config)
    decided: Impairment[None] = Impairment(config)
    expected: list[float] = []
    for i in range(2000):
        held.submit(b"x", float(i))
        expected.extend(float(i) + latency for latency in decided.fate())
    released = []
    while (deadline := held.next_deadline()) is not None:
        released.extend(deadline for _ in held.due(deadline))
    assert released == sorted(expected)
    assert held.counters == decided.counters


def test_simulated_paths_take_their_delay_and_jitter_from_the_model() -> None:
    src, dst = ("192.0.2.1", 1), ("192.0.2.2", 2)
    net = SimNetwork(seed=7, default=PathModel(delay=0.01, jitter=0.004))
    arrivals: list[float] = []
    net.attach(dst, _Sink(lambda: arrivals.append(net.now)))
    for _ in range(500):
        net.send(src, dst, b"x")
    net.run(1)
    assert len(arrivals) == 500
    assert min(arrivals) >= 0.01 and max(arrivals) <= 0.014
    assert statistics.mean(arrivals) == pytest.approx(0.012, abs=0.0005)


def test_simulated_network_takes_an_impairment_config_and_is_reproducible() -> None:
    src, dst = ("192.0.2.1", 1), ("192.0.2.2", 2)
    config = ImpairmentConfig(delay=0.001).with_bursts(0.2, 4)

    def fates(seed: int) -> list[float]:
        net = SimNetwork(seed=seed, default=config)
        arrivals: list[float] = []
        net.attach(dst, _Sink(lambda: arrivals.append(net.now)))
        for i in range(2000):
            net.inject(src, dst, b"x", delay=i / 1000)  # not through the model
        assert len(arrivals) == 0 and net.stats.dropped == 0
        for _ in range(2000):
            net.send(src, dst, b"x")
        net.run(5)
        return arrivals

    first = fates(1)
    assert fates(1) == first != fates(2)
    assert len(first) - 2000 == pytest.approx(2000 * 0.8, rel=0.1)


class _Sink:
    def __init__(self, on_receive: Callable[[], None]) -> None:
        self.on_receive = on_receive

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.on_receive()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return []

    def next_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def test_a_path_healed_of_bursts_loses_nothing_more() -> None:
    """A model switched from bursty loss to none must not stay in its bad state."""
    impairment = Impairment(ImpairmentConfig(seed=1).with_bursts(0.5, 50))
    for _ in range(200):  # well into a burst
        impairment.fate()
    impairment.config = ImpairmentConfig(seed=1)
    assert all(impairment.fate() for _ in range(200))
