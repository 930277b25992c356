"""A small Flask service, run under gunicorn by the tests."""

import time

from flask import Flask
from opentelemetry import trace

app = Flask(__name__)
tracer = trace.get_tracer("checkout")


@app.get("/items/<int:item>")
def get_item(item: int):
    time.sleep(0.02)  # long enough for requests to be in flight when the server stops
    return {"item": item}


@app.get("/boom")
def boom():
    raise RuntimeError("card declined")


@app.get("/stock/<int:item>")
def stock(item: int):
    with tracer.start_as_current_span("count stock") as span:
        span.set_attribute("item", item)
        return {"item": item, "stock": 3}
