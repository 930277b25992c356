"""Returns what reached the handler: the event and the context."""

import os


def handler(event, context):
    print(f"echo {context.aws_request_id}")
    client_context = context.client_context
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_arn": context.invoked_function_arn,
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "client_custom": client_context.custom if client_context else None,
        "cognito_identity_id": context.identity.cognito_identity_id,
        "pid": os.getpid(),
    }
