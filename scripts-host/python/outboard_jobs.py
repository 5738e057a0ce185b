"""Runs jobs for outboard-scripts-host: loads user scripts, calls their
functions, and turns every failure into a report that names file and line.

Called from Rust with the GIL held. Everything returned is a JSON string in
the shape of outboard_engine::protocol::JobReply.
"""

import importlib.util
import json
import os
import sys
import threading
import time
import traceback

# path -> ((mtime_ns, size), module): a script is loaded again when it changes.
_modules = {}


class _ScriptError(Exception):
    def __init__(self, kind, message, file=None, line=None):
        super().__init__(message)
        self.kind, self.message, self.file, self.line = kind, message, file, line


def load_script(path):
    """The module for the script at `path`, (re)loaded if the file changed."""
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise _ScriptError("ScriptNotFound", f"cannot read script {path}: {e.strerror}", path) from None
    key = (st.st_mtime_ns, st.st_size)
    cached = _modules.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    name = "outboard_script_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_").replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _ScriptError("ScriptNotFound", f"{path} is not a Python file", path)
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec.loader.exec_module(module)
    _modules[path] = (key, module)
    return module


def _find_function(module, path, function):
    fn = getattr(module, function, None)
    if fn is None:
        raise _ScriptError("MissingFunction", f"{path} has no function {function!r}", path)
    if not callable(fn):
        raise _ScriptError("MissingFunction", f"{path}: {function!r} is a {type(fn).__name__}, not a function", path)
    return fn


def error_report(exc, path):
    """kind, message, file, line, traceback text for an exception from a script."""
    if isinstance(exc, _ScriptError):
        return exc.kind, exc.message, exc.file, exc.line, ""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    file, line = None, None
    if isinstance(exc, SyntaxError) and exc.filename:
        file, line = exc.filename, exc.lineno
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        # The innermost frame in the user's script; else the innermost at all.
        own = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(path)]
        chosen = (own or frames or [None])[-1]
        if chosen is not None:
            file, line = chosen.filename, chosen.lineno
    message = str(exc) if not isinstance(exc, SyntaxError) else f"{exc.msg}"
    return type(exc).__name__, message, file, line, text


def _reply(ok, seconds, value=None, error=None):
    if ok:
        return json.dumps({"ok": True, "value": value, "seconds": seconds}, allow_nan=False)
    kind, message, file, line, text = error
    return json.dumps({"ok": False, "seconds": seconds, "kind": kind, "message": message,
                       "file": file, "line": line, "traceback": text})


def run_job(request_json):
    """Runs one job request (JSON bytes); returns the reply as a JSON string."""
    began = time.perf_counter()
    request = json.loads(request_json)
    path, function, args = request["file"], request["function"], request.get("args") or []
    try:
        fn = _find_function(load_script(path), path, function)
        value = fn(*args)
    except BaseException as exc:  # SystemExit from a script is a script error too
        return _reply(False, time.perf_counter() - began, error=error_report(exc, path))
    seconds = time.perf_counter() - began
    try:
        return _reply(True, seconds, value=value)
    except (TypeError, ValueError) as exc:
        return _reply(False, seconds, error=("ResultNotJSON",
                      f"{function} returned {type(value).__name__}, which JSON cannot carry: {exc}",
                      os.path.abspath(path), None, ""))


def run_threads(path, function, arg_lists, nthreads):
    """The GIL baseline: `function(*args)` for each args in arg_lists, on
    `nthreads` Python threads of this one interpreter. Returns JSON with the
    results in order, per-thread statistics and the wall time."""
    from concurrent.futures import ThreadPoolExecutor

    fn = _find_function(load_script(path), path, function)
    per_thread = {}
    lock = threading.Lock()

    def timed(args):
        began = time.perf_counter()
        value = fn(*args)
        spent = time.perf_counter() - began
        with lock:
            jobs, seconds = per_thread.get(threading.current_thread().name, (0, 0.0))
            per_thread[threading.current_thread().name] = (jobs + 1, seconds + spent)
        return value

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="python-thread") as pool:
        results = list(pool.map(timed, arg_lists))
    wall = time.perf_counter() - began
    stats = [{"worker": name, "jobs": jobs, "seconds": seconds}
             for name, (jobs, seconds) in sorted(per_thread.items(), key=lambda kv: (len(kv[0]), kv[0]))]
    return json.dumps({"results": results, "stats": stats, "seconds": wall})
