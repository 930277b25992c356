"""`coldtail lambda-extension`: the collector as an external AWS Lambda extension.

Lambda starts every executable in /opt/extensions at init; the layer's `extensions/coldtail`
runs this package (`python -m collector.awslambda.extension`). Lambda's init is over once the
runtime and every extension asked for their first event, so the extension does only
standard-library work before that and loads the collector afterwards. The lifecycle follows the
Extensions API (2020-01-01):

1. Register for INVOKE and SHUTDOWN (`lambda_api`): Lambda starts the runtime's init once every
   extension has registered.
2. Read COLDTAIL_CONFIG (default the layer's config/lambda-extension.yaml) as a raw tree
   (`collector.core.confmap`, no validation); `plan` finds the addresses of the receivers the
   pipelines use (the `otlp` receiver's OTLP/HTTP endpoint, every `lambda_telemetry`
   receiver's endpoint) and moves the real receivers to private loopback ports. The
   `front_door` opens those addresses, answers the function and Lambda at once and queues what
   they send.
3. Subscribe every `lambda_telemetry` receiver to the Telemetry API (2022-07-01), with the
   destination Lambda requires: `http://sandbox.localdomain:PORT`.
4. Ask for the first event: init is over. Meanwhile the `pipelines` load in a background thread
   and start on their own event loop; the `forwarder` then replays the queue, in order, to the
   real receivers, and keeps doing so.
5. For each INVOKE: on the environment's first, wait until the pipelines run (their loading
   would otherwise slow the next invocations down); then flush as COLDTAIL_FLUSH
   says (`flushing`: by default in the background, after asking for the next event at once,
   since the function's spans reach the front door before it responds and wait there through
   a freeze) and ask for the next event.
6. On SHUTDOWN: drain everything into the backends, stop the pipelines within its deadline
   (Lambda gives extensions 2 s in all), close the front door and exit. An invocation that
   Lambda ended (failure, timeout) without a trace of it gets a synthetic span first.

The extension never fails the function or holds it because of itself: a config that cannot be
read or planned, an address in use, a refused Telemetry API subscription, pipelines that fail
validation or to start, a backend down or hung, are each said in one line on stderr (which
Lambda sends to CloudWatch Logs) and the extension carries on with what still works, answering
Lambda throughout. Only COLDTAIL_FAIL_INIT_ON_ERROR=true makes what goes wrong before init ends
fail the function's init, for those who prefer a loud failure.
"""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """One line for the function's log, before and after logging is set up."""
    print(f"coldtail lambda-extension: {message}", file=sys.stderr, flush=True)
