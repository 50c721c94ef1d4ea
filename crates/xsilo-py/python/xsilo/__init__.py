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
    """A task failed in another party (RayFed's ``fed.exceptions.FedRemoteError``).

    ``src_party`` is the party where the failure began. ``cause`` is what
    RayFed puts there: for the error ``fed.get`` raises, a FedRemoteError
    whose ``str()`` is RayFed's (``FedRemoteError occurred at alice caused
    by ...``); for that one, a :class:`RemoteCause` with the error's class
    name, message and traceback when the origin set ``expose_error_trace``,
    and otherwise None (only the kind and the origin cross the boundary).
    """

    def __init__(self, src_party: str, cause: Optional[Exception] = None, text: Optional[str] = None):
        super().__init__(text if text is not None else _remote_text(src_party, cause))
        self.src_party = src_party
        self.cause = cause
        self._text = text

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        return _remote_text(self.src_party, self.cause)

    def __reduce__(self):
        return (FedRemoteError, (self.src_party, self.cause, self._text))


def _remote_text(src_party: str, cause: Optional[Exception]) -> str:
    text = f"FedRemoteError occurred at {src_party}"
    if cause is not None:
        text += f" caused by {cause}"
    return text


class RemoteCause(Exception):
    """What a remote task raised, as far as its party exposes it: ``kind``
    (the class name), ``message`` and ``trace``. Never the object itself:
    nothing a peer sends is unpickled."""

    def __init__(self, kind: str, message: Optional[str], trace: Optional[str]):
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message
        self.trace = trace

    def __reduce__(self):
        return (RemoteCause, (self.kind, self.message, self.trace))


class TaskError(XsiloError):
    """A task of this party failed: ``kind`` is the class name of what it
    raised, ``message`` its text, ``trace`` its traceback, and ``cause``
    the exception object itself (RayFed's ``.cause``). When the class of
    that exception allows it, the error raised is also an instance of it
    (``except MyError`` catches it, as with RayFed)."""

    def __init__(self, party: str, kind: str, message: str, trace: Optional[str], text: str,
                 cause: Optional[BaseException] = None):
        Exception.__init__(self, text)
        self.party = party
        self.kind = kind
        self.message = message
        self.trace = trace
        self.cause = cause if cause is not None else RemoteCause(kind, message, trace)
        self._text = text

    def __str__(self) -> str:
        return self._text

    def __getattr__(self, name: str):
        # Attributes of the original exception (e.code, e.errno) are
        # reachable on the error, as on Ray's RayTaskError(MyError).
        cause = self.__dict__.get("cause")
        if cause is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(cause, name)

    def __reduce__(self):
        # Picklable (a multiprocessing.Queue, copy): as a plain TaskError,
        # the cause as its kind, message and trace.
        return (TaskError, (self.party, self.kind, self.message, self.trace, self._text))


class AddressInUseError(XsiloError, ValueError, AssertionError):
    """``fed.init()``: this party's listen address is held by another
    program. Also an AssertionError and a ValueError, as RayFed's callers
    catch it."""


_DUAL_ERRORS: Dict[type, type] = {}


def _task_error_class(cause: BaseException) -> type:
    """TaskError, or a class that is both TaskError and the class of
    ``cause`` (made once per class), where Python allows it."""
    cls = type(cause)
    if not isinstance(cause, Exception) or cls in (Exception,) or issubclass(cls, XsiloError):
        return TaskError
    dual = _DUAL_ERRORS.get(cls)
    if dual is None:
        try:
            dual = type(f"TaskError({cls.__name__})", (TaskError, cls), {"__module__": __name__})
        except TypeError:
            dual = TaskError
        _DUAL_ERRORS[cls] = dual
    return dual


