"""The `filelog` receiver's configuration, as the OTel Collector's filelogreceiver reads it."""

from __future__ import annotations

import codecs
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from collector.core.component import ComponentID
from collector.core.config_types import ComponentConfig, Duration
from collector.receivers.filelog.goregex import go_regex
from collector.receivers.filelog.operators import Operator, check_pipeline

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(value: object) -> int:
    """A size in bytes, as the Collector's stanza writes it: a number of bytes or a string like
    `1kb` (1000), `16KiB` (16384), `1MiB`, case-insensitive."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 1kb or 1MiB")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    m = _SIZE_RE.match(value) if isinstance(value, str) else None
    if m is None or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r}: expected bytes or a size like 1kb, 16KiB, 1MiB")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


ByteSize = Annotated[int, BeforeValidator(parse_size)]

# Encodings whose characters are several bytes each: their newline counts only at a character
# boundary.
_WIDE = {"utf-16-le": 2, "utf-16-be": 2, "utf-32-le": 4, "utf-32-be": 4}


def codec_name(encoding: str) -> str:
    """The Python codec of a Collector encoding name; `nop` is kept as it is (raw bytes)."""
    name = encoding.strip().lower()
    if name in ("nop", ""):
        return "nop"
    name = {"utf8": "utf-8", "us-ascii": "ascii"}.get(name, name)
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unsupported encoding {encoding!r}") from None
    if codecs.lookup(name).name in ("utf-16", "utf-32"):
        raise ValueError(f"encoding {encoding!r}: name the byte order, like utf-16le")
    return name


def code_unit(codec: str) -> int:
    """Bytes per code unit of a wide encoding (2 for UTF-16), 1 for the others."""
    return 1 if codec == "nop" else _WIDE.get(codecs.lookup(codec).name, 1)


def ascii_compatible(codec: str) -> bool:
    """Whether ASCII text is the same bytes in `codec`, so patterns can match the raw bytes."""
    if codec == "nop":
        return False
    sample = "\n\t azAZ09{}[]().*+?^$|\\"
    return sample.encode(codec, "replace") == sample.encode()


class MultilineConfig(ComponentConfig):
    line_start_pattern: str = ""
    """A regular expression (Go syntax, multi-line mode) that matches where an entry starts; an
    entry runs to the next match. Exactly one of the two patterns is set."""
    line_end_pattern: str = ""
    """A regular expression that matches where an entry ends."""
    omit_pattern: bool = False
    """Leave the matched start or end pattern out of the entry (default false)."""

    @model_validator(mode="after")
    def _one_pattern(self) -> MultilineConfig:
        patterns = [p for p in (self.line_start_pattern, self.line_end_pattern) if p]
        if len(patterns) != 1:
            raise ValueError("set exactly one of line_start_pattern or line_end_pattern")
        try:
            re.compile(go_regex(patterns[0]).encode(), re.MULTILINE)
        except re.error as e:
            raise ValueError(f"invalid pattern {patterns[0]!r}: {e}") from None
        return self


class RetryConfig(ComponentConfig):
    enabled: bool = False
    """Retry a batch the pipeline refused with a retryable error (memory limit, full queue),
    holding back further reading, instead of dropping it (default false, as the Collector)."""
    initial_interval: Duration = Field(1.0, gt=0)
    """Wait after the first refusal (default 1s); it doubles after each."""
    max_interval: Duration = Field(30.0, gt=0)
    """Longest wait between attempts (default 30s)."""
    max_elapsed_time: Duration = Field(300.0, ge=0)
    """Give a batch up after this long (default 5m); 0 retries until the receiver stops."""


class Config(ComponentConfig):
    include: list[str] = Field(min_length=1)
    """Glob patterns of the files to read (`*`, `?`, `[...]`, `{a,b}` and `**` for any number
    of directories). Required."""
    exclude: list[str] = Field(default_factory=list)
    """Glob patterns of files not to read, among those `include` matched (default none)."""
    exclude_older_than: Duration = Field(0.0, ge=0)
    """Skip files not modified for this long (a duration); 0 (default) reads them all."""
    start_at: Literal["beginning", "end"] = "end"
    """Where to start a file found at the first poll when no checkpoint knows it: `end`
    (default: only what is written from now on) or `beginning`. Files that appear later are
    always read from their beginning."""
    poll_interval: Duration = Field(0.2, gt=0)
    """How often the file system is searched and the files read (default 200ms)."""
    fingerprint_size: ByteSize = Field(1000, ge=16)
    """Bytes at a file's start that identify it across renames and restarts (default 1kb =
    1000 bytes). A file whose first bytes change is a new file, read from its beginning."""
    max_log_size: ByteSize = Field(1024 * 1024, gt=0)
    """Longest entry in bytes (default 1MiB); the rest of a longer one is dropped."""
    max_concurrent_files: int = Field(1024, ge=2)
    """Most files open at once (default 1024); more matched files are read in turns."""
    encoding: str = "utf-8"
    """The files' character encoding (default utf-8; also utf-16le, utf-16be, ascii, big5,
    latin-1 and the other codecs Python knows). `nop` passes raw bytes: each body is bytes and
    the file is not split into lines. Invalid bytes become U+FFFD."""
    multiline: MultilineConfig | None = None
    """Split entries on a pattern instead of on newlines (default: one entry per line)."""
    force_flush_period: Duration = Field(0.5, ge=0)
    """Emit an entry that has no end yet (a last line without newline, the last entry of a
    multiline file) once the file has not grown for this long (default 500ms); 0 waits for its
    end forever."""
    preserve_leading_whitespaces: bool = False
    """Keep whitespace at the start of each entry (default false: trimmed)."""
    preserve_trailing_whitespaces: bool = False
    """Keep whitespace at the end of each entry (default false: trimmed)."""
    include_file_name: bool = True
    """Add the attribute `log.file.name`, the file's name (default true)."""
    include_file_path: bool = False
    """Add the attribute `log.file.path`, the path as matched (default false)."""
    include_file_name_resolved: bool = False
    """Add `log.file.name_resolved`, the name after symbolic links (default false)."""
    include_file_path_resolved: bool = False
    """Add `log.file.path_resolved`, the absolute path after symbolic links (default false)."""
    include_file_record_number: bool = False
    """Add `log.file.record_number`, the entry's number in its file from 1 (default false)."""
    attributes: dict[str, Any] = Field(default_factory=dict)
    """Attributes added to every entry (default none)."""
    resource: dict[str, Any] = Field(default_factory=dict)
    """Resource attributes of every entry (default none)."""
    operators: list[Operator] = Field(default_factory=list)
    """Operators each entry goes through, in order (`regex_parser`, `json_parser`,
    `time_parser`, `severity_parser`, `add`, `copy`, `move`, `remove`, `router`, `noop`); an
    operator's `output` (a router's routes) may skip ahead to a later one by its `id`, and an
    `if` expression limits it to some entries. Default none: the body is the line."""
    storage: str | None = None
    """A storage extension (like `file_storage/filelog`) that keeps each file's fingerprint and
    offset once the pipeline accepted what was read up to it, so that a restart resumes there.
    Default none: a restart starts as `start_at` says."""
    delete_after_read: bool = False
    """Delete each file once it was read to its end and the pipeline accepted it (default
    false). Needs `start_at: beginning`."""
    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)
    """What to do when the pipeline refuses a batch."""

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        codec_name(value)
        return value

    @field_validator("storage")
    @classmethod
    def _storage_id(cls, value: str | None) -> str | None:
        if value is not None:
            ComponentID.parse(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.delete_after_read and self.start_at != "beginning":
            raise ValueError("delete_after_read needs start_at: beginning")
        if self.multiline is not None and not ascii_compatible(codec_name(self.encoding)):
            raise ValueError(f"multiline needs an ASCII-compatible encoding, not {self.encoding}")
        check_pipeline(self.operators)
        return self
