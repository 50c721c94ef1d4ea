"""xsilo: RayFed's API on the xsilo runtime, without Ray and without pickle.

    import xsilo as fed

    @fed.remote
    def add(a, b):
        return a + b

    fed.init(addresses={"alice": "127.0.0.1:11012", "bob": "127.0.0.1:11011"}, party="alice")
    x = add.party("alice").remote(1, 2)
    y = add.party("bob").remote(x, 10)
    print(fed.get(y))          # 13, in every party
    fed.shutdown()

Every party runs the same driver. A call returns at once with a FedObject;
its body runs in the party it is pinned to, on the runtime's worker
threads; values are pushed over QUIC with mutual TLS to the parties that
consume them. A failure anywhere reaches every party that waits on it as a
FedRemoteError naming the party where it began.

Values cross as msgpack (None, bool, int, float, str, bytes, list, tuple,
dict) and numpy arrays as raw buffers with their dtype and shape; anything
else only through a codec registered on both sides (register_codec).
Decoding a peer's value never runs code.
"""

from __future__ import annotations

import atexit
import contextvars
import copy
import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional

from . import _xsilo

__all__ = [
    "init",
    "remote",
    "get",
    "kill",
    "shutdown",
    "stats",
    "register_codec",
    "FedObject",
    "FedRemoteError",
    "TaskError",
    "XsiloError",
]

FedObject = _xsilo.FedObject


class XsiloError(Exception):
    """A failure of the federated job other than a task's (a party lost, a
    divergence, an abort); its text says what and where."""


class FedRemoteError(XsiloError):
    """A task failed in another party (RayFed's FedRemoteError).

    ``src_party`` is the party where the failure began. ``cause`` is a
    :class:`RemoteCause` with the error's class name, message and traceback
    when that party set ``expose_error_trace``, and otherwise None.
    """

    def __init__(self, src_party: str, cause: Optional["RemoteCause"], text: str):
        super().__init__(text)
        self.src_party = src_party
        self.cause = cause
        self._text = text

    def __str__(self) -> str:
        return self._text


class RemoteCause(Exception):
    """What a remote task raised, as far as its party exposes it."""

    def __init__(self, kind: str, message: Optional[str], trace: Optional[str]):
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message
        self.trace = trace


class TaskError(XsiloError):
    """A task of this party failed: ``kind`` is the class name of what it
    raised, ``message`` its text, ``trace`` its traceback."""

    def __init__(self, party: str, kind: str, message: str, trace: Optional[str], text: str):
        super().__init__(text)
        self.party = party
        self.kind = kind
        self.message = message
        self.trace = trace


def _translate(e: "_xsilo.RuntimeFailure") -> Exception:
    variant, text, origin, kind, message, causes = e.args
    trace = causes[0] if causes else None
    if variant == "remote":
        cause = RemoteCause(kind, message, trace) if message is not None else None
        return FedRemoteError(origin, cause, text)
    if variant == "task":
        return TaskError(origin, kind, message, trace, text)
    return XsiloError(text)


# ----- values -----------------------------------------------------------------

_codecs_by_name: Dict[str, tuple] = {}
_codecs_by_type: Dict[type, tuple] = {}


def register_codec(cls: type, name: str, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]) -> None:
    """Lets values of ``cls`` cross silos: ``encode(value) -> bytes`` where
    the value is made, ``decode(bytes) -> value`` where it is used. Every
    party registers the same name for the same class. Decoding runs only
    codecs this party registered."""
    if not isinstance(name, str) or not name:
        raise ValueError("a codec needs a non-empty name")
    _codecs_by_name[name] = (cls, encode, decode)
    _codecs_by_type[cls] = (name, encode, decode)


def _encode_hook(obj: Any):
    entry = _codecs_by_type.get(type(obj))
    if entry is None:
        for cls, e in _codecs_by_type.items():
            if isinstance(obj, cls):
                entry = e
                break
    if entry is None:
        return None
    name, encode, _ = entry
    data = encode(obj)
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"codec {name!r} must encode to bytes, not {type(data).__name__}")
    return (name, bytes(data))