def _translate(e: "_xsilo.RuntimeFailure") -> Exception:
    variant, text, origin, kind, message, causes, exception = e.args
    trace = causes[0] if causes else None
    if variant == "remote":
        inner = FedRemoteError(origin, RemoteCause(kind, message, trace) if message is not None else None)
        return FedRemoteError(origin, inner, text)
    if variant == "task":
        if exception is not None:
            try:
                return _task_error_class(exception)(origin, kind, message, trace, text, exception)
            except Exception:  # noqa: BLE001 - a class that cannot be mixed in
                return TaskError(origin, kind, message, trace, text, exception)
        return TaskError(origin, kind, message, trace, text)
    if variant == "address_in_use":
        return AddressInUseError(text)
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
        # With serializing_allowed_list (RayFed's option), a value no codec
        # takes is pickled; the receiver rebuilds only allow-listed classes.
        # numpy values cross as raw buffers, never pickled.
        if _allowed is not None and not _is_numpy(obj):
            return (_PICKLE_CODEC, _pickle_dumps(obj))
        return None
    name, encode, _ = entry
    data = encode(obj)
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"codec {name!r} must encode to bytes, not {type(data).__name__}")
    return (name, bytes(data))


def _decode_hook(name: str, data: bytes, local: bool = False):
    if name == _PICKLE_CODEC:
        if local:
            # This party's own value read back (its fed.get, or a task of
            # its own that uses it): it pickled it, so it is not a peer's.
            import pickle

            return pickle.loads(data)
        if _allowed is None:
            import pickle

            raise pickle.UnpicklingError(
                "a pickled value arrived, but this party set no serializing_allowed_list: nothing is unpickled"
            )
        return _restricted_loads(data)
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


class ObjectRef:
    """A FedObject that sat inside a list, tuple or dict argument, as the
    body sees it (RayFed hands such nested objects to the body as Ray
    references): ``fed.get(ref)`` (or ``xsilo.ray.get(ref)``) in the body
    gives its value, which is already in this party; nothing crosses.
    FedObjects passed directly as arguments arrive as their values."""

    __slots__ = ("_value",)

    def __init__(self, value: Any):
        self._value = value

    def __repr__(self) -> str:
        return f"ObjectRef({type(self._value).__name__})"


def _fill(obj: Any, values: list, top: bool = True) -> Any:
    """The arguments (a tuple or a dict) with each slot replaced: by its
    value where the FedObject was an argument itself, by an ObjectRef to
    the value where it sat inside a container (RayFed's shape)."""
    if not top:
        return _rebuild(obj, lambda x: ObjectRef(values[x.index]) if isinstance(x, _Slot) else x)
    if type(obj) is dict:
        if not any(isinstance(v, (_Slot, list, tuple, dict)) for v in obj.values()):
            return obj
        return {k: values[v.index] if isinstance(v, _Slot) else _fill(v, values, False) for k, v in obj.items()}
    if not any(isinstance(v, (_Slot, list, tuple, dict)) for v in obj):
        return obj
    return tuple(values[v.index] if isinstance(v, _Slot) else _fill(v, values, False) for v in obj)


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
            raise ValueError(f"{self.__name__}.remote(): pin the call first: {self.__name__}.party('alice').remote(...)")
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
            raise ValueError(f"{self.__name__}.remote(): pin the actor first: {self.__name__}.party('alice').remote(...)")
        node, a, k, inputs, file, line = _prepare(self._party, args, kwargs)
        ref = node.actor(self._party, file, line, self._cls.__qualname__, self._cls, a, k, inputs)
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
    (the owner pushes each value to every party that has not had it).

    Inside a body, ``fed.get`` of an :class:`ObjectRef` (a FedObject that
    was nested in an argument) or a list of them gives the value at once."""
    if isinstance(objs, ObjectRef):
        return objs._value
    if isinstance(objs, (list, tuple)) and objs and all(isinstance(o, ObjectRef) for o in objs):
        return [o._value for o in objs]
    node = _require()
    single = isinstance(objs, FedObject)
    if not single and not isinstance(objs, (list, tuple)):
        raise TypeError(f"fed.get() takes a FedObject or a list of them, not {type(objs).__name__}")
    items = [objs] if single else list(objs)
    for o in items:
        if not isinstance(o, FedObject):
            raise TypeError(f"fed.get() takes FedObjects (or, in a body, ObjectRefs), not {type(o).__name__}")
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
    and stops (promise E8)."""
    global _node, _allowed, _cluster_config, _job_config
    if _forked():
        # The runtime's threads are the parent's: there is nothing to stop
        # here, and nothing would answer.
        _node = None
        return
    with _lock:
        node = _node
    if node is None:
        return
    error = None
    stopped = node.stopped()
    try:
        node.shutdown()
    except _xsilo.RuntimeFailure as e:
        error = e
    finally:
        with _lock:
            if _node is node:
                _node = None
                _allowed = _cluster_config = _job_config = None
        _restore_sigint()
    # The runtime's thread ends (and its sockets close) once the node is
    # gone: wait for it, bounded, so that a new fed.init in this process
    # can bind the same address at once.
    del node
    stopped.wait(_STOP_WAIT)
    if error is not None:
        _fail(error)


