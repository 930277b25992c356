"""Fan-out of one batch to several consumers, copying only for consumers that mutate it."""

from __future__ import annotations

from collector.core.consumer import Consumer, PermanentError, RetryableError
from collector.core.pdata import accepts_encoded, copy_batch


class FanOut:
    """Consumers that only read share the original; each mutating consumer gets its own copy,
    except that the last one takes the original when no reader shares it (readers such as a
    sending queue may read the batch long after consume() returns)."""

    def __init__(self, consumers: list[Consumer]) -> None:
        readers = [c for c in consumers if not c.mutates_data]
        writers = [c for c in consumers if c.mutates_data]
        self._plan = [(c, bool(readers) or i < len(writers) - 1) for i, c in enumerate(writers)]
        self._plan += [(c, False) for c in readers]
        self.mutates_data = False

    @property
    def accepts_encoded(self) -> bool:
        return all(accepts_encoded(consumer) for consumer, _ in self._plan)

    async def consume(self, batch) -> None:
        errors: list[Exception] = []
        for consumer, copy in self._plan:
            try:
                await consumer.consume(copy_batch(batch) if copy else batch)
            except Exception as e:  # one branch failing must not starve the others
                errors.append(e)
        if not errors:
            return
        if len(errors) == 1:
            raise errors[0]
        messages = "; ".join(str(e) for e in errors)
        if all(isinstance(e, PermanentError) for e in errors):
            raise PermanentError(messages)
        retry_after = [
            e.retry_after for e in errors if isinstance(e, RetryableError) and e.retry_after
        ]
        raise RetryableError(messages, max(retry_after, default=None))


def fan_out(consumers: list[Consumer]) -> Consumer:
    return consumers[0] if len(consumers) == 1 else FanOut(consumers)
