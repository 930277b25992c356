"""zpages served by a real collector process: the pages show its pipelines and extensions."""

import urllib.error
import urllib.request

import pytest

from collector.core.component import Kind
from collector.extensions import zpages
from tests.support.components import StaticHost, make_settings
from tests.support.process import CollectorProcess, free_port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_the_pages_show_the_running_service(tmp_path):
    port = free_port()
    config = tmp_path / "zpages.yaml"
    config.write_text(
        f"""
extensions:
  zpages: {{endpoint: "127.0.0.1:{port}"}}
  health_check: {{endpoint: "127.0.0.1:{free_port()}"}}
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}}}
processors: {{batch: {{}}, "attributes/<tag>": {{actions: [{{key: a, value: b, action: insert}}]}}}}
exporters: {{debug: {{}}}}
service:
  extensions: [zpages, health_check]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: ["attributes/<tag>", batch], exporters: [debug]}}
    logs/audit: {{receivers: [otlp], exporters: [debug]}}
"""
    )
    with CollectorProcess(config) as collector:
        base = f"http://127.0.0.1:{port}/debug"
        status, servicez = get(f"{base}/servicez")
        assert status == 200 and "ready" in servicez and "Python" in servicez
        status, pipelinez = get(f"{base}/pipelinez")
        assert status == 200
        assert "<td>traces</td><td>otlp</td><td>attributes/&lt;tag&gt; -&gt; batch</td>" in (
            pipelinez
        )  # in order, escaped
        assert "<td>logs/audit</td><td>otlp</td><td>(none)</td><td>debug</td>" in pipelinez
        status, extensionz = get(f"{base}/extensionz")
        assert status == 200
        assert "<td>zpages</td>" in extensionz and "<td>health_check</td>" in extensionz
        assert get(f"{base}/featurez")[0] == 200
        assert get(f"{base}/tracez")[0] == 200
        assert get(f"{base}/nothing")[0] == 404
        assert collector.stop() == 0


async def test_a_taken_port_fails_the_start():
    first = zpages.ZPages(
        make_settings(Kind.EXTENSION, "zpages"), zpages.Config(endpoint="127.0.0.1:0")
    )
    await first.start(StaticHost())
    try:
        second = zpages.ZPages(
            make_settings(Kind.EXTENSION, "zpages"), zpages.Config(endpoint=first.endpoint)
        )
        with pytest.raises(OSError):
            await second.start(StaticHost())
    finally:
        await first.shutdown()