def _decode_hook(name: str, data: bytes):
    entry = _codecs_by_name.get(name)
    if entry is None:
        raise ValueError(f"xsilo: a value of codec {name!r} arrived, but this party registered no such codec")
    return entry[2](data)


# ----- calls --------------------------------------------------------------------


class _Slot:
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _rebuild(obj: Any, each: Callable[[Any], Any]) -> Any:
    """``obj`` with ``each`` applied to the items of its lists, tuples and
    dicts, all the way down. A container none of whose items changed is
    returned as it is (a namedtuple stays one); one that changed is rebuilt
    with its own type where it can be."""
    if isinstance(obj, (list, tuple)):
        items = [_rebuild(x, each) for x in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        if type(obj) is list:
            return items
        if type(obj) is tuple:
            return tuple(items)
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):
            return type(obj)(*items)
        return type(obj)(items)
    if isinstance(obj, dict):
        values = {k: _rebuild(v, each) for k, v in obj.items()}
        if all(values[k] is v for k, v in obj.items()):
            return obj
        if type(obj) is dict:
            return values
        out = obj.copy()
        out.update(values)
        return out
    return each(obj)


def _extract(obj: Any, inputs: List[FedObject]) -> Any:
    """The argument with each FedObject (in lists, tuples and dicts too)
    replaced by a slot numbering it in ``inputs``."""

    def slot(x):
        if isinstance(x, FedObject):
            inputs.append(x)
            return _Slot(len(inputs) - 1)
        return x

    return _rebuild(obj, slot)


def _fill(obj: Any, values: list) -> Any:
    """The argument with each slot replaced by its value."""
    return _rebuild(obj, lambda x: values[x.index] if isinstance(x, _Slot) else x)


_ATOMS = (type(None), bool, int, float, str, bytes, _Slot)


def _snapshot(template: Any) -> Any:
    """The plain arguments as they are when the call is made (RayFed
    serialises them then): a later change by the driver does not reach the
    body. Only the party that runs the call copies, and only what could
    change."""
    if type(template) is tuple and all(type(x) in _ATOMS for x in template):
        return template
    if type(template) is dict and all(type(x) in _ATOMS for x in template.values()):
        return dict(template)
    try:
        return copy.deepcopy(template)
    except Exception:  # noqa: BLE001 - an uncopyable argument is passed as it is
        return template


def _run(func, args, kwargs, values, num_returns):
    """Runs on a worker thread of the party the call is pinned to, in a
    context of its own: context variables (``decimal``'s context, numpy's
    ``errstate``, any ``ContextVar``) set by one body do not reach the next
    one that lands on the same thread. ``threading.local`` values do."""
    result = contextvars.Context().run(func, *_fill(args, values), **_fill(kwargs, values))
    if num_returns > 1:
        return list(result)
    return result


_BASENAMES: Dict[str, str] = {}


def _site(depth: int = 2):
    frame = sys._getframe(depth)
    path = frame.f_code.co_filename
    name = _BASENAMES.get(path)
    if name is None:
        name = _BASENAMES[path] = os.path.basename(path)
    return name, frame.f_lineno


_node = None
_me = None  # this party's name, while _node is set
_pid = None  # the process that started _node (a forked child has none)
_lock = threading.Lock()


def _require():
    if _node is None:
        raise XsiloError("xsilo is not initialised in this process: call fed.init(...) first")
    return _node


def _prepare(party: str, args: tuple, kwargs: dict):
    """What every ``.remote()`` does first: the node, the argument template
    (FedObjects replaced by slots, copied in the party that runs the call),
    the inputs, and the driver's call site (the caller of ``.remote()``)."""
    node = _require()
    inputs: List[FedObject] = []
    # An empty tuple or dict holds nothing to replace or to copy.
    a = _extract(args, inputs) if args else args
    k = _extract(kwargs, inputs) if kwargs else kwargs
    if party == _me:
        a = _snapshot(a) if a else a
        k = _snapshot(k) if k else k
    file, line = _site(3)
    return node, a, k, inputs, file, line


