"""A small Flask service, run under gunicorn by the tests."""

import time

from flask import Flask

app = Flask(__name__)


@app.get("/items/<int:item>")
def get_item(item: int):
    time.sleep(0.02)  # long enough for requests to be in flight when the server stops
    return {"item": item}


@app.get("/boom")
def boom():
    raise RuntimeError("card declined")
