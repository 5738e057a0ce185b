"""Puts a Python environment's packages in front of a worker's sys.path
(`outboard-scripts-host --python-env DIR`), before numpy or any script is
imported, so a script imports what the user installed there — the
environment's own numpy too, where it has one.

An environment is a virtual environment's folder (`python3 -m venv DIR`,
`uv venv DIR`): its `pyvenv.cfg` names the Python version it was made
for, and its packages live in `lib/pythonX.Y/site-packages`. Compiled
packages only work with the Python version they were built for, so an
environment for another version is refused, with a message naming both.
"""

import os
import site
import sys


def _ours():
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _how(env):
    return f"make it with `python{_ours()} -m venv {env}` (or `uv venv --python {_ours()} {env}`) and install the packages again"


def use(env):
    """Adds the environment's site-packages in front of sys.path. Returns
    None, or why the environment is refused (its packages are then not
    used)."""
    cfg = os.path.join(env, "pyvenv.cfg")
    try:
        with open(cfg, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        return (f"outboard: the Python environment {env} is not a virtual environment "
                f"(cannot read {cfg}: {e.strerror}); its packages are not used: {_how(env)}")
    values = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    version = values.get("version_info") or values.get("version") or ""
    theirs = ".".join(version.split(".")[:2])
    if theirs != _ours():
        return (f"outboard: the Python environment {env} is for Python {version or '(no version in pyvenv.cfg)'}, "
                f"but Outboard's workers embed Python {sys.version.split()[0]}; its packages are not used: {_how(env)}")
    packages = os.path.join(env, "lib", f"python{_ours()}", "site-packages")
    if not os.path.isdir(packages):
        return f"outboard: the Python environment {env} has no {packages}; its packages are not used: {_how(env)}"
    before = list(sys.path)
    site.addsitedir(packages)  # also runs its .pth files (editable installs)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    return None