def _outputs(handles: list, num_returns: int):
    return handles[0] if num_returns == 1 else handles


class _RemoteFunction:
    def __init__(self, func, party=None, num_returns=1):
        self._func = func
        self._party = party
        self._num_returns = num_returns
        self.__name__ = getattr(func, "__name__", "task")
        self.__doc__ = getattr(func, "__doc__", None)

    def party(self, party: str) -> "_RemoteFunction":
        return _RemoteFunction(self._func, party, self._num_returns)

    def options(self, num_returns: int = 1, **unknown) -> "_RemoteFunction":
        _no_unknown("options", unknown)
        return _RemoteFunction(self._func, self._party, int(num_returns))

    def remote(self, *args, **kwargs):
        if self._party is None:
            raise XsiloError(f"{self.__name__}.remote(): pin the call first: {self.__name__}.party('alice').remote(...)")
        node, a, k, inputs, file, line = _prepare(self._party, args, kwargs)
        name = getattr(self._func, "__qualname__", self.__name__)
        return _outputs(node.task(self._party, file, line, name, self._func, a, k, inputs, self._num_returns), self._num_returns)

    def __call__(self, *args, **kwargs):
        return self._func(*args, **kwargs)


class _ActorMethod:
    # Holds the actor's ref, not its handle: the handle keeps its methods,
    # and a cycle would leave the actor's release to the garbage collector.
    def __init__(self, ref, party: str, cls_name: str, method: str, num_returns: int = 1):
        self._ref = ref
        self._party = party
        self._cls_name = cls_name
        self._method = method
        self._num_returns = num_returns
        self._name = f"{cls_name}.{method}"

    def options(self, num_returns: int = 1, **unknown) -> "_ActorMethod":
        _no_unknown("options", unknown)
        return _ActorMethod(self._ref, self._party, self._cls_name, self._method, int(num_returns))

    def remote(self, *args, **kwargs):
        node, a, k, inputs, file, line = _prepare(self._party, args, kwargs)
        handles = node.method(self._ref, file, line, self._name, self._method, a, k, inputs, self._num_returns)
        return _outputs(handles, self._num_returns)


class _ActorHandle:
    # Attribute names an actor class's methods cannot clash with: a method
    # is found through __getattr__, after the instance's own attributes.
    def __init__(self, ref, cls_name: str, methods: set):
        self._xsilo_ref = ref
        self._xsilo_party = ref.get_party()
        self._xsilo_cls = cls_name
        self._xsilo_methods = methods

    def __getattr__(self, name: str) -> _ActorMethod:
        if name.startswith("__") or name.startswith("_xsilo_") or name not in self._xsilo_methods:
            raise AttributeError(f"actor class {self._xsilo_cls} has no method {name!r}")
        # Kept: the next lookup finds it without coming here.
        method = self.__dict__[name] = _ActorMethod(self._xsilo_ref, self._xsilo_party, self._xsilo_cls, name)
        return method

    def __repr__(self) -> str:
        return f"<actor {self._xsilo_cls} {self._xsilo_ref!r}>"


class _RemoteClass:
    def __init__(self, cls, party=None):
        self._cls = cls
        self._party = party
        self.__name__ = cls.__name__

    def party(self, party: str) -> "_RemoteClass":
        return _RemoteClass(self._cls, party)

    def options(self, **unknown) -> "_RemoteClass":
        _no_unknown("options", unknown)
        return self

    def remote(self, *args, **kwargs) -> _ActorHandle:
        if self._party is None:
            raise XsiloError(f"{self.__name__}.remote(): pin the actor first: {self.__name__}.party('alice').remote(...)")
        node, a, k, inputs, file, line = _prepare(self._party, args, kwargs)
        if inputs:
            raise TypeError(
                f"{self.__name__}.remote(): an actor's constructor takes plain values; "
                "pass FedObjects to its methods instead"
            )
        ref = node.actor(self._party, file, line, self._cls.__qualname__, self._cls, a, k)
        methods = {m for m in dir(self._cls) if callable(getattr(self._cls, m, None)) and not m.startswith("__")}
        return _ActorHandle(ref, self._cls.__name__, methods)


