"""The driver programs of the cross-process tests: one scenario, one party.

    python parties.py SCENARIO PARTY ADDRESSES_JSON [JOB]

Each prints lines the tests read (RESULT ..., ERROR ..., HANDLER ...).
"""

import contextvars
import json
import os
import sys
import threading
import time

import xsilo as fed


@fed.remote
def value(x):
    return x


@fed.remote
def fail(msg):
    raise ValueError(msg)


@fed.remote
def add(a, b):
    return a + b


@fed.remote
def slow(seconds):
    time.sleep(seconds)
    return seconds


@fed.remote
def total(a):
    return float(a.sum())


@fed.remote
def field(p):
    return p.y


@fed.remote
class Counter:
    def __init__(self, start):
        self.n = start

    def inc(self, by):
        self.n += by
        return self.n


@fed.remote
def nested(direct, li, kw=None):
    # RayFed's shape: a FedObject passed as an argument arrives as its
    # value; one inside a list, tuple or dict arrives as a reference that
    # fed.get (or xsilo.ray.get) resolves here, without a round trip.
    import xsilo.ray as ray

    assert isinstance(li[1][0], fed.ObjectRef), type(li[1][0])
    return [direct, fed.get(li[1][0]), ray.get(kw["k"]), fed.get([li[1][0], kw["k"]])]


@fed.remote
class Fragile:
    def __init__(self, x):
        raise ValueError(f"cannot build from {x}")

    def ping(self):
        return "pong"


@fed.remote
def make_allowed():
    from allowed_values import Allowed

    return Allowed(7)


@fed.remote
def make_other():
    from allowed_values import Other

    return Other()


@fed.remote
def make_unlisted():
    from allowed_values import Unlisted

    return Unlisted(8)


@fed.remote
def read_v(a):
    return a.v


def report_error(e):
    src = getattr(e, "src_party", None) or getattr(e, "party", None)
    cause_text = None
    if isinstance(e, fed.FedRemoteError):
        # RayFed's shape: the raised error's cause is a FedRemoteError whose
        # own cause is what the origin exposes (None unless expose_error_trace).
        inner = e.cause
        assert isinstance(inner, fed.FedRemoteError) and inner.src_party == e.src_party, repr(inner)
        assert str(inner).startswith(f"FedRemoteError occurred at {e.src_party}"), str(inner)
        cause = inner.cause
        if cause is not None:
            cause_text = f"{cause.kind}|{cause.message}|{'Traceback' in (cause.trace or '')}"
    print("ERROR", json.dumps({"type": type(e).__name__, "src": src, "cause": cause_text, "text": str(e)}), flush=True)


@fed.remote
def busy(seconds):
    # Pure Python, holding the GIL between switches: no sleep.
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return seconds


@fed.remote
def pair(x):
    return x, x * 2


_body_running = threading.Event()


@fed.remote
def spin_until_exit(seconds):
    _body_running.set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds


_per_thread = threading.local()
_per_body = contextvars.ContextVar("per_body", default=None)


@fed.remote
def count_on_this_thread(_previous):
    # Python state of the worker thread: it lasts as long as the thread's
    # Python thread state does. Context variables are the body's own.
    n = getattr(_per_thread, "n", 0) + 1
    _per_thread.n = n
    before = _per_body.get()
    _per_body.set(n)
    return [threading.get_ident(), n, before]


def main_toml(scenario, party, config):
    def handler(err):
        print("HANDLER", type(err).__name__ if err is not None else "None", flush=True)

    fed.init(config=config, party=party, sending_failure_handler=handler)
    if scenario == "long":
        x = busy.party("alice").remote(8)
        a, b = pair.options(num_returns=2).party("bob").remote(x)
        print("RESULT", json.dumps(fed.get([a, b])), flush=True)
    elif scenario == "exit_while_running":
        # The drivers exit (status 3) while a body of alice's runs Python.
        # Nobody waits for its value, so the shutdown at exit does not
        # either. Both are past start-up first.
        fed.get(value.party("bob").remote(1))
        spinning = [spin_until_exit.party("alice").remote(30) for _ in range(2)]
        if party == "alice" and not _body_running.wait(30):
            print("BODY-NEVER-RAN", flush=True)
        print("EXITING", len(spinning), flush=True)
        sys.exit(3)
    elif scenario == "crash":
        # Alice's driver dies of an uncaught exception; bob's goes on. Both
        # are past start-up and have what they got before.
        x = value.party("alice").remote(1)
        z = add.party("bob").remote(x, 1)
        fed.get(z)
        if party == "alice":
            raise KeyError("the driver's own bug")
        y = add.party("alice").remote(z, 1)
        try:
            fed.get(y)
        except Exception as e:  # noqa: BLE001 - the test reads what it was
            report_error(e)
        return
    elif scenario == "no_shutdown":
        # Alice's driver ends without fed.shutdown() and without waiting
        # for anything: her value must still reach bob.
        x = value.party("alice").remote(20)
        y = add.party("bob").remote(x, 1)
        if party == "bob":
            print("RESULT", fed.get(y), flush=True)
        print("ENDING", flush=True)
        return
    elif scenario == "sigint":
        x = slow.party("bob").remote(30)
        print("WAITING", flush=True)
        try:
            fed.get(x)
            print("RESULT", flush=True)
        except Exception as e:  # noqa: BLE001
            report_error(e)
            os._exit(0)
    fed.shutdown()
    print("DONE", flush=True)


