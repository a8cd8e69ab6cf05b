"""End to end through the command line: ``udpchat join`` with piped stdin (JSON and plain
lines) and ``udpchat relay`` as real subprocesses, next to library clients."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_support import (
    JsonProcess,
    Process,
    Recorder,
    RelayProcess,
    join_process,
    members,
    running_relay,
)
from tests.test_json_schema import check
from udpchat import events as ev
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.exitcodes import ExitCode

pytestmark = pytest.mark.e2e

TIME = re.compile(r"^\d\d:\d\d:\d\d ")


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Every subprocess a test starts goes in here and is killed at the end, whatever happens."""
    started: list[Process] = []
    yield started
    for process in started:
        process.cleanup()


def check_records(process: JsonProcess) -> list[dict[str, object]]:
    """Every stdout line is one JSON object in pure ASCII, as docs/events.schema.json says."""
    return [check(line) for line in process.stdout]


# --- 8. udpchat join --json with piped stdin -----------------------------------------------------


@pytest.mark.timeout(40)
def test_join_json_reports_every_kind_of_event(processes: list[Process]) -> None:
    with running_relay() as relay, members(relay.address, "bob") as [bob]:
        alice = join_process("alice", relay.address)
        assert isinstance(alice, JsonProcess)
        processes.append(alice)

        welcome = alice.wait_record("welcome", 10)
        assert (welcome["nick"], welcome["members"], welcome["resumed"]) == (
            "alice",
            ["alice", "bob"],
            False,
        )
        bob.log.wait_event(ev.MemberJoined, 5, lambda e: e.nick == "alice")

        alice.send("hello from a pipe")
        heard = bob.log.wait_event(ev.MessageReceived, 5, lambda e: e.text == "hello from a pipe")
        own = alice.wait_record("message", 5, lambda r: r["own"])
        assert (own["from"], own["text"], own["seq"]) == ("alice", "hello from a pipe", heard.seq)
        assert alice.of("pending")[0]["text"] == "hello from a pipe", alice.stdout

        bob.client.say("hi alice")
        said = alice.wait_record("message", 5, lambda r: r["from"] == "bob")
        assert said["text"] == "hi alice" and said["seq"] > own["seq"]
        assert not said["own"] and not said["history"] and not said["action"]
        assert abs(said["time"] - heard.time) < 5

        alice.send("/me waves")
        bob.log.wait_event(ev.MessageReceived, 5, lambda e: e.action and e.text == "waves")

        alice.send("/msg bob psst")
        whisper = bob.log.wait_event(ev.PrivateReceived, 5)
        assert (whisper.sender, whisper.to, whisper.text) == ("alice", "bob", "psst")
        copy = alice.wait_record("private", 5)
        assert (copy["from"], copy["to"], copy["text"]) == ("alice", "bob", "psst")
        bob.client.private("alice", "back at you")
        answer = alice.wait_record("private", 5, lambda r: r["from"] == "bob")
        assert (answer["to"], answer["text"]) == ("alice", "back at you")

        alice.send("/who")
        assert alice.wait_record("who", 5)["members"] == ["alice", "bob"]

        with members(relay.address, "carol") as [carol]:
            alice.wait_record("join", 5, lambda r: r["nick"] == "carol")
            carol.client.quit("bye now", timeout=5)
        leave = alice.wait_record("leave", 5)
        assert (leave["nick"], leave["reason"], leave["text"]) == ("carol", "quit", "bye now")

        alice.send("/nick Alicia")
        renamed = alice.wait_record("nick", 5)
        assert (renamed["old"], renamed["new"], renamed["own"]) == ("alice", "Alicia", True)
        bob.log.wait_event(ev.MemberRenamed, 5, lambda e: e.new == "Alicia")

        alice.send("/msg nobody are you there", "/frobnicate", "/nick bob")
        errors = {r["line"]: r["text"] for r in alice.wait_records("error", 3, 5)}
        assert sorted(errors) == [6, 7, 8], errors  # the input lines they answer
        assert "nobody" in errors[6] and "/frobnicate" in errors[7], errors
        assert "bob" in errors[8] and "taken" in errors[8], errors

        # End of input: everything typed is delivered before the client quits; three lines
        # were refused, which the exit status says.
        last = [f"last words {i}" for i in range(8)]
        alice.send(*last)
        alice.close_stdin()
        assert alice.wait(15) == ExitCode.UNDELIVERED, alice.stderr
        assert alice.stderr == []
        heard_last = [
            e.text for e in bob.log.chat() if e.nick == "Alicia" and e.text.startswith("last")
        ]
        assert heard_last == last
        bob.log.wait_event(ev.MemberLeft, 5, lambda e: e.nick == "Alicia" and e.reason == "quit")

        records = check_records(alice)
        assert records[-1] == {"type": "closed", "reason": "left the room"}
        room = [r for r in records if r["type"] in ("message", "join", "leave", "nick")]
        seqs = [r["seq"] for r in room]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
        posted = [r["text"] for r in records if r["type"] == "message" and r["own"]]
        assert posted == ["hello from a pipe", "waves", *last]