def remote(obj=None, **options):
    """Decorates a function or a class to run in a party:
    ``f.party("alice").remote(*args, **kwargs)``; ``.options(num_returns=n)``
    for several outputs."""
    if obj is None:
        return lambda o: remote(o, **options)
    if isinstance(obj, type):
        if options:
            _no_unknown("remote", options)
        return _RemoteClass(obj)
    n = options.pop("num_returns", 1)
    _no_unknown("remote", options)
    return _RemoteFunction(obj, None, int(n))


def get(objs):
    """The values of a FedObject or of a list of them, in every party alike
    (the owner pushes each value to every party that has not had it)."""
    node = _require()
    single = isinstance(objs, FedObject)
    items = [objs] if single else list(objs)
    for o in items:
        if not isinstance(o, FedObject):
            raise TypeError(f"fed.get() takes FedObjects, not {type(o).__name__}")
    try:
        values = node.get(items)
    except _xsilo.RuntimeFailure as e:
        _fail(e)
    return values[0] if single else values


def kill(actor: _ActorHandle, *, no_restart: bool = True) -> None:
    """Stops an actor after the calls made before; later calls fail."""
    _require().kill(actor._xsilo_ref)


def shutdown() -> None:
    """Waits until every value this party sent is acknowledged, says goodbye
    and stops (MISSION E8)."""
    global _node
    if _forked():
        # The runtime's threads are the parent's: there is nothing to stop
        # here, and nothing would answer.
        _node = None
        return
    with _lock:
        node = _node
    if node is None:
        return
    try:
        node.shutdown()
    except _xsilo.RuntimeFailure as e:
        _fail(e)
    with _lock:
        _node = None
    _restore_sigint()


def _forked() -> bool:
    return _node is not None and os.getpid() != _pid


def _shutdown_at_exit() -> None:
    """A driver that ends without ``fed.shutdown()`` still delivers what it
    owes its peers: the interpreter's exit shuts the party down as
    ``shutdown()`` does (bounded as it is); after an uncaught exception it
    aborts the job, naming the exception's class. Registered after the
    extension module's own exit hook, so it runs first, while bodies can
    still run. Not in a forked child: the runtime is the parent's."""
    if _node is None or _forked():
        return
    # An uncaught exception ended the driver (the interpreter printed it and
    # kept it here; SystemExit is not kept): the peers learn that, not a
    # divergence from a driver that seems to have finished early.
    crash = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if crash is not None:
        _node.abort(f"the driver of party '{_me}' ended with an uncaught {type(crash).__name__}")
    try:
        shutdown()
    except XsiloError as e:
        if crash is None:
            sys.stderr.write(f"xsilo: the shutdown at exit failed: {e}\n")


atexit.register(_shutdown_at_exit)


def stats() -> dict:
    """Objects and bytes this party holds now and has moved."""
    return _require().stats()


# ----- init -----------------------------------------------------------------------

