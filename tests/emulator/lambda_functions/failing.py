"""Raises an exception of its own."""


class OrderNotFound(Exception):
    pass


def lookup(order_id):
    raise OrderNotFound(f"order {order_id} not found")


def handler(event, context):
    return lookup(event["order_id"])
