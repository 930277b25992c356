"""Agents and gateways scaled out over a real 3-node NATS cluster (an R3 stream on file
storage): 2 agent and 3 gateway coldtail processes, a bounded generator sending traces with
known span counts, each trace's spans split over both agents. Every trace is decided (tail
sampling) by exactly one gateway, the one owning its partition, and nothing is lost when a
gateway is killed mid-run (its partitions move to the survivors, which replay what it had
not acknowledged) nor when the stream's leader node is (publishes are retried with their ids
on the new leader)."""

from __future__ import annotations

import os
import struct
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from collector.core.nats_stream import trace_partition
from collector.core.pdata import Traces, iter_spans
from collector.receivers.nats.ownership import owner
from tests.support.builders import make_traces
from tests.support.nats_cluster import NatsCluster
from tests.support.process import CollectorProcess, free_port

pytestmark = pytest.mark.slow

PARTITIONS = 8
GATEWAYS = ["gw-1", "gw-2", "gw-3"]

AGENT = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  nats:
    url: [{urls}]
    replicas: 3
    partitions: {partitions}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [nats]}}
"""

GATEWAY = """
receivers:
  nats:
    url: [{urls}]
    replicas: 3
    partitions: {partitions}
    group: gateways
    member: {member}
    members: [{members}]
    lease_ttl: 2s
    ack_wait: 3s
    ack_delay: 2s
processors:
  tail_sampling:
    decision_wait: 1s
    policies: [{{name: everything, type: always_sample}}]
exporters:
  file: {{path: "{out}", format: proto, flush_interval: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [nats], processors: [tail_sampling], exporters: [file]}}
"""


def read_outputs(path: Path) -> list[Traces]:
    """The requests a file exporter wrote (format proto), ignoring a torn last frame."""
    if not path.exists():
        return []
    data, pos, out = path.read_bytes(), 0, []
    while pos + 4 <= len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        if pos + 4 + size > len(data):
            break
        out.append(Traces.FromString(data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return out


class Generator:
    """Traces with 1 to 6 spans, each trace's spans alternating between the agents, sent in
    waves as OTLP/HTTP protobuf; `sent` maps trace id -> span ids."""

    def __init__(self, agent_ports: list[int]) -> None:
        self.ports = agent_ports
        self.sent: dict[bytes, set[bytes]] = {}
        self._lock = threading.Lock()

    def wave(self, traces: int) -> set[bytes]:
        per_agent = [Traces() for _ in self.ports]
        ids = set()
        for i in range(traces):
            trace_id = os.urandom(16)
            spans = make_traces(1 + i % 6, resource={"service.name": "shop"}, trace_id=trace_id)
            for j, span in enumerate(spans.resource_spans[0].scope_spans[0].spans):
                target = per_agent[j % len(self.ports)]
                single = Traces()
                single.CopyFrom(spans)
                del single.resource_spans[0].scope_spans[0].spans[:]
                single.resource_spans[0].scope_spans[0].spans.add().CopyFrom(span)
                target.MergeFrom(single)
            with self._lock:
                self.sent[trace_id] = {s.span_id for _, _, s in iter_spans(spans)}
            ids.add(trace_id)
        for port, batch in zip(self.ports, per_agent, strict=True):
            post(port, batch)
        return ids

    def spans(self, trace_ids) -> int:
        return sum(len(self.sent[t]) for t in trace_ids)


def post(port: int, batch: Traces) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces",
        data=batch.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


class Outputs:
    """What each gateway exported: trace id -> span ids, and spans counted with repeats."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.by_gateway: dict[str, dict[bytes, set[bytes]]] = {}
        self.exported = 0
        for name, path in paths.items():
            traces: dict[bytes, set[bytes]] = {}
            for request in read_outputs(path):
                for _, _, span in iter_spans(request):
                    traces.setdefault(span.trace_id, set()).add(span.span_id)
                    self.exported += 1
            self.by_gateway[name] = traces

    def union(self) -> dict[bytes, set[bytes]]:
        merged: dict[bytes, set[bytes]] = {}
        for traces in self.by_gateway.values():
            for trace_id, spans in traces.items():
                merged.setdefault(trace_id, set()).update(spans)
        return merged

    def holders(self, trace_id: bytes, among=None) -> list[str]:
        names = among or list(self.by_gateway)
        return [n for n in names if trace_id in self.by_gateway[n]]


def wait_for_all(paths, generator: Generator, timeout: float = 40.0) -> Outputs:
    deadline = time.monotonic() + timeout
    while True:
        outputs = Outputs(paths)
        union = outputs.union()
        if all(union.get(t, set()) >= spans for t, spans in generator.sent.items()):
            return outputs
        missing = sum(len(s - union.get(t, set())) for t, s in generator.sent.items())
        assert time.monotonic() < deadline, f"{missing} spans never exported"
        time.sleep(0.2)


