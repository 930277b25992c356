"""Timing of module imports during the function's init, for `coldtail.import` spans.

A finder placed first on `sys.meta_path` asks the other finders for each module's spec and wraps
the spec's loader, so that executing the module's code is timed. Times are inclusive: a module's
time contains the imports it triggers, which are recorded as its children. Only imports on the
thread that started the recorder are timed (init runs on one thread; another thread's imports
would interleave with its nesting). The hook is removed by `stop()`; modules keep their real
loader (`__loader__` and `__spec__.loader`), as the wrapper steps aside before their code runs.

Not sys.setprofile: profiling every call of the init code would slow it far more than a hook
that runs once per imported module.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time


class ImportRecord:
    """One module import: wall-clock start/end (Unix ns) and the record it happened within."""

    __slots__ = ("end_ns", "module", "parent", "start_ns")

    def __init__(self, module: str, start_ns: int, parent: ImportRecord | None) -> None:
        self.module = module
        self.start_ns = start_ns
        self.end_ns = 0
        self.parent = parent

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


class ImportRecorder:
    """Records imports between start() and stop(); `records` in start order."""

    def __init__(self) -> None:
        self.records: list[ImportRecord] = []
        self._stack: list[ImportRecord] = []
        self._thread = 0
        self._finding = False

    def start(self) -> None:
        self._thread = threading.get_ident()
        sys.meta_path.insert(0, self)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)

    def slow(self, threshold_ns: int) -> list[ImportRecord]:
        """Finished records that took at least `threshold_ns`. The parent of a slow import is
        slow too, since times are inclusive."""
        return [r for r in self.records if r.end_ns and r.duration_ns >= threshold_ns]

    # importlib's finder protocol.
    def find_spec(self, name, path=None, target=None):
        if self._finding or threading.get_ident() != self._thread:
            return None
        self._finding = True
        try:
            spec = self._find_with_others(name, path, target)
        finally:
            self._finding = False
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _TimingLoader(self, loader, spec)
        return spec

    def invalidate_caches(self) -> None:
        pass

    def _find_with_others(self, name, path, target):
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                # A legacy finder: let the import system run the whole search itself, untimed.
                return None
            spec = find_spec(name, path, target)
            if spec is not None:
                return spec
        return None

    def _enter(self, module: str) -> ImportRecord:
        parent = self._stack[-1] if self._stack else None
        record = ImportRecord(module, time.time_ns(), parent)
        self.records.append(record)
        self._stack.append(record)
        return record

    def _exit(self, record: ImportRecord) -> None:
        record.end_ns = time.time_ns()
        if self._stack and self._stack[-1] is record:
            self._stack.pop()


class _TimingLoader:
    """Stands in for a spec's loader until the module's code runs."""

    def __init__(self, recorder: ImportRecorder, loader, spec) -> None:
        self._recorder = recorder
        self._loader = loader
        self._spec = spec

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module) -> None:
        loader = self._loader
        # Restore the real loader first, so the module (and importlib.resources, pkgutil, ...)
        # never see this wrapper.
        self._spec.loader = loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = loader
        record = self._recorder._enter(self._spec.name)
        try:
            loader.exec_module(module)
        finally:
            self._recorder._exit(record)
