"""Returns more than the 6 MB a synchronous invocation may return."""


def handler(event, context):
    return "x" * (7 * 1024 * 1024)