@pytest.mark.timeout(30)
def test_plain_join_prints_one_plain_line_per_event(processes: list[Process]) -> None:
    with running_relay() as relay, members(relay.address, "bob") as [bob]:
        dave = join_process("dave", relay.address, json_output=False)
        processes.append(dave)
        dave.wait_line(lambda line: "you are dave" in line, 10)
        bob.log.wait_event(ev.MemberJoined, 5)
        bob.client.say("hello dave")
        dave.wait_line(lambda line: line.endswith("<bob> hello dave"), 5)
        dave.send("hi bob", "/me nods", "/who")
        bob.log.wait_event(ev.MessageReceived, 5, lambda e: e.text == "nods")
        dave.wait_line(lambda line: "in the room (2)" in line and "you are" not in line, 5)
        dave.send("/bogus")
        dave.wait_line(lambda line: "/bogus" in line, 5, stderr=True)
        with members(relay.address, "carol") as [carol]:
            dave.wait_line(lambda line: line.endswith("carol joined"), 5)
            carol.client.quit("see you", timeout=5)
        dave.wait_line(lambda line: "carol left" in line, 5)
        dave.close_stdin()
        assert dave.wait(15) == ExitCode.UNDELIVERED, dave.stderr

    for line in dave.stdout:
        assert TIME.match(line), line
        assert "\x1b" not in line and not line.lstrip().startswith("{")
    assert [TIME.sub("", line) for line in dave.stdout] == [
        "-- you are dave; in the room (2): bob, dave",
        "<bob> hello dave",
        "<dave> hi bob",
        "* dave nods",
        "-- in the room (2): bob, dave",
        "-- carol joined",
        "-- carol left (quit: see you)",
        "-- session closed: left the room",
    ]
    assert dave.stderr == ["udpchat: line 4: unknown command /bogus; try /help"]


@pytest.mark.timeout(30)
def test_refused_joins_print_the_reason_and_exit_non_zero(processes: list[Process]) -> None:
    with (
        running_relay() as relay,
        running_relay(max_members=1) as small,
        members(relay.address, "bob"),
        members(small.address, "solo"),
    ):
        # all at once, stdin left open: a refused client must not wait for its input to end
        taken_json = join_process("BOB", relay.address)
        taken_plain = join_process("Bob", relay.address, json_output=False)
        invalid = join_process("/bob", relay.address)
        full = join_process("second", small.address)
        processes.extend([taken_json, taken_plain, invalid, full])
        codes = [p.wait(15) for p in processes]
        assert codes == [ExitCode.REFUSED, ExitCode.REFUSED, ExitCode.USAGE, ExitCode.REFUSED], (
            [(p.stdout, p.stderr) for p in processes]
        )

    assert isinstance(taken_json, JsonProcess) and isinstance(full, JsonProcess)
    rejected = check_records(taken_json)[0]
    assert rejected["type"] == "rejected" and rejected["code"] == 1
    assert "taken" in str(rejected["reason"])
    assert taken_json.stderr == [f"udpchat: the relay refused to let us in: {rejected['reason']}"]

    assert taken_plain.stdout == []  # said once, on stderr
    assert taken_plain.stderr == [
        "udpchat: the relay refused to let us in: the nickname Bob is taken"
    ]

    assert invalid.stdout == []
    assert len(invalid.stderr) == 1
    assert invalid.stderr[0].startswith("udpchat: bad nickname '/bob'")

    refused = check_records(full)[0]
    assert refused["type"] == "rejected" and refused["code"] == 3
    assert "full" in full.stderr[0]