def main():
    if sys.argv[3].endswith(".toml"):
        return main_toml(sys.argv[1], sys.argv[2], sys.argv[3])
    scenario, party, addresses = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    job = sys.argv[4] if len(sys.argv) > 4 else "pytest-" + scenario
    comm = {}
    if scenario == "expose":
        comm["expose_error_trace"] = True
    if scenario in ("sending_failure", "sending_failure_in_get"):
        comm.update({"exit_on_sending_failure": True, "timeout_in_ms": 1500})

    def handler(err):
        print("HANDLER", type(err).__name__ if err is not None else "None", flush=True)

    if scenario == "allow_list":
        comm["serializing_allowed_list"] = {"allowed_values": ["Allowed"]}
    if scenario == "one_party":
        comm.update({"timeout_ms": 1000, "use_global_proxy": True,
                     "grpc_retry_policy": {"maxAttempts": 3, "initialBackoff": "0.5s"}})
    config = {"cross_silo_comm": comm} if comm else {}
    if scenario not in ("sending_failure", "sending_failure_in_get", "one_party"):
        config["barrier_on_initializing"] = True
    if scenario == "mp_no_shutdown":
        # RayFed's pattern: each party is a multiprocessing child; alice's
        # returns without fed.shutdown(), and multiprocessing ends it with
        # os._exit, past atexit. Her value must still reach bob.
        import multiprocessing

        def child():
            fed.init(addresses=addresses, party=party, job_name=job, config=dict(config))
            x = value.party("alice").remote(20)
            y = add.party("bob").remote(x, 1)
            if party == "bob":
                print("RESULT", fed.get(y), flush=True)
                fed.shutdown()
            print("ENDING", flush=True)

        proc = multiprocessing.get_context("fork").Process(target=child)
        proc.start()
        proc.join(60)
        print("CHILD", proc.exitcode, flush=True)
        return
    if scenario == "reinit":
        # Three jobs one after another in this process, on the same
        # addresses; a handle of the first is refused in the second.
        results, first = [], None
        for k in (1, 10, 100):
            fed.init(addresses=addresses, party=party, job_name=job, config=dict(config))
            c = Counter.party("bob").remote(k)
            x = add.party("alice").remote(c.inc.remote(2 * k), 0)
            results.append(fed.get(x))
            if first is None:
                first = x
            elif k == 100:
                try:
                    fed.get(first)
                except ValueError as e:
                    print("STALE", e, flush=True)
            fed.shutdown()
        print("ROUNDS", json.dumps(results), flush=True)
        return
    if scenario in ("sending_failure", "sending_failure_in_get"):
        import atexit

        atexit.register(lambda: print("ATEXIT", flush=True))
    import warnings

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        fed.init(addresses=addresses, party=party, job_name=job, config=config,
                 sending_failure_handler=handler)
    for w in warned:
        print("WARNING", str(w.message), flush=True)

    if scenario in ("fail", "expose"):
        bad = fail.party("alice").remote("boom in alice")
        dep = add.party("bob").remote(bad, 1)
        try:
            print("RESULT", fed.get(dep), flush=True)
        except Exception as e:  # noqa: BLE001 - the test reads what it was
            report_error(e)
        try:
            print("RESULT", fed.get(bad), flush=True)
        except Exception as e:  # noqa: BLE001
            report_error(e)
    elif scenario == "chain":
        bad = fail.party("alice").remote("chain broke")
        mid = add.party("bob").remote(bad, 1)
        end = add.party("carol").remote(mid, 1)
        try:
            print("RESULT", fed.get(end), flush=True)
        except Exception as e:  # noqa: BLE001
            report_error(e)
    elif scenario == "ok":
        c = Counter.party("alice").remote(10)
        a = c.inc.remote(1)
        b = value.party("bob").remote({"k": (1, 2.5, b"x", None, [True])})
        s = add.party("bob").remote(a, 5)
        print("RESULT", json.dumps([fed.get(s), repr(fed.get(b))]), flush=True)
        # Arguments are taken when the call is made, as RayFed does.
        import collections

        import numpy as np

        arr = np.ones(3)
        t = total.party("alice").remote(arr)
        arr[:] = 100
        point = collections.namedtuple("Point", "x y")(1, 2)
        f = field.party("alice").remote(point)
        print("SNAPSHOT", json.dumps(fed.get([t, f])), flush=True)
        fed.kill(c)
        late = c.inc.remote(1)
        try:
            fed.get(late)
        except Exception as e:  # noqa: BLE001
            report_error(e)
    elif scenario == "shapes":
        # The owner's error is the very exception, as .cause and as its class.
        bad = fail.party("alice").remote("boom in alice")
        try:
            fed.get(bad)
        except ValueError as e:
            assert party == "alice", e
            assert isinstance(e, fed.TaskError) and isinstance(e.cause, ValueError), repr(e)
            print("OWNER", json.dumps([str(e.cause), e.cause.args[0] == "boom in alice"]), flush=True)
        except fed.FedRemoteError as e:
            assert party == "bob", e
            assert isinstance(e.cause, fed.FedRemoteError), repr(e.cause)
            print("PEER", json.dumps([e.src_party, str(e.cause), e.cause.cause]), flush=True)
        o = value.party("alice").remote("a")
        r = nested.party("bob").remote(o, ["x", [o]], kw={"k": o})
        print("NESTED", json.dumps(fed.get(r)), flush=True)
        # A FedObject passed to an actor's constructor, across parties.
        c = Counter.party("bob").remote(add.party("alice").remote(o, "b"))
        print("CTOR", json.dumps(fed.get(c.inc.remote("c"))), flush=True)
        f = Fragile.party("alice").remote(o)
        try:
            fed.get(f.ping.remote())
        except Exception as e:  # noqa: BLE001
            print("CTOR-FAILED", type(e).__name__, str(e).replace("\n", " "), flush=True)
        g = Counter.party("bob").remote(fail.party("alice").remote("no start"))
        try:
            fed.get(g.inc.remote(1))
        except Exception as e:  # noqa: BLE001
            print("CTOR-ARG-FAILED", type(e).__name__, str(e).replace("\n", " "), flush=True)
        # With an allow-list a party reads back its own pickled values (only
        # values from peers are restricted); none is set here, so own values
        # of other classes still need a codec.
    elif scenario == "allow_list":
        print("ALLOWED", fed.get(read_v.party("bob").remote(make_allowed.party("alice").remote())), flush=True)
        # A party's own value of a class off the list: not a peer's, so it
        # is read back (in its get and in its own tasks).
        own = make_unlisted.party("alice").remote()
        got = read_v.party("alice").remote(own)
        if party == "alice":
            print("OWN", type(fed.get(own)).__name__, fed.get(got), flush=True)
        try:
            fed.get(read_v.party("bob").remote(make_other.party("alice").remote()))
        except Exception as e:  # noqa: BLE001
            report_error(e)
    elif scenario == "one_party":
        from xsilo import config as fed_config

        cluster = fed_config.get_cluster_config()
        job_config = fed_config.get_job_config()
        c = Counter.party("alice").remote(1)
        x = add.party("alice").remote(c.inc.remote(1), 40)
        print("RESULT", json.dumps([fed.get(x), cluster.cluster_addresses == addresses, cluster.current_party,
                                    job_config.cross_silo_comm_config_dict["grpc_retry_policy"]["maxAttempts"]]), flush=True)
    elif scenario == "threads":
        # One call after the other (each takes the one before as input).
        calls = [count_on_this_thread.party("alice").remote(None)]
        for _ in range(39):
            calls.append(count_on_this_thread.party("alice").remote(calls[-1]))
        print("RESULT", json.dumps(fed.get(calls)), flush=True)
    elif scenario == "actor_release":
        # An actor's handle is freed when its last reference goes, not when
        # the garbage collector finds a cycle: it is off here.
        import gc

        gc.disable()
        c = Counter.party("alice").remote(1)
        got = fed.get(c.inc.remote(1))
        before = fed.stats()["live_actors"]
        del c
        print("ACTORS", json.dumps([got, before, fed.stats()["live_actors"]]), flush=True)
    elif scenario == "killed":
        x = slow.party("bob").remote(60)
        print("WAITING", flush=True)
        t = time.monotonic()
        try:
            fed.get(x)
        except Exception as e:  # noqa: BLE001
            report_error(e)
            print("AFTER", round(time.monotonic() - t, 1), flush=True)
        os._exit(0)
    elif scenario == "sending_failure_in_get":
        # bob never starts; alice waits in get for a value bob would make.
        x = value.party("alice").remote(1)
        y = add.party("bob").remote(x, 1)
        try:
            print("GOT", fed.get(y), flush=True)
        except Exception as e:  # noqa: BLE001
            print("RAISED", type(e).__name__, e, flush=True)
        finally:
            print("FINALLY", flush=True)
    elif scenario == "sending_failure":
        # bob never starts: alice's push of x to bob fails after the timeout.
        x = value.party("alice").remote(1)
        y = add.party("bob").remote(x, 1)
        time.sleep(30)
        print("NOT-EXITED", flush=True)
    fed.shutdown()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
