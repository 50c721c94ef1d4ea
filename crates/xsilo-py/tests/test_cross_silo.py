"""RayFed's cross-silo scenarios, each party its own process over QUIC
with mutual TLS (development certificates derived from the job name)."""

import json
import signal
import time

from conftest import errors


def test_a_job_runs_and_values_keep_their_types(parties):
    job = parties("ok", ["alice", "bob"])
    for p in ("alice", "bob"):
        code, out, err = job.finish(p)
        assert code == 0, err[-3000:]
        results = [json.loads(line[len("RESULT "):]) for line in out if line.startswith("RESULT ")]
        assert results == [[16, repr({"k": (1, 2.5, b"x", None, [True])})]], out
        assert "SNAPSHOT [3.0, 2]" in out, out
        # A call on a killed actor fails in every party alike.
        (killed,) = errors(out)
        assert ("not available" in killed["text"] and "killed" in killed["text"]) or (
            p == "bob" and "ActorUnavailable" in killed["text"]
        ), killed
        assert "DONE" in out


def test_a_worker_thread_keeps_its_python_thread_state(parties):
    # Each worker thread makes its Python thread state once and keeps it
    # (threading.local lasts), instead of a new one around every body
    # (which also cost an mmap and a munmap per body); each body still runs
    # in a context of its own.
    job = parties("threads", ["alice", "bob"])
    for p in ("alice", "bob"):
        code, out, err = job.finish(p)
        assert code == 0, err[-3000:]
        (line,) = [line for line in out if line.startswith("RESULT ")]
        calls = json.loads(line[len("RESULT "):])
        assert len(calls) == 40, calls
        seen = {}
        for ident, n, before in calls:
            assert n == seen.get(ident, 0) + 1, (ident, n, calls)
            assert before is None, ("a context variable crossed from one body to the next", calls)
            seen[ident] = n
        assert max(seen.values()) >= 2, ("no worker thread ran two calls", calls)


def test_a_driver_that_exits_while_a_body_runs_exits_with_its_own_status(parties, tmp_path):
    # CPython ends a thread that wants the GIL back during finalisation by
    # unwinding it; through pyo3's frames that was a fatal error (status
    # 134). The worker now parks instead, and the process exits as asked.
    import xsilo.dev

    for attempt in range(2):
        (tmp_path / str(attempt)).mkdir()
        configs = xsilo.dev.write_local_job(str(tmp_path / str(attempt)), "pytest-exit", ["alice", "bob"],
                                            {"peer_lost_timeout": '"3s"', "barrier_on_initializing": "true"})
        job = parties("exit_while_running", ["alice", "bob"], configs=configs)
        for p in ("alice", "bob"):
            code, out, err = job.finish(p)
            assert "Fatal Python error" not in err, err[-3000:]
            assert code == 3, (code, out, err[-3000:])
            assert "EXITING 2" in out, out


def test_a_driver_that_ends_without_shutdown_still_delivers_its_values(parties, tmp_path):
    # The interpreter's exit shuts the party down as fed.shutdown() does:
    # alice's value reaches bob although her driver ended at once.
    import xsilo.dev

    configs = xsilo.dev.write_local_job(str(tmp_path), "pytest-no-shutdown", ["alice", "bob"],
                                        {"peer_lost_timeout": '"3s"', "barrier_on_initializing": "true"})
    job = parties("no_shutdown", ["alice", "bob"], configs=configs)
    for p in ("alice", "bob"):
        code, out, err = job.finish(p)
        assert code == 0, (p, code, out, err[-3000:])
        assert "ENDING" in out, out
    assert "RESULT 21" in out, out


def test_a_driver_that_dies_of_an_exception_aborts_the_job_naming_it(parties, tmp_path):
    # Not a "divergence" (alice's driver did not finish: it crashed), and
    # not a peer lost after a timeout.
    import xsilo.dev

    configs = xsilo.dev.write_local_job(str(tmp_path), "pytest-crash", ["alice", "bob"],
                                        {"barrier_on_initializing": "true"})
    job = parties("crash", ["alice", "bob"], configs=configs)
    code, out, err = job.finish("alice")
    assert code == 1 and "KeyError" in err, (code, out, err[-3000:])
    code, out, err = job.finish("bob")
    assert code == 0, err[-3000:]
    (e,) = errors(out)
    assert "uncaught KeyError" in e["text"] and "alice" in e["text"], e
    assert "diverge" not in e["text"], e


