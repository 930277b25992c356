"""A small FastAPI service, run under uvicorn by the tests."""

import asyncio

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item}")
async def get_item(item: int):
    await asyncio.sleep(0.02)  # long enough for requests to be in flight when the server stops
    return {"item": item}


@app.get("/boom")
async def boom():
    raise RuntimeError("card declined")
