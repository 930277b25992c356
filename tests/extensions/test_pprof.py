"""pprof served by a real collector process: a profile taken under load shows the receiver."""

import threading
import urllib.error
import urllib.request

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from tests.e2e.test_sdk_to_file import make_spans
from tests.support.process import CollectorProcess, free_port


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_a_profile_under_load_and_the_stacks_of_threads_and_tasks(tmp_path):
    port, http = free_port(), free_port()
    saved = tmp_path / "run.folded"
    config = tmp_path / "pprof.yaml"
    config.write_text(
        f"""
extensions:
  pprof: {{endpoint: "127.0.0.1:{port}", save_to_file: "{saved}", block_profile_fraction: 3}}
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http}"}}}}}}}}
exporters: {{debug: {{}}}}
service:
  extensions: [pprof]
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}
"""
    )
    with CollectorProcess(config) as collector:
        base = f"http://127.0.0.1:{port}/debug/pprof"
        stop = threading.Event()

        # Large requests, encoded once by the SDK: the collector's main thread is kept busy
        # enough for 2 s of samples to catch the receiver's handler, however fast it is.
        body = encode_spans(make_spans() * 1000).SerializeToString()

        def load() -> None:
            url = f"http://127.0.0.1:{http}/v1/traces"
            headers = {"Content-Type": "application/x-protobuf"}
            while not stop.is_set():
                request = urllib.request.Request(url, data=body, headers=headers)
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200

        senders = [threading.Thread(target=load) for _ in range(2)]
        for sender in senders:
            sender.start()
        try:
            status, folded = get(f"{base}/profile?seconds=2")
        finally:
            stop.set()
            for sender in senders:
                sender.join()
        assert status == 200
        lines = folded.splitlines()
        assert lines and all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
        assert "MainThread;" in folded and "_http_export (otlp.py:" in folded
        status, threads = get(f"{base}/threads")
        assert status == 200 and "thread MainThread:" in threads and "task " in threads
        assert get(f"{base}/profile?seconds=0")[0] == 400
        assert collector.stop() == 0
    whole_run = saved.read_text()
    assert "MainThread;" in whole_run