# --- 4 and 5 with the relay as a subprocess ------------------------------------------------------


@pytest.mark.timeout(40)
def test_relay_process_evicts_a_killed_member_and_is_replaced_on_the_same_port(
    processes: list[Process],
) -> None:
    timers = ("--heartbeat", "200ms", "--timeout", "1s")
    relay = RelayProcess(*timers)
    processes.append(relay)
    with members(relay.address, "alice") as [alice]:
        carol = join_process("carol", relay.address)
        assert isinstance(carol, JsonProcess)
        processes.append(carol)
        carol.wait_record("welcome", 10)
        alice.log.wait_event(ev.MemberJoined, 5, lambda e: e.nick == "carol")

        carol.kill()  # no QUIT, no goodbye: the relay must notice the silence
        left = alice.log.wait_event(ev.MemberLeft, 5)
        assert (left.nick, left.reason) == ("carol", "timed out")
        relay.wait_line(lambda line: line.endswith("carol left (timed out)"), 5, stderr=True)

        # a quit message reaches the operator's log sanitised
        with members(relay.address, "dave") as [dave]:
            dave.client.quit("\x1b[2Jbye\nudpchat relay listening on 6.6.6.6:6", timeout=5)
        logged = relay.wait_line(lambda line: "dave left (quit)" in line, 5, stderr=True)
        assert "\u241b[2Jbye\u240audpchat relay listening on 6.6.6.6:6" in logged
        assert not any("\x1b" in line for line in relay.stderr)

        # the relay dies without a word and a new one takes the same port
        port = relay.address[1]
        relay.kill()
        alice.client.say("while the relay was down")
        second = RelayProcess(*timers, port=port)
        processes.append(second)
        assert second.address == relay.address
        rejoined = lambda es: sum(isinstance(e, ev.Welcomed) for e in es) >= 2  # noqa: E731
        assert alice.log.wait_for(rejoined, 15)
        assert alice.client.wait_idle(5) and alice.client.nick == "alice"
        second.wait_line(lambda line: "alice joined from" in line, 5, stderr=True)

        # what alice typed during the outage is in the new room, once
        with members(second.address, "erin") as [erin]:
            erin.log.wait_event(ev.MessageReceived, 5)
            history = [e.text for e in erin.log.chat() if e.history]
            assert history == ["while the relay was down"]

            # Ctrl-C: the relay says goodbye and exits cleanly
            second.interrupt()
            assert second.wait(10) == 0
            for member in (alice, erin):
                member.log.wait_event(ev.ConnectionLost, 5, lambda e: "shutting down" in e.reason)
        assert any("shutting down: telling 2 members" in line for line in second.stderr)


# --- what a script meets: refusals, a missing relay, order, exit codes ---------------------------