# How long fed.shutdown() waits for the runtime's thread to end.
_STOP_WAIT = 5.0


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
    if _exit_status is not None:
        crash = None  # the runtime is ending the process; the peers were told
    if crash is not None:
        _node.abort(f"the driver of party '{_me}' ended with an uncaught {type(crash).__name__}")
    try:
        shutdown()
    except XsiloError as e:
        if crash is None and _exit_status is None:
            sys.stderr.write(f"xsilo: the shutdown at exit failed: {e}\n")
    except SystemExit:
        pass


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
# RayFed's options with no counterpart here: warned about once, then ignored.
_NO_COUNTERPART = {
    "send_resource_label": "xsilo has no Ray resources",
    "recv_resource_label": "xsilo has no Ray resources",
    "proxy_max_restarts": "xsilo has no proxy actors",
    "use_global_proxy": "xsilo has no proxy actors",
    "http_header": "xsilo speaks QUIC, not HTTP/gRPC (per-party metadata is [overrides.PARTY] metadata in an xsilo TOML)",
    "max_concurrency": "xsilo's worker pool is set in an xsilo TOML ([execution] workers)",
}
# gRPC channel options that have a counterpart: the largest message.
_GRPC_SIZE_OPTIONS = ("grpc.max_send_message_length", "grpc.max_receive_message_length")
_NO_MEANING_ARGS = {
    "sender_proxy_cls": "xsilo has no proxy actors",
    "receiver_proxy_cls": "xsilo has no proxy actors",
    "receiver_sender_proxy_cls": "xsilo has no proxy actors",
}


class XsiloConfigWarning(UserWarning):
    """A RayFed option that xsilo ignores (unknown, or without a counterpart)."""


_warned: set = set()


def _warn_once(key: str, why: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    import warnings

    # Point at the driver's fed.init(), not at this package.
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"xsilo: fed.init(): {key!r} is ignored: {why}", XsiloConfigWarning, stacklevel=level)


def _no_unknown(where: str, unknown: dict) -> None:
    if unknown:
        key = sorted(unknown)[0]
        raise TypeError(f"{where}(): unknown option {key!r}")