def test_an_actor_is_freed_when_its_last_handle_goes(parties):
    job = parties("actor_release", ["alice", "bob"])
    for p, held in (("alice", 1), ("bob", 0)):
        code, out, err = job.finish(p)
        assert code == 0, err[-3000:]
        assert f"ACTORS [2, {held}, 0]" in out, out


def test_a_failing_task_reaches_every_party_with_the_trace_hidden(parties):
    job = parties("fail", ["alice", "bob"])
    for p in ("alice", "bob"):
        code, out, err = job.finish(p)
        assert code == 0, err[-3000:]
        dep, bad = errors(out)
        assert dep["type"] in ("FedRemoteError", "TaskError"), dep
        # The dependent's error names where the failure began.
        assert dep["src"] == "alice", dep
        assert "ValueError" in dep["text"], dep
        if p == "alice":
            # In the party where it ran, the error is its own, with the message.
            assert bad["type"] == "TaskError(ValueError)", bad
            assert "boom in alice" in bad["text"], bad
        else:
            assert bad["type"] == "FedRemoteError" and bad["src"] == "alice", bad
            # Hidden by default: the kind crosses, the message does not.
            assert bad["cause"] is None, bad
            assert "boom in alice" not in bad["text"], bad


def test_the_trace_crosses_when_exposed(parties):
    job = parties("expose", ["alice", "bob"])
    code, out, err = job.finish("bob")
    assert code == 0, err[-3000:]
    _, bad = errors(out)
    assert bad["type"] == "FedRemoteError" and bad["src"] == "alice", bad
    assert bad["cause"] == "ValueError|boom in alice|True", bad
    assert job.finish("alice")[0] == 0


def test_a_failure_travels_a_three_party_chain(parties):
    job = parties("chain", ["alice", "bob", "carol"])
    for p in ("alice", "bob", "carol"):
        code, out, err = job.finish(p)
        assert code == 0, err[-3000:]
        (e,) = errors(out)
        assert e["src"] == "alice", (p, e)


def test_exit_on_sending_failure_runs_the_handler_once(parties):
    job = parties("sending_failure", ["alice", "bob"], start=["alice"])
    code, out, err = job.finish("alice", timeout=60)
    # Through the interpreter: the handler once, then atexit hooks, status 1.
    assert code == 1, (out, err[-2000:])
    assert [line for line in out if line.startswith("HANDLER")] == ["HANDLER XsiloError"], out
    assert "NOT-EXITED" not in out
    assert out.index("ATEXIT") > out.index("HANDLER XsiloError"), out
    # The runtime's log lines went to a pipe: plain text, no colour codes.
    assert "exiting with status 1" in err and "\x1b[" not in err, err[-2000:]


def test_a_killed_party_fails_the_waits_on_it(parties):
    job = parties("killed", ["alice", "bob"])
    bob = job.procs["bob"]
    # Both drivers are past start-up and made their calls (each says so),
    # bounded: only then is bob killed.
    for p in ("bob", "alice"):
        assert job.wait_for_line(p, "WAITING") is not None, p
    bob.send_signal(signal.SIGKILL)
    bob.wait(timeout=10)
    code, out, err = job.finish("alice", timeout=60)
    assert code == 0, err[-3000:]
    (e,) = errors(out)
    assert "bob" in e["text"], e
    after = [float(line.split()[1]) for line in out if line.startswith("AFTER")]
    assert after and after[0] < 30, out


def test_a_long_python_task_does_not_make_the_peers_report_the_party_lost(parties, tmp_path):
    # 8 s of pure Python holding the GIL, against a peer-loss bound of 3 s:
    # the QUIC I/O runs on the runtime's own threads, never under the GIL.
    import xsilo.dev

    configs = xsilo.dev.write_local_job(str(tmp_path), "pytest-long", ["alice", "bob"],
                                        {"peer_lost_timeout": '"3s"', "barrier_on_initializing": "true"})
    job = parties("long", ["alice", "bob"], configs=configs)
    for p in ("alice", "bob"):
        code, out, err = job.finish(p, timeout=90)
        assert code == 0, err[-3000:]
        assert "RESULT [8, 16]" in out, out
        assert "lost" not in err, err[-3000:]