def free_udp_port() -> int:
    """A loopback UDP port nothing listens on (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.timeout(30)
def test_a_refused_join_from_a_pipe_ends_at_once_and_says_so_once(
    processes: list[Process],
) -> None:
    with running_relay() as relay, members(relay.address, "carol"):
        carol = join_process("carol", relay.address, json_output=False)
        processes.append(carol)
        carol.send("hi")
        carol.close_stdin()
        # it used to wait out the 10 s idle timeout; 5 s is a bound, not a speed target
        assert carol.wait(5) == ExitCode.REFUSED
    assert carol.stdout == []
    assert carol.stderr == ["udpchat: the relay refused to let us in: the nickname carol is taken"]


@pytest.mark.timeout(30)
def test_no_relay_at_the_address_fails_fast_and_names_it(processes: list[Process]) -> None:
    port = free_udp_port()
    dan = join_process("dan", ("127.0.0.1", port), json_output=False)
    processes.append(dan)
    dan.send("hi")
    dan.close_stdin()
    # loopback answers a closed port with ICMP port-unreachable: no need for the join timeout
    assert dan.wait(5) == ExitCode.FAILURE
    assert dan.stdout == []  # never "session closed: left the room": it was never in
    assert dan.stderr == [
        f"udpchat: could not join: nothing is listening at 127.0.0.1:{port} "
        "(connection refused): is the relay running, on that port?"
    ]


@pytest.mark.timeout(30)
def test_pipe_lines_run_in_order_after_the_join(processes: list[Process]) -> None:
    with running_relay() as relay:
        erin = join_process("erin", relay.address, json_output=False)
        processes.append(erin)
        erin.send("/stats", "x" * 20_000, "hello", "/help")
        erin.close_stdin()
        assert erin.wait(15) == ExitCode.UNDELIVERED  # the oversized line
    shown = [TIME.sub("", line) for line in erin.stdout]
    assert shown[0].startswith("-- you are erin")
    stats = shown.index("link statistics")
    delivered = next(line for line in shown[stats:] if "messages in" in line)
    assert delivered.split()[-1] != "0"  # the welcome was in when /stats ran
    assert shown.index("<erin> hello") > stats
    assert erin.stderr == [
        "udpchat: line 2: message is 20000 bytes; the limit is 16384 bytes of UTF-8"
    ]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "code", "complaint"),
    [
        (["join", "bob", "--bogus"], ExitCode.USAGE, "No such option"),
        (["join", "bo b"], ExitCode.USAGE, "bad nickname 'bo b'"),
        (["relay", "--flood-rate", "0"], ExitCode.USAGE, "--flood-rate: expected a number"),
        (["demo", "--loss", "20"], ExitCode.USAGE, "did you mean 20%?"),
        (
            ["join", "bob", "--server", "udp://127.0.0.1:9310"],
            ExitCode.USAGE,
            "no 'udp://' before it, just HOST:PORT",
        ),
        (
            ["join", "bob", "--server", "nosuchhost.invalid:9000"],
            ExitCode.FAILURE,
            "cannot find the host 'nosuchhost.invalid'",
        ),
    ],
)
def test_exit_codes_of_bad_command_lines(
    processes: list[Process], args: list[str], code: ExitCode, complaint: str
) -> None:
    process = Process(*args)
    processes.append(process)
    process.close_stdin()
    assert process.wait(15) == code, process.stderr
    assert complaint in "\n".join(process.stderr)
    assert "Errno" not in "\n".join(process.stderr)


@pytest.mark.timeout(30)
def test_ctrl_c_in_pipe_mode_leaves_and_exits_130(processes: list[Process]) -> None:
    with running_relay() as relay, members(relay.address, "bob") as [bob]:
        fay = join_process("fay", relay.address, json_output=False)
        processes.append(fay)
        fay.wait_line(lambda line: "you are fay" in line, 10)
        fay.interrupt()
        assert fay.wait(10) == ExitCode.INTERRUPTED, (fay.stdout, fay.stderr)
        left = bob.log.wait_event(ev.MemberLeft, 5)
        assert (left.nick, left.reason) == ("fay", "quit")


# --- small things an operator or a user reads ------------------------------------------------


@pytest.mark.timeout(30)
def test_the_relay_log_writes_ipv6_peers_in_brackets(processes: list[Process]) -> None:
    relay = Process("relay", "--host", "::1", "--port", "0")
    processes.append(relay)
    listening = relay.wait_line(lambda s: "listening on [::1]:" in s, 15, stderr=True)
    port = int(listening.rsplit(":", 1)[1].split()[0])
    with members(("::1", port), "alice") as [alice]:
        line = relay.wait_line(lambda s: "alice joined from" in s, 5, stderr=True)
        assert line.endswith(f"alice joined from [::1]:{alice.client.local_address[1]}")


def test_one_dropped_datagram_is_one_datagram(caplog: pytest.LogCaptureFixture) -> None:
    from udpchat.relay.events import DatagramDropped
    from udpchat.relay_server import RelayServer

    with running_relay() as relay:
        assert isinstance(relay, RelayServer)
        relay._last_drop_report -= 11  # the report is due: it comes every 10 s
        with caplog.at_level("INFO", logger="udpchat.relay"):
            relay._log([DatagramDropped("garbage", ("::1", 5000))])
    assert any("dropped 1 bad datagram in the last" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(40)
def test_a_paused_client_says_it_was_paused_not_that_the_relay_went_silent(
    processes: list[Process],
) -> None:
    with running_relay(heartbeat=0.2, timeout=1.0) as relay:
        gus = join_process("gus", relay.address)
        assert isinstance(gus, JsonProcess)
        processes.append(gus)
        gus.wait_record("welcome", 10)
        gus.proc.send_signal(signal.SIGSTOP)  # Ctrl-Z, or a laptop lid closed
        time.sleep(4)  # the pause itself: longer than the relay waits for a member
        gus.proc.send_signal(signal.SIGCONT)
        lost = gus.wait_record("connection_lost", 10)
        # 4 s of pause, measured from the loop's last look before it: 4 or 5 once rounded
        assert re.match(r"this client was paused for [45] s; ", str(lost["reason"]))
        gus.wait_record("welcome", 10, lambda r: r is not None and not r["resumed"])
        gus.close_stdin()
        assert gus.wait(15) == ExitCode.OK


@pytest.mark.timeout(30)
def test_netem_says_what_it_does_and_reports_while_it_runs(processes: list[Process]) -> None:
    with running_relay() as relay:
        netem = Process(
            "netem",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            f"127.0.0.1:{relay.address[1]}",
            "--loss",
            "10%",
            "--delay",
            "30ms",
            "--jitter",
            "10ms",
            "--report",
            "200ms",
        )
        processes.append(netem)
        start = netem.wait_line(lambda s: s.startswith("netem: "), 10)
        assert "loss 10.0%, delay 30 ms +/- 10 ms, seed 0; Ctrl-C to stop" in start
        netem.wait_line(lambda s: "clients 0; to the relay 0 passed, 0 lost" in s, 5)
        netem.interrupt()
        assert netem.wait(10) == ExitCode.OK  # Ctrl-C is how a proxy is meant to stop
        assert any(line.startswith("upstream: passed 0") for line in netem.stdout)


@pytest.mark.timeout(30)
def test_history_from_an_earlier_session_under_my_nickname_is_not_mine(
    processes: list[Process],
) -> None:
    with running_relay() as relay:
        with members(relay.address, "carol") as [first]:
            first.client.say("said by the first carol")
            first.client.wait_idle(5)
            first.client.quit("", timeout=5)
        carol = join_process("carol", relay.address)
        assert isinstance(carol, JsonProcess)
        processes.append(carol)
        earlier = carol.wait_record("message", 10)
        assert (earlier["text"], earlier["history"], earlier["own"]) == (
            "said by the first carol",
            True,
            False,
        )
        assert earlier["local_id"] is None and earlier["line"] is None
        carol.close_stdin()
        assert carol.wait(10) == ExitCode.OK


@pytest.mark.timeout(30)
def test_a_relay_that_never_answers_is_named_after_the_join_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound: no ICMP, just silence
        port = silent.getsockname()[1]
        log = Recorder()
        options = ClientOptions("dan", server=("127.0.0.1", port), join_timeout=1.0)
        client = ChatClient(options, log).start()
        try:
            closed = log.wait_event(ev.Closed, 10)
        finally:
            client.close()
    assert closed.reason == (
        f"nothing answered at 127.0.0.1:{port} in 1 s: is a relay running there?"
    )


@pytest.mark.timeout(30)
def test_a_relay_that_cannot_start_leaves_no_new_key_behind(
    processes: list[Process], tmp_path: Path
) -> None:
    """A relay whose port is taken exits 1 saying so, and the key file it had just made is
    gone: an operator's next try is not a relay with an identity nobody has seen."""
    key = tmp_path / "new.key"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        relay = Process(
            "relay", "--port", str(port), "--identity", str(key), "--store", "memory:"
        )
        processes.append(relay)
        assert relay.wait(20) == ExitCode.FAILURE
    assert any("cannot start the relay" in line for line in relay.stderr), relay.stderr
    assert not key.exists()


@pytest.mark.timeout(30)
def test_a_second_relay_on_the_same_port_and_store_says_the_port_is_in_use(
    processes: list[Process], tmp_path: Path
) -> None:
    """`udpchat relay` twice alike: the second says its port is in use, the cause, not that
    the first one's SQLite store is (which it would only be because of the port)."""
    store = f"sqlite:{tmp_path / 'room.sqlite3'}"
    key = str(tmp_path / "relay.key")
    first = RelayProcess("--identity", key, "--store", store)
    processes.append(first)
    port = first.address[1]
    second = Process("relay", "--port", str(port), "--identity", key, "--store", store)
    processes.append(second)
    assert second.wait(20) == ExitCode.FAILURE
    assert second.stderr[-1] == (
        f"udpchat: cannot start the relay on 127.0.0.1:{port}: the port is in use "
        "(by another relay, or another program)"
    ), second.stderr