# RayFed's cross-silo options and where they go in xsilo's configuration.
_COMM_KEYS = {
    "messages_max_size_in_bytes": "max_message_size",
    "timeout_in_ms": "send_timeout",
    "exit_on_sending_failure": "exit_on_sending_failure",
    "expose_error_trace": "expose_error_trace",
    "continue_waiting_for_data_sending_on_error": "continue_waiting_for_data_sending_on_error",
}
_NO_MEANING = {
    "serializing_allowed_list": "values never cross as pickle here, so there is nothing to allow",
    "send_resource_label": "xsilo has no Ray resources",
    "recv_resource_label": "xsilo has no Ray resources",
    "proxy_max_restarts": "xsilo has no proxy actors",
    "grpc_retry_policy": "xsilo speaks QUIC, not gRPC (see [communication.retry] in an xsilo TOML)",
    "grpc_channel_options": "xsilo speaks QUIC, not gRPC",
    "use_global_proxy": "xsilo has no proxy actors",
    "http_header": "xsilo speaks QUIC, not HTTP/gRPC",
    "max_concurrency": "xsilo's worker pool is set in an xsilo TOML ([execution] workers)",
}
_NO_MEANING_ARGS = {
    "sender_proxy_cls": "xsilo has no proxy actors",
    "receiver_proxy_cls": "xsilo has no proxy actors",
    "receiver_sender_proxy_cls": "xsilo has no proxy actors",
}


def _no_unknown(where: str, unknown: dict) -> None:
    if unknown:
        key = sorted(unknown)[0]
        raise TypeError(f"{where}(): unknown option {key!r}")


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return _toml_str(str(v))


def _rayfed_toml(addresses, job_name, config, tls_config) -> str:
    if not isinstance(addresses, dict) or not addresses:
        raise ValueError("fed.init(): addresses must be a dict of party name to 'host:port'")
    lines = [f"job = {_toml_str(job_name)}", "", "[parties]"]
    for p, a in addresses.items():
        lines.append(f"{p} = {_toml_str(str(a))}")
    if tls_config:
        unknown = set(tls_config) - {"ca_cert", "cert", "key"}
        if unknown:
            raise ValueError(f"fed.init(): unknown tls_config key {sorted(unknown)[0]!r} (known: ca_cert, cert, key)")
        missing = {"ca_cert", "cert", "key"} - set(tls_config)
        if missing:
            raise ValueError(f"fed.init(): tls_config needs {sorted(missing)[0]!r}")
        lines += ["", "[tls]",
                  f"ca = {_toml_str(os.path.abspath(tls_config['ca_cert']))}",
                  f"cert = {_toml_str(os.path.abspath(tls_config['cert']))}",
                  f"key = {_toml_str(os.path.abspath(tls_config['key']))}"]
    comm = {}
    config = dict(config or {})
    for key, value in config.items():
        if key == "cross_silo_comm":
            if not isinstance(value, dict):
                raise ValueError("fed.init(): config['cross_silo_comm'] must be a dict")
            for k, v in value.items():
                if k in _COMM_KEYS:
                    if k == "timeout_in_ms":
                        v = f"{int(v)}ms"
                    comm[_COMM_KEYS[k]] = v
                elif k in _NO_MEANING:
                    raise ValueError(f"fed.init(): config['cross_silo_comm'][{k!r}] has no meaning in xsilo: {_NO_MEANING[k]}")
                else:
                    raise ValueError(
                        f"fed.init(): unknown config key 'cross_silo_comm.{k}' "
                        f"(known: {', '.join(sorted(_COMM_KEYS))})"
                    )
        elif key == "barrier_on_initializing":
            comm["barrier_on_initializing"] = bool(value)
        else:
            raise ValueError(
                f"fed.init(): unknown config key {key!r} (known: cross_silo_comm, barrier_on_initializing)"
            )
    if comm:
        lines += ["", "[communication]"] + [f"{k} = {_toml_value(v)}" for k, v in comm.items()]
    return "\n".join(lines) + "\n"


def _leave_sigint_to_the_runtime() -> None:
    """Ctrl-C behaves as for a Rust driver (MISSION E9): the runtime tells
    the peers, runs the sending-failure handler and exits with status 130.
    Python's own KeyboardInterrupt would otherwise end the driver first,
    before the peers are told. The no-op Python handler is installed before
    the runtime starts, so that the runtime's handler chains to it rather
    than being replaced by it."""
    import signal

    global _previous_sigint
    try:
        _previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: _interrupted.set())
    except ValueError:
        pass  # not the main thread: the driver's own handling stays