def test_ctrl_c_in_a_driver_tells_the_peers_and_exits_130(parties, tmp_path):
    import xsilo.dev

    configs = xsilo.dev.write_local_job(str(tmp_path), "pytest-sigint", ["alice", "bob"],
                                        {"barrier_on_initializing": "true"})
    job = parties("sigint", ["alice", "bob"], configs=configs)
    alice = job.procs["alice"]
    assert job.wait_for_line("alice", "WAITING") is not None
    assert job.wait_for_line("bob", "WAITING") is not None
    alice.send_signal(signal.SIGINT)
    code, out, err = job.finish("alice", timeout=60)
    assert code == 130, (code, out, err[-2000:])
    code, out, err = job.finish("bob", timeout=60)
    assert code == 0, err[-3000:]
    (e,) = errors(out)
    assert "alice" in e["text"], e


def test_invalid_options_are_errors_naming_the_key():
    import pytest
    import xsilo as fed

    with pytest.raises(ValueError, match="serializing_allowed_list must be a dict"):
        fed.init(addresses={"alice": "127.0.0.1:1"}, party="alice",
                 config={"cross_silo_comm": {"serializing_allowed_list": ["numpy"]}})
    with pytest.raises(ValueError, match="initialBackoff must be a duration"):
        fed.init(addresses={"alice": "127.0.0.1:1"}, party="alice",
                 config={"cross_silo_comm": {"grpc_retry_policy": {"initialBackoff": "soon"}}})
    with pytest.raises(TypeError, match="'sender_proxy_cls' has no meaning"):
        fed.init(addresses={"alice": "127.0.0.1:1"}, party="alice", sender_proxy_cls=object)
    with pytest.raises(TypeError, match="unknown argument 'adresses'"):
        fed.init(adresses={"alice": "127.0.0.1:1"}, party="alice")
    with pytest.raises(ValueError, match="tls_config key 'ca'"):
        fed.init(addresses={"alice": "127.0.0.1:1"}, party="alice", tls_config={"ca": "x"})


def test_rayfed_shapes_errors_nested_refs_and_constructor_arguments(parties):
    job = parties("shapes", ["alice", "bob"])
    outs = {}
    for p in ("alice", "bob"):
        code, out, err = job.finish(p)
        assert code == 0, err[-3000:]
        outs[p] = out
    owner = [line for line in outs["alice"] if line.startswith("OWNER")]
    assert owner == ['OWNER ["boom in alice", true]'], outs["alice"]
    peer = [line for line in outs["bob"] if line.startswith("PEER")]
    # RayFed's text, without the message (expose_error_trace is off).
    assert peer == ['PEER ["alice", "FedRemoteError occurred at alice", null]'], outs["bob"]
    for p in ("alice", "bob"):
        assert 'NESTED ["a", "a", "a", ["a", "a"]]' in outs[p], outs[p]
        assert 'CTOR "abc"' in outs[p], outs[p]
        failed = [line for line in outs[p] if line.startswith("CTOR-FAILED")]
        assert len(failed) == 1 and "ValueError" in failed[0], outs[p]
        # The constructor's own error, in every party: later methods depend
        # on the call that builds the actor.
        assert "cannot build from a" in failed[0] or p == "bob", failed
        if p == "alice":
            assert "task 'Fragile.__init__'" in failed[0] and "TaskError(ValueError)" in failed[0], failed
        else:
            assert failed[0].startswith("CTOR-FAILED FedRemoteError") and "ValueError" in failed[0], failed
    for p in ("alice", "bob"):
        # A constructor whose FedObject argument failed: the argument's error.
        bad_arg = [line for line in outs[p] if line.startswith("CTOR-ARG-FAILED")]
        assert len(bad_arg) == 1 and "ValueError" in bad_arg[0] and "'alice'" in bad_arg[0], outs[p]


def test_serializing_allowed_list_rebuilds_only_the_listed_classes(parties):
    job = parties("allow_list", ["alice", "bob"])
    outs = {}
    for p in ("alice", "bob"):
        code, out, err = job.finish(p)
        assert code == 0, err[-3000:]
        assert "PWNED" not in "".join(out) + "".join(err), (out, err)
        outs[p] = out
        assert "ALLOWED 7" in out, out
    assert "OWN Unlisted 8" in outs["alice"], outs["alice"]
    (e,) = errors(outs["bob"])
    # Refused in bob, naming what the payload names and where it came from.
    assert "_pickle.UnpicklingError" in e["text"], e
    assert "posix.system" in e["text"] and "party 'alice'" in e["text"], e