def consumes(process, count: int) -> bool:
    """Whether the gateway's last ownership line says it consumes `count` partitions."""
    lines = [line for line in process.lines if " consumes " in line]
    return bool(lines) and f" consumes {count} of {PARTITIONS} " in lines[-1]


def wait_owning(gateways: dict, alive: list[str], timeout: float = 30.0) -> None:
    expected = {n: sum(owner(alive, p) == n for p in range(PARTITIONS)) for n in alive}
    deadline = time.monotonic() + timeout
    while not all(consumes(gateways[n], expected[n]) for n in alive):
        assert time.monotonic() < deadline, {n: gateways[n].log[-2000:] for n in alive}
        time.sleep(0.1)


def test_gateways_decide_each_trace_once_and_lose_nothing_when_one_is_killed(tmp_path):
    with NatsCluster(3) as cluster:
        urls = ", ".join(cluster.urls)
        agent_ports = [free_port(), free_port()]
        processes = {}
        for i, port in enumerate(agent_ports):
            path = tmp_path / f"agent-{i}.yaml"
            path.write_text(AGENT.format(port=port, urls=urls, partitions=PARTITIONS))
            processes[f"agent-{i}"] = CollectorProcess(path)
        outs = {name: tmp_path / f"{name}.bin" for name in GATEWAYS}
        for name in GATEWAYS:
            path = tmp_path / f"{name}.yaml"
            path.write_text(
                GATEWAY.format(
                    urls=urls,
                    partitions=PARTITIONS,
                    member=name,
                    members=", ".join(GATEWAYS),
                    out=outs[name],
                )
            )
            processes[name] = CollectorProcess(path)
        try:
            with ThreadPoolExecutor(len(processes)) as pool:
                list(pool.map(lambda p: p.start(timeout=40), processes.values()))
            wait_owning(processes, GATEWAYS)
            generator = Generator(agent_ports)

            # Steady: every trace decided by the one gateway owning its partition.
            for _ in range(5):
                generator.wave(30)
            outputs = wait_for_all(outs, generator)
            for trace_id, spans in generator.sent.items():
                assert outputs.holders(trace_id) == [
                    owner(GATEWAYS, trace_partition(trace_id, PARTITIONS))
                ]
                assert outputs.union()[trace_id] == spans
            steady = set(generator.sent)

            # Chaos: gw-3 killed while traces keep coming.
            victim = "gw-3"
            sender = threading.Thread(target=lambda: [generator.wave(20) for _ in range(10)])
            sender.start()
            time.sleep(1.0)
            processes[victim].proc.kill()
            sender.join(30)
            survivors = [n for n in GATEWAYS if n != victim]
            wait_owning(processes, survivors)
            outputs = wait_for_all(outs, generator, timeout=45)
            sent_spans = generator.spans(generator.sent)
            assert sum(len(s) for s in outputs.union().values()) == sent_spans
            for trace_id in set(generator.sent) - steady:
                assert len(outputs.holders(trace_id, survivors)) <= 1
            moved = [
                t
                for t in set(generator.sent) - steady
                if owner(GATEWAYS, trace_partition(t, PARTITIONS)) == victim
            ]
            assert moved and any(outputs.holders(t, survivors) for t in moved)
            print(
                f"sent {len(generator.sent)} traces, {sent_spans} spans; exported "
                f"{outputs.exported} spans ({outputs.exported - sent_spans} again after the "
                "kill)"
            )

            # Chaos: the stream's leader node killed while traces keep coming; the agents'
            # publishes are retried with their ids on the new leader, which stores them once.
            before, exported_before = set(generator.sent), outputs.exported
            leader = cluster.stream_leader("COLDTAIL")
            sender = threading.Thread(target=lambda: [generator.wave(20) for _ in range(10)])
            sender.start()
            time.sleep(1.0)
            leader.kill()
            sender.join(30)
            outputs = wait_for_all(outs, generator, timeout=60)
            assert sum(len(s) for s in outputs.union().values()) == generator.spans(generator.sent)
            for trace_id in set(generator.sent) - before:
                assert len(outputs.holders(trace_id, survivors)) == 1
            # Dedup holds: the stream stored each retried publish once, and no gateway died, so
            # nothing was delivered twice either.
            new = set(generator.sent) - before
            assert outputs.exported - exported_before == generator.spans(new)
            print(f"stream leader {leader.name} killed: nothing lost, nothing twice")
        finally:
            for process in processes.values():
                process.kill()
