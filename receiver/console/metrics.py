"""``/metrics``: the service's counters and the store's figures in Prometheus text format.

Every name starts with ``receiver_``. Counters come from the in-process ``Counters`` (so they
restart at zero with the process, as Prometheus expects of a counter); gauges (backlog, open
troubles, registry size) are read from the store at scrape time, in a worker thread.
Each scrape builds its own registry: several services in one process (tests) never share one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from receiver.metrics import LATENCY_BOUNDS, Latency
from receiver.store.interface import ConsoleTables

from .state import ConsoleState


@attrs.frozen
class Scrape:
    counters: dict[str, int]
    latencies: dict[str, Latency]
    batches: int
    connections: dict[str, int]
    outputs: list[dict[str, Any]]
    open_troubles: int
    accounts: int
    bridges: int
    manual_waiting: int


class ScrapeCollector(Collector):
    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        s = self.scrape
        frames = CounterMetricFamily(
            "receiver_frames",
            "Frames received, by listener and outcome",
            labels=["listener", "outcome"],
        )
        replies = CounterMetricFamily(
            "receiver_replies", "Replies sent, by listener and kind", labels=["listener", "kind"]
        )
        duplicates = CounterMetricFamily(
            "receiver_duplicates", "Retries absorbed as duplicates", labels=["listener"]
        )
        opened = CounterMetricFamily(
            "receiver_connections_opened", "Connections admitted", labels=["listener"]
        )
        refused = CounterMetricFamily(
            "receiver_connections_refused", "Connections refused by a limit", labels=["listener"]
        )
        other = CounterMetricFamily(
            "receiver_events", "Other service counters, by name", labels=["name"]
        )
        for name, value in sorted(s.counters.items()):
            listener = "bridge" if name.startswith("bridge_") else "dc09"
            rest = name.removeprefix("bridge_")
            if rest == "frames_duplicate":
                duplicates.add_metric([listener], value)
            elif rest.startswith("frames_"):
                frames.add_metric([listener, rest.removeprefix("frames_")], value)
            elif rest.startswith("replies_"):
                replies.add_metric([listener, rest.removeprefix("replies_")], value)
            elif rest == "connections":
                opened.add_metric([listener], value)
            elif rest == "connections_refused":
                refused.add_metric([listener], value)
            elif name not in ("journal_signals_stored", "journal_commit_failed"):
                other.add_metric([name], value)
        yield from (frames, replies, duplicates, opened, refused, other)

        commits = CounterMetricFamily("receiver_commits", "Journal transactions committed")
        commits.add_metric([], s.batches)
        yield commits
        stored = CounterMetricFamily("receiver_signals_committed", "Signals committed")
        stored.add_metric([], s.counters.get("journal_signals_stored", 0))
        yield stored
        failed = CounterMetricFamily("receiver_commit_failures", "Journal commits that failed")
        failed.add_metric([], s.counters.get("journal_commit_failed", 0))
        yield failed

        for name, family, text in (
            ("ack_seconds", "receiver_ack_latency_seconds", "Decoded DC-09 frame to its ACK"),
            ("commit_seconds", "receiver_commit_latency_seconds", "One journal commit"),
        ):
            latency = s.latencies.get(name, Latency())
            buckets, running = [], 0
            for bound, count in zip((*LATENCY_BOUNDS, float("inf")), latency.buckets, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            yield HistogramMetricFamily(family, text, buckets=buckets, sum_value=latency.sum)

        connections = GaugeMetricFamily(
            "receiver_connections", "Connections open now", labels=["listener"]
        )
        for listener, value in sorted(s.connections.items()):
            connections.add_metric([listener], value)
        yield connections

        connected = GaugeMetricFamily(
            "receiver_output_connected", "1 while the output's link is up", labels=["output"]
        )
        backlog = GaugeMetricFamily(
            "receiver_output_backlog", "Signals waiting for the output", labels=["output"]
        )
        age = GaugeMetricFamily(
            "receiver_output_oldest_age_seconds",
            "Age of the oldest signal waiting for the output (0: none waits)",
            labels=["output"],
        )
        delivered = CounterMetricFamily(
            "receiver_output_delivered", "Signals the output acknowledged", labels=["output"]
        )
        manual = GaugeMetricFamily(
            "receiver_output_manual_mode", "1 while the output is in manual mode", labels=["output"]
        )
        for row in s.outputs:
            connected.add_metric([row["name"]], int(bool(row["connected"])))
            backlog.add_metric([row["name"]], row["backlog"])
            age.add_metric([row["name"]], row["oldest_age_s"] or 0.0)
            delivered.add_metric([row["name"]], row["delivered"])
            manual.add_metric([row["name"]], int(row["manual_mode"]))
        yield from (connected, backlog, age, delivered, manual)

        troubles = GaugeMetricFamily("receiver_open_troubles", "Supervised links in trouble")
        troubles.add_metric([], s.open_troubles)
        yield troubles
        registry = GaugeMetricFamily("receiver_registry_size", "Registry entries", labels=["kind"])
        registry.add_metric(["accounts"], s.accounts)
        registry.add_metric(["bridges"], s.bridges)
        yield registry
        waiting = GaugeMetricFamily(
            "receiver_manual_queue", "Alarms in the operator's queue not yet acknowledged"
        )
        waiting.add_metric([], s.manual_waiting)
        yield waiting


async def scrape(state: ConsoleState) -> bytes:
    def store_figures(tables: ConsoleTables) -> tuple[int, int, int]:
        accounts, bridges = tables.registry_size()
        return len(tables.open_troubles()), accounts, bridges

    troubles, accounts, bridges = await state.reader.run(store_figures)
    outputs = await state.outputs()
    queue = await state.manual_queue()
    counters = state.service.all_counters()
    figures = Scrape(
        counters=dict(counters.values),
        latencies=dict(counters.latencies),
        batches=sum(counters.batch_sizes.values()),
        connections={k: v["connections"] for k, v in state.listener_state().items()},
        outputs=outputs,
        open_troubles=troubles,
        accounts=accounts,
        bridges=bridges,
        manual_waiting=sum(1 for row, _ in queue if row["manual_user"] is None),
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(figures))
    return generate_latest(registry)