def test_a_one_party_job_runs_and_rayfed_options_are_warned_about_once(parties):
    job = parties("one_party", ["alice"])
    code, out, err = job.finish("alice")
    assert code == 0, err[-3000:]
    assert 'RESULT [42, true, "alice", 3]' in out, out
    warned = [line for line in out if line.startswith("WARNING")]
    assert len(warned) == 2, warned
    assert any("'cross_silo_comm.timeout_ms' is ignored" in w for w in warned), warned
    assert any("'cross_silo_comm.use_global_proxy' is ignored" in w for w in warned), warned


def test_a_listen_port_held_by_another_program_is_an_assertion_error():
    import socket

    import pytest
    import xsilo as fed

    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    try:
        port = held.getsockname()[1]
        with pytest.raises(AssertionError, match=f"127.0.0.1:{port}") as e:
            fed.init(addresses={"alice": f"127.0.0.1:{port}"}, party="alice")
        assert isinstance(e.value, fed.AddressInUseError) and isinstance(e.value, ValueError)
        fed.shutdown()  # nothing to stop: a no-op
    finally:
        held.close()


def test_init_shutdown_init_in_one_process_and_stale_handles(parties):
    job = parties("reinit", ["alice", "bob"])
    for p in ("alice", "bob"):
        code, out, err = job.finish(p, timeout=90)
        assert code == 0, err[-3000:]
        assert "ROUNDS [3, 30, 300]" in out, out
        stale = [line for line in out if line.startswith("STALE")]
        assert len(stale) == 1 and "belongs to an earlier fed.init()" in stale[0], out


def test_exit_on_sending_failure_while_the_driver_waits_in_get(parties):
    job = parties("sending_failure_in_get", ["alice", "bob"], start=["alice"])
    code, out, err = job.finish("alice", timeout=60)
    # The get does not raise the abort: it waits for the handler and the
    # exit, which goes through the interpreter (finally, atexit), status 1.
    assert code == 1, (out, err[-2000:])
    assert [line for line in out if line.startswith("HANDLER")] == ["HANDLER XsiloError"], out
    assert "GOT" not in "".join(out) and "RAISED" not in "".join(out), out
    assert out.index("FINALLY") > out.index("HANDLER XsiloError") and "ATEXIT" in out, out


import pytest as _pytest


@_pytest.mark.parametrize("comm,key", [
    ({"timeout_in_ms": -5}, "timeout_in_ms"),
    ({"messages_max_size_in_bytes": 1.5}, "messages_max_size_in_bytes"),
    ({"grpc_retry_policy": {"maxAttempts": "abc"}}, "grpc_retry_policy.maxAttempts"),
    ({"grpc_retry_policy": {"initialBackoff": "nan"}}, "grpc_retry_policy.initialBackoff"),
    ({"grpc_retry_policy": {"backoffMultiplier": 0}}, "grpc_retry_policy.backoffMultiplier"),
    ({"grpc_channel_options": [("grpc.max_send_message_length",)]}, "grpc_channel_options"),
    ({"serializing_allowed_list": {"numpy": None}}, "serializing_allowed_list['numpy']"),
    ({"exit_on_sending_failure": "yes"}, "exit_on_sending_failure"),
])
def test_a_malformed_rayfed_option_is_a_value_error_naming_it(comm, key):
    import xsilo as fed

    with _pytest.raises(ValueError, match=f"cross_silo_comm.{_pytest.importorskip('re').escape(key)}"):
        fed.init(addresses={"alice": "127.0.0.1:1"}, party="alice", config={"cross_silo_comm": comm})


def test_a_multiprocessing_child_that_ends_without_shutdown_still_delivers(parties):
    job = parties("mp_no_shutdown", ["alice", "bob"])
    code, out, err = job.finish("bob", timeout=60)
    assert code == 0 and "RESULT 21" in out, (out, err[-2000:])
    code, out, err = job.finish("alice", timeout=60)
    assert code == 0 and "CHILD 0" in out, (out, err[-2000:])