def _whole(key: str, v, least: int) -> int:
    """A RayFed option that is a whole number of at least ``least``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")) \
            or int(v) != v or v < least or v >= 2**63:
        raise ValueError(f"fed.init(): cross_silo_comm.{key} must be a whole number of at least {least}, not {v!r}")
    return int(v)


def _grpc_duration(key: str, v) -> str:
    """A gRPC duration ("1s", "0.5s") or a number of seconds, as "Nms"."""
    text = str(v).strip()
    what = f"fed.init(): cross_silo_comm.grpc_retry_policy.{key} must be a duration such as '5s' (at most a day)"
    try:
        seconds = float(text[:-1]) if text.endswith("s") else float(text)
    except ValueError:
        raise ValueError(f"{what}, not {v!r}") from None
    if not 0 <= seconds <= 86400:  # also refuses nan
        raise ValueError(f"{what}, not {v!r}")
    return f"{int(round(seconds * 1000))}ms"


def _retry_policy(policy) -> dict:
    """RayFed's grpc_retry_policy as xsilo's [communication.retry]."""
    if not isinstance(policy, dict):
        raise ValueError("fed.init(): cross_silo_comm.grpc_retry_policy must be a dict")
    retry = {}
    for k, v in policy.items():
        if v is None:
            continue
        if k == "maxAttempts":
            retry["max_attempts"] = _whole(f"grpc_retry_policy.{k}", v, 1)
        elif k == "initialBackoff":
            retry["initial_backoff"] = _grpc_duration(k, v)
        elif k == "maxBackoff":
            retry["max_backoff"] = _grpc_duration(k, v)
        elif k == "backoffMultiplier":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= 1000:
                raise ValueError(f"fed.init(): cross_silo_comm.grpc_retry_policy.{k} must be a number from 1 to 1000, not {v!r}")
            retry["multiplier"] = float(v)
        else:
            _warn_once(f"cross_silo_comm.grpc_retry_policy.{k}", "it is gRPC's own; xsilo retries every transient failure")
    return retry


def _allowed_list(value) -> Dict[str, frozenset]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError("fed.init(): cross_silo_comm.serializing_allowed_list must be a dict of module name to a list of names ('*' for all)")
    out = {}
    for module, names in value.items():
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, (list, tuple, set, frozenset)) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"fed.init(): cross_silo_comm.serializing_allowed_list[{module!r}] must be a list of "
                             f"names ('*' for all), not {names!r}")
        out[module] = frozenset(names)
    return out


def _rayfed_config(addresses, party, job_name, config, tls_config):
    """xsilo's configuration for RayFed's arguments, as the dict of the
    tables and keys of an xsilo TOML file (job, parties, tls,
    communication, communication.retry), and the pickle allow-list."""
    if not isinstance(addresses, dict) or not addresses:
        raise ValueError("fed.init(): addresses must be a dict of party name to 'host:port'")
    out: Dict[str, Any] = {"job": job_name, "parties": {str(p): str(a) for p, a in addresses.items()}}
    if tls_config:
        unknown = set(tls_config) - {"ca_cert", "cert", "key"}
        if unknown:
            raise ValueError(f"fed.init(): unknown tls_config key {sorted(unknown)[0]!r} (known: ca_cert, cert, key)")
        missing = {"ca_cert", "cert", "key"} - set(tls_config)
        if missing:
            raise ValueError(f"fed.init(): tls_config needs {sorted(missing)[0]!r}")
        out["tls"] = {
            "ca": os.path.abspath(tls_config["ca_cert"]),
            "cert": os.path.abspath(tls_config["cert"]),
            "key": os.path.abspath(tls_config["key"]),
        }
    comm: Dict[str, Any] = {}
    retry: Dict[str, Any] = {}
    allowed = None
    grpc_size = None
    config = dict(config or {})
    for key, value in config.items():
        if key == "cross_silo_comm":
            if not isinstance(value, dict):
                raise ValueError("fed.init(): config['cross_silo_comm'] must be a dict")
            for k, v in value.items():
                if v is None:
                    continue  # RayFed's "not set"
                if k in _COMM_KEYS:
                    if k == "timeout_in_ms":
                        v = f"{_whole(k, v, 1)}ms"
                    elif k == "messages_max_size_in_bytes":
                        v = _whole(k, v, 1)
                    elif not isinstance(v, bool):
                        raise ValueError(f"fed.init(): cross_silo_comm.{k} must be True or False, not {v!r}")
                    comm[_COMM_KEYS[k]] = v
                elif k == "grpc_retry_policy":
                    retry = _retry_policy(v)
                elif k == "grpc_channel_options":
                    if not isinstance(v, (list, tuple)) or not all(
                            isinstance(o, (list, tuple)) and len(o) == 2 for o in v):
                        raise ValueError("fed.init(): cross_silo_comm.grpc_channel_options must be a list of "
                                         f"(name, value) pairs, not {v!r}")
                    for name, setting in v:
                        if name in _GRPC_SIZE_OPTIONS:
                            grpc_size = max(grpc_size or 0, _whole(f"grpc_channel_options {name}", setting, 1))
                        else:
                            _warn_once(f"cross_silo_comm.grpc_channel_options {name}", "it is gRPC's own")
                elif k == "serializing_allowed_list":
                    allowed = _allowed_list(v)
                elif k in _NO_COUNTERPART:
                    _warn_once(f"cross_silo_comm.{k}", _NO_COUNTERPART[k])
                else:
                    _warn_once(f"cross_silo_comm.{k}", f"RayFed has no such option (known: {', '.join(sorted(_COMM_KEYS))}, ...)")
        elif key == "barrier_on_initializing":
            comm["barrier_on_initializing"] = bool(value)
        else:
            _warn_once(key, "not an option of RayFed's config (known: cross_silo_comm, barrier_on_initializing)")
    if grpc_size is not None and "max_message_size" not in comm:
        comm["max_message_size"] = grpc_size
    if retry:
        comm["retry"] = retry
    if comm:
        out["communication"] = comm
    return out, allowed


class _ClusterConfig:
    """What ``xsilo.config.get_cluster_config()`` returns (RayFed's shape)."""

    def __init__(self, addresses: Dict[str, str], party: str, tls_config: Dict[str, str]):
        self.cluster_addresses = dict(addresses)
        self.current_party = party
        self.tls_config = dict(tls_config or {})


class _JobConfig:
    """What ``xsilo.config.get_job_config()`` returns (RayFed's shape)."""

    def __init__(self, job_name: str, cross_silo_comm: Dict[str, Any]):
        self.job_name = job_name
        self.cross_silo_comm_config_dict = dict(cross_silo_comm or {})


_cluster_config: Optional[_ClusterConfig] = None
_job_config: Optional[_JobConfig] = None


# ----- pickle, for the classes on serializing_allowed_list only ---------------

_PICKLE_CODEC = "xsilo.pickle"
_allowed: Optional[Dict[str, frozenset]] = None


def _pickle_dumps(obj: Any) -> bytes:
    try:
        import cloudpickle

        return cloudpickle.dumps(obj)
    except ImportError:
        import pickle

        return pickle.dumps(obj)


def _restricted_loads(data: bytes) -> Any:
    """Unpickles a peer's bytes with RayFed's rule: a global is rebuilt only
    if its module is on the allow-list with its name (or ``"*"``, any name
    the module defines). Anything else is refused before it is looked up,
    so no other code runs. Stricter than a plain name check, because pickle
    resolves a dotted name attribute by attribute (``"builtins.exec"`` in a
    listed module would reach any module it imported):

    * a name with a dot is refused;
    * a module object is refused (it would open the way to its globals);
    * under ``"*"``, the object must belong to the listed module's own
      package (its ``__module__``): a function the module merely imported,
      such as ``os.system``, is refused.
    """
    import io
    import pickle
    import types

    allowed = _allowed or {}

    class _Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            names = allowed.get(module)
            listed = names is not None and ("*" in names or name in names)
            if not listed or "." in name:
                raise pickle.UnpicklingError(
                    f"global '{module}.{name}' is forbidden: not on this party's serializing_allowed_list"
                )
            found = super().find_class(module, name)
            owner = getattr(found, "__module__", None) or ""
            package = module.split(".")[0]
            if isinstance(found, types.ModuleType):
                raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden: it is a module")
            if name not in names and owner != package and not owner.startswith(package + "."):
                raise pickle.UnpicklingError(
                    f"global '{module}.{name}' is forbidden: it is defined in {owner or 'no module'!r}, "
                    f"and serializing_allowed_list lets '*' mean only what {module!r} defines"
                )
            return found

    return _Restricted(io.BytesIO(data)).load()


def _is_numpy(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module == "numpy" or module.startswith("numpy.")


def _leave_sigint_to_the_runtime() -> None:
    """Ctrl-C and SIGTERM behave as for a Rust driver (promise E9): the
    runtime tells the peers, runs the sending-failure handler and exits
    with status 130 or 143. Python's own KeyboardInterrupt (or SIGTERM's
    default) would otherwise end the driver first, before the peers are
    told. The recording Python handlers are installed before the runtime
    starts, so that the runtime's handlers chain to them rather than being
    replaced by them; a driver's own SIGTERM handler is left alone."""
    import signal

    global _previous_signals
    _previous_signals = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            current = signal.getsignal(signum)
            if signum == signal.SIGTERM and current not in (signal.SIG_DFL, None):
                continue
            _previous_signals[signum] = signal.signal(signum, _record_signal)
        except ValueError:
            pass  # not the main thread: the driver's own handling stays


def _record_signal(signum, frame) -> None:
    global _interrupted_by
    _interrupted_by = signum
    _interrupted.set()


def _restore_sigint() -> None:
    """Gives SIGINT and SIGTERM back to Python's handling (after shutdown,
    or when the start failed)."""
    import signal

    global _previous_signals
    for signum, previous in list(_previous_signals.items()):
        try:
            signal.signal(signum, previous)
        except (ValueError, TypeError):
            pass
    _previous_signals = {}


_previous_signals: Dict[int, Any] = {}
_interrupted = threading.Event()
_interrupted_by: Optional[int] = None


def _signal_status() -> int:
    return 128 + int(_interrupted_by) if _interrupted_by is not None else 130


# ----- exit after an unintended shutdown (promises E6, E9) ---------------------

# The interpreter exits itself: the runtime calls _runtime_exit(status) on a
# thread of its own after the sending-failure handler ran; the main thread
# gets SIGUSR1, whose handler raises SystemExit(status) there, so that
# finally blocks and atexit hooks run and multiprocessing queues flush. If
# that has not ended the process within _EXIT_GRACE seconds (the main thread
# swallowed SystemExit, or init ran outside the main thread, where no signal
# handler can be set), os._exit(status) ends it.
_EXIT_GRACE = 10.0
_exit_status: Optional[int] = None
_exit_requested = threading.Event()
_exit_signal_set = False


_exit_raised = False


def _raise_exit(status: int):
    """Raises SystemExit(status) in the main thread, once: whichever comes
    first, a failed wait or the signal, raises it; the other stays quiet, so
    that a finally block the exit runs through is not cut short."""
    global _exit_raised
    if threading.current_thread() is threading.main_thread():
        _exit_raised = True
    raise SystemExit(status)


def _on_exit_signal(signum, frame):
    if _exit_status is not None and not _exit_raised:
        _raise_exit(_exit_status)


def _take_exit_signal() -> None:
    import signal

    global _exit_signal_set
    if _exit_signal_set or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, _on_exit_signal)
            _exit_signal_set = True
    except (ValueError, OSError):
        pass


def _runtime_exit(status: int) -> None:
    global _exit_status
    if _exit_status is not None:
        return
    _exit_status = int(status)
    _exit_requested.set()
    sys.stderr.flush()
    timer = threading.Timer(_EXIT_GRACE, os._exit, (_exit_status,))
    timer.daemon = True
    timer.start()
    main = threading.main_thread()
    if _exit_signal_set and main.is_alive() and main.ident is not None:
        import signal

        signal.pthread_kill(main.ident, signal.SIGUSR1)
    else:
        sys.stdout.flush()
        os._exit(_exit_status)


def _exit_follows(e: "_xsilo.RuntimeFailure") -> bool:
    """Whether the runtime is taking the process down after this failure:
    the job was aborted by this party itself, and a sending failure here
    ends the process (exit_on_sending_failure). The waits fail before the
    handler runs and the exit comes."""
    node = _node
    return (e.args[0] == "aborted" and e.args[2] == _me and node is not None
            and node.exits_on_sending_failure)


def _fail(e: "_xsilo.RuntimeFailure"):
    """Raises the error of a failed wait; when the runtime is taking the
    process down (a signal, or a sending failure with
    exit_on_sending_failure), waits (bounded) for it to have told the peers
    and run the handler, then raises SystemExit with its status instead."""
    if _interrupted.is_set() or _exit_status is not None or _exit_follows(e):
        if _exit_requested.wait(_EXIT_GRACE) and _exit_status is not None:
            _raise_exit(_exit_status)
        if _interrupted.is_set():
            _raise_exit(_signal_status())
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
    ``tls_config`` for anything but development. RayFed's options without
    a counterpart here (and unknown ones) are warned about once
    (XsiloConfigWarning) and ignored; ``grpc_retry_policy``,
    ``grpc_channel_options``' message sizes and ``timeout_in_ms`` map onto
    xsilo's retry policy, size limit and send timeout;
    ``serializing_allowed_list`` lets exactly the listed classes cross as
    restricted pickle.

    xsilo's form: ``init(config="alice.toml", party="alice")`` with an
    xsilo TOML configuration (paths relative to the file), whose unknown
    keys are errors naming the key.
    """
    global _node, _me, _pid, _allowed, _cluster_config, _job_config
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
    allowed = None
    if isinstance(config, (str, os.PathLike)):
        if addresses is not None or tls_config is not None or job_name is not None:
            raise ValueError("fed.init(): with an xsilo TOML file, addresses, tls_config and job_name come from the file")
        path = os.path.abspath(os.fspath(config))
        with open(path, encoding="utf-8") as f:
            text = f.read()
        base = os.path.dirname(path)
        cluster, job = None, None
    else:
        job_name = job_name or "Anonymous_job"
        text, allowed = _rayfed_config(addresses, party, job_name, config, tls_config)  # a dict of the tables
        base = os.getcwd()
        comm = dict((config or {}).get("cross_silo_comm") or {}) if isinstance(config, dict) else {}
        cluster = _ClusterConfig(addresses, party, tls_config or {})
        job = _JobConfig(job_name, comm)
        if not tls_config:
            dev_secret = "xsilo-python-dev-job:" + job_name
            sys.stderr.write(
                f"xsilo: no tls_config: party '{party}' uses development certificates derived from "
                f"the job name {job_name!r}; anyone who knows it can join. Pass tls_config for production.\n"
            )
    handler = None
    if sending_failure_handler is not None:
        def handler(text):
            sending_failure_handler(XsiloError(text) if text else None)
    with _lock:
        if _node is not None:
            raise XsiloError("fed.init() was already called in this process (call fed.shutdown() first)")
        _leave_sigint_to_the_runtime()
        _take_exit_signal()
        _allowed = allowed
        try:
            node = _xsilo.start(text, base, party, dev_secret, handler, _encode_hook, _decode_hook, _run, _runtime_exit)
            _me, _pid = node.party, os.getpid()
            _cluster_config, _job_config = cluster, job
            _node = node
        except _xsilo.RuntimeFailure as e:
            _allowed = None
            _restore_sigint()
            if _interrupted.is_set():
                raise SystemExit(_signal_status()) from None
            raise _translate(e) from None
        except BaseException:
            _allowed = None
            _restore_sigint()
            if _interrupted.is_set():
                raise SystemExit(_signal_status()) from None
            raise
        if "multiprocessing" in sys.modules:
            # A multiprocessing child ends with os._exit, past atexit: the
            # shutdown at exit runs among multiprocessing's own finalizers.
            from multiprocessing import util as _mp_util

            _mp_util.Finalize(None, _shutdown_at_exit, exitpriority=100)