def _restore_sigint() -> None:
    """Gives SIGINT back to Python's handling (after shutdown, or when the
    start failed)."""
    import signal

    global _previous_sigint
    if _previous_sigint is None:
        return
    try:
        signal.signal(signal.SIGINT, _previous_sigint)
    except ValueError:
        return
    _previous_sigint = None


_previous_sigint = None
_interrupted = threading.Event()


def _fail(e: "_xsilo.RuntimeFailure"):
    """Raises the error of a failed wait; after Ctrl-C, waits instead for
    the runtime to finish telling the peers and exit the process with 130
    (bounded), so that the driver does not end first with another status."""
    if _interrupted.is_set():
        import time

        time.sleep(60)  # the runtime exits the process long before this
        os._exit(130)
    raise _translate(e) from None


def init(
    addresses: Optional[Dict[str, str]] = None,
    party: Optional[str] = None,
    config: Any = None,
    tls_config: Optional[Dict[str, str]] = None,
    logging_level: Optional[str] = None,
    job_name: Optional[str] = None,
    sending_failure_handler: Optional[Callable[[Exception], None]] = None,
    **unknown,
) -> None:
    """Starts this party of the job.

    RayFed's form: ``init(addresses={...}, party="alice", config={...},
    tls_config={"ca_cert": ..., "cert": ..., "key": ...}, job_name=...,
    sending_failure_handler=...)``. Without ``tls_config`` the parties use
    development certificates derived from the job's name (every party
    derives the same CA; anyone who knows the name can join): pass
    ``tls_config`` for anything but development.

    xsilo's form: ``init(config="alice.toml", party="alice")`` with an
    xsilo TOML configuration (paths relative to the file).

    Unknown arguments and configuration keys are errors naming the key.
    """
    global _node, _me, _pid
    for key in sorted(unknown):
        if key in _NO_MEANING_ARGS and unknown[key] is None:
            continue
        if key in _NO_MEANING_ARGS:
            raise TypeError(f"init(): {key!r} has no meaning in xsilo: {_NO_MEANING_ARGS[key]}")
        raise TypeError(f"init(): unknown argument {key!r}")
    if party is None:
        raise ValueError("fed.init(): party is required")
    if logging_level is not None and "XSILO_LOG" not in os.environ:
        os.environ["XSILO_LOG"] = str(logging_level).lower()
    dev_secret = None
    if isinstance(config, (str, os.PathLike)):
        if addresses is not None or tls_config is not None or job_name is not None:
            raise ValueError("fed.init(): with an xsilo TOML file, addresses, tls_config and job_name come from the file")
        path = os.path.abspath(os.fspath(config))
        with open(path, encoding="utf-8") as f:
            text = f.read()
        base = os.path.dirname(path)
    else:
        job = job_name or "Anonymous_job"
        text = _rayfed_toml(addresses, job, config, tls_config)
        base = os.getcwd()
        if not tls_config:
            dev_secret = "xsilo-python-dev-job:" + job
            sys.stderr.write(
                f"xsilo: no tls_config: party '{party}' uses development certificates derived from "
                f"the job name {job!r}; anyone who knows it can join. Pass tls_config for production.\n"
            )
    handler = None
    if sending_failure_handler is not None:
        def handler(text):
            sending_failure_handler(XsiloError(text) if text else None)
    with _lock:
        if _node is not None:
            raise XsiloError("fed.init() was already called in this process (call fed.shutdown() first)")
        _leave_sigint_to_the_runtime()
        try:
            node = _xsilo.start(text, base, party, dev_secret, handler, _encode_hook, _decode_hook, _run)
            _me, _pid = node.party, os.getpid()
            _node = node
        except _xsilo.RuntimeFailure as e:
            _restore_sigint()
            raise _translate(e) from None
        except BaseException:
            _restore_sigint()
            raise
