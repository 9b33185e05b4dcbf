"""The batched counts of :class:`forward_auth.metrics.Tally`: once flushed, the same exposition
as the same writes made one by one (real prometheus-client registries, no mock)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from forward_auth.metrics import Tally

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01)
#: Latencies on, between and beyond the bounds (each lands where Histogram.observe puts it).
LATENCIES = [0.0001, 0.0005, 0.00051, 0.001, 0.003, 0.005, 0.0099, 0.01, 0.5, 2.0]


def _metrics() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    counter = Counter("decisions_total", "d", ["reason"], registry=registry)
    histogram = Histogram("decision_seconds", "s", buckets=BUCKETS, registry=registry)
    return registry, counter, histogram


def _without_created(exposition: bytes) -> list[str]:
    return [line for line in exposition.decode().splitlines() if "_created" not in line]


def test_batched_counts_once_flushed_read_as_the_same_writes_one_by_one() -> None:
    direct, direct_counter, direct_histogram = _metrics()
    batched, counter, histogram = _metrics()
    tally = Tally(histogram)
    tally.start()
    for index, seconds in enumerate(LATENCIES):
        reason = "ok" if index % 3 else "no-token"
        direct_counter.labels(reason=reason).inc()
        direct_histogram.observe(seconds)
        if index % 2:
            tally.count(counter.labels(reason=reason), seconds=seconds)
        else:  # the same written apart
            tally.count(counter.labels(reason=reason))
            tally.count(seconds=seconds)
    tally.flush()
    assert _without_created(generate_latest(batched)) == _without_created(generate_latest(direct))
    assert 'decision_seconds_bucket{le="0.0005"} 2.0' in generate_latest(batched).decode()  # 0.0005 <= 0.0005


def test_before_start_every_write_goes_straight_through() -> None:
    registry, counter, histogram = _metrics()
    tally = Tally(histogram)
    tally.count(counter.labels(reason="ok"), seconds=0.003)
    assert registry.get_sample_value("decisions_total", {"reason": "ok"}) == 1.0
    assert registry.get_sample_value("decision_seconds_count") == 1.0


def test_a_count_that_waited_for_a_flush_is_kept_for_the_next() -> None:
    registry, counter, histogram = _metrics()
    tally = Tally(histogram)
    tally.start()
    real = tally._lock

    class FlushFirst:
        """The lock, taken by a flush just before the count that waits for it."""

        def __enter__(self) -> None:
            tally._lock = real
            tally.flush()
            real.acquire()

        def __exit__(self, *exc: object) -> None:
            real.release()

    tally._lock = FlushFirst()  # type: ignore[assignment]
    tally.count(counter.labels(reason="ok"), seconds=0.003)
    tally.flush()
    assert registry.get_sample_value("decisions_total", {"reason": "ok"}) == 1.0
    assert registry.get_sample_value("decision_seconds_count") == 1.0
