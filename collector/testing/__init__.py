"""Test doubles shipped with coldtail: sinks, nop components, batch builders."""
