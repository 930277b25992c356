"""The execution environment's own name resolution: `sandbox.localdomain`.

On Lambda, `sandbox.localdomain` names the execution environment to Lambda's own services: the
Telemetry API delivers only to `http://sandbox.localdomain:PORT`, and an extension listens
there. Here the runtime and extension processes run in a mount namespace of their own whose
/etc/hosts adds `sandbox.localdomain` for 127.0.0.1 to this machine's entries, so that software
resolving the name (to bind or to connect) behaves as on Lambda, unchanged. `unshare` and
`mount` come from util-linux; root, or unprivileged user namespaces, are needed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

SANDBOX_HOST = "sandbox.localdomain"
SANDBOX_ADDRESS = "127.0.0.1"

# Runs as `sh -c SCRIPT HOSTS COMMAND...`: binds HOSTS over /etc/hosts in the new namespace,
# then becomes COMMAND (same process id, so freezing and signals reach the command itself).
_SCRIPT = 'mount --bind "$0" /etc/hosts && exec "$@"'


def write_hosts(directory: Path) -> Path:
    """A hosts file of this machine's entries plus sandbox.localdomain, in `directory`."""
    try:
        current = Path("/etc/hosts").read_text()
    except OSError:
        current = "127.0.0.1 localhost\n::1 localhost\n"
    path = directory / "hosts"
    path.write_text(f"{current.rstrip()}\n{SANDBOX_ADDRESS} {SANDBOX_HOST}\n")
    return path


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """The unshare command that works here: a plain mount namespace as root, else one inside
    a user namespace. RuntimeError, saying why, when neither does."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("the Lambda emulator needs `unshare` (util-linux) for its sandbox")
    candidates = [(unshare, "--mount", "--propagation", "private")]
    candidates.append((unshare, "--user", "--map-root-user", "--mount"))
    if os.geteuid() != 0:
        candidates.reverse()
    errors = []
    for prefix in candidates:
        probe = subprocess.run(
            [*prefix, "mount", "--bind", "/etc/hosts", "/etc/hosts"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            return prefix
        errors.append(probe.stderr.strip())
    raise RuntimeError(f"the Lambda emulator cannot make its sandbox's /etc/hosts: {errors}")


def sandboxed(command: Sequence[str], hosts: Path) -> list[str]:
    """`command` run in a mount namespace whose /etc/hosts is `hosts`."""
    return [*_unshare_prefix(), "/bin/sh", "-c", _SCRIPT, str(hosts), *command]
