import dataclasses
import importlib
import math
import re
import secrets
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from udpchat import __version__, cli
from udpchat.chat_client import ClientOptions
from udpchat.cli import app, format_hostport, impairment_config, parse_hostport
from udpchat.exitcodes import SHORT_MEANING, ExitCode
from udpchat.identity import default_key_path
from udpchat.impair import ImpairmentConfig
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import RelayOptions
from udpchat.seal import generate_passphrase
from udpchat.stores import StoreError, StoreURL, default_store_path, open_store, parse_store

pytestmark = pytest.mark.timeout(60)


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def one_error_line(result: Any, code: ExitCode = ExitCode.USAGE) -> str:
    """The single line a failing command prints on stderr (by default: a usage error)."""
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("udpchat: ")
    return str(lines[0])


@pytest.mark.unit
def test_version_flag() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"udpchat {__version__}"


@pytest.mark.e2e
def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "udpchat", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert __version__ in out.stdout


# --- HOST:PORT ---------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("localhost:1", ("localhost", 1)),
        ("relay.example.org:65535", ("relay.example.org", 65535)),
        ("[::1]:9000", ("::1", 9000)),
        ("[fe80::1%eth0]:9000", ("fe80::1%eth0", 9000)),
        (" 10.0.0.1:80 ", ("10.0.0.1", 80)),
    ],
)
def test_parse_hostport(text: str, address: tuple[str, int]) -> None:
    assert parse_hostport(text) == address
    assert parse_hostport(format_hostport(address)) == address


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "missing ':PORT'"),
        ("localhost", "missing ':PORT'"),
        (":9000", "missing or malformed host"),
        ("::1:9000", "put an IPv6 address in brackets"),
        ("[::1]9000", "expected [IPv6]:PORT"),
        ("[::1", "expected [IPv6]:PORT"),
        ("[nope]:9000", "'nope' is not an IPv6 address"),
        ("host:", "invalid port ''"),
        ("host:http", "invalid port 'http'"),
        ("host:-1", "invalid port '-1'"),
        ("host:65536", "from 1 to 65535"),
        ("host:0", "from 1 to 65535"),
        ("host:٩٠", "invalid port"),  # Arabic-Indic digits are digits, but not a port
        ("two words:80", "malformed host"),
    ],
)
def test_parse_hostport_errors(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="invalid") as caught:
        parse_hostport(text)
    assert complaint in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.unit
def test_port_zero_only_where_we_listen() -> None:
    assert parse_hostport("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)


# --- impairment options -----------------------------------------------------------------------


@pytest.mark.unit
def test_impairment_config_from_options() -> None:
    config = impairment_config(
        loss="20%", delay="30ms", jitter="10ms", dup="1%", reorder="0.05", seed=7
    )
    assert config == ImpairmentConfig(
        loss=0.2, delay=0.03, jitter=0.01, duplicate=0.01, reorder=0.05, seed=7
    )
    assert impairment_config().is_noop


@pytest.mark.unit
def test_bursty_loss_keeps_the_average() -> None:
    config = impairment_config(loss="10%", burst=4)
    assert config.mean_loss == pytest.approx(0.1)
    assert config.p_bad_to_good == pytest.approx(0.25)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("options", "prefix"),
    [
        ({"loss": "2x"}, "--loss: invalid rate"),
        ({"loss": "150%"}, "--loss: invalid rate"),
        ({"delay": "soon"}, "--delay: invalid duration"),
        ({"jitter": "-1ms"}, "--jitter: invalid duration"),
        ({"dup": "1.5"}, "--dup:"),
        ({"reorder": "x"}, "--reorder:"),
        ({"loss": "10%", "burst": 0.5}, "--burst: mean_burst"),
        ({"loss": "100%", "burst": 3}, "--burst:"),
    ],
)
def test_impairment_errors_name_the_option(options: dict[str, Any], prefix: str) -> None:
    with pytest.raises(ValueError) as caught:
        impairment_config(**options)
    assert str(caught.value).startswith(prefix)


# --- netem ------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_netem_runs_until_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[bool] = []
    monkeypatch.setattr(cli.netem, "_wait_for_interrupt", lambda *args: waited.append(True))
    result = invoke(
        "netem",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--loss",
        "20%",
        "--burst",
        "3",
        "--delay",
        "30ms",
        "--jitter",
        "10ms",
        "--dup",
        "1%",
        "--reorder",
        "5%",
        "--seed",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert waited == [True]
    assert result.stdout.startswith("netem: 127.0.0.1:")
    assert (
        "-> 127.0.0.1:9, loss 20.0% in bursts of 3 datagrams, delay 30 ms +/- 10 ms, "
        "duplicated 1.0%, reordered 5.0%, seed 1; Ctrl-C to stop"
    ) in result.stdout
    assert "upstream: passed 0" in result.stdout
    assert "downstream: passed 0" in result.stdout


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "lots"], "udpchat: --loss: invalid rate 'lots'"),
        (["--delay", "1 minute"], "udpchat: --delay: invalid duration"),
        (["--listen", "9000"], "udpchat: invalid address '9000': missing ':PORT'"),
        (["--upstream", "::1:9000"], "put an IPv6 address in brackets"),
        (["--upstream", "127.0.0.1:0"], "from 1 to 65535"),
    ],
)
def test_netem_errors_are_one_line(args: list[str], message: str) -> None:
    base = {"--listen": "127.0.0.1:0", "--upstream": "127.0.0.1:9000"}
    for name, value in zip(args[::2], args[1::2], strict=True):
        base[name] = value
    flat = [item for pair in base.items() for item in pair]
    line = one_error_line(invoke("netem", *flat))
    assert message in line


@pytest.mark.e2e
def test_netem_cannot_bind_names_the_address() -> None:
    result = invoke("netem", "--listen", "192.0.2.1:1", "--upstream", "127.0.0.1:9")
    line = one_error_line(result, ExitCode.FAILURE)
    assert line.startswith("udpchat: cannot start the proxy on 192.0.2.1:1: ")
    assert "Errno" not in line


# --- relay and join ---------------------------------------------------------------------------


def fake_entry(monkeypatch: pytest.MonkeyPatch, name: str, function: str) -> list[dict[str, Any]]:
    """Replace the library entry point the command calls; record what it was given."""
    calls: list[dict[str, Any]] = []

    def entry(options: Any, **kwargs: Any) -> int:
        calls.append({"options": options, **kwargs})
        return 3

    monkeypatch.setattr(importlib.import_module(name), function, entry)
    return calls


def without_identity(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls with the options' identity key (relay) or trust check (client) at their
    defaults: a key and a callback differ in every run, and have tests of their own."""

    def reset(options: Any) -> Any:
        field = "static_key" if hasattr(options, "static_key") else "trust"
        return dataclasses.replace(options, **{field: None})

    return [{**call, "options": reset(call["options"])} for call in calls]


@pytest.mark.unit
def test_relay_options_reach_run_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    result = invoke(
        "relay",
        "--host",
        "::1",
        "--port",
        "0",
        "--heartbeat",
        "500ms",
        "--timeout",
        "5s",
        "--max-members",
        "8",
        "--history",
        "50",
        "--notice-fanout",
        "500",
        "--welcome-page",
        "5",
        "--verbose",
        "--loss",
        "5%",
        env={"UDPCHAT_KEY": "open sesame"},
    )
    assert result.exit_code == 3, result.output
    assert without_identity(calls) == [
        {
            "options": RelayOptions(
                host="::1",
                port=0,
                config=RelayConfig(
                    heartbeat=0.5,
                    timeout=5.0,
                    max_members=8,
                    history=50,
                    notice_fanout=500.0,
                    welcome_page=5,
                ),
                impairment=ImpairmentConfig(loss=0.05),
                key="open sesame",
                store=StoreURL("sqlite", default_store_path("::1", 0)),
            ),
            "verbose": True,
        }
    ]


@pytest.mark.unit
def test_relay_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    invoke("relay", env={"UDPCHAT_KEY": ""})
    assert without_identity(calls) == [
        {
            "options": RelayOptions(
                host="127.0.0.1",
                port=9000,
                impairment=ImpairmentConfig(),
                store=StoreURL("sqlite", default_store_path("127.0.0.1", 9000)),
            ),
            "verbose": False,
        }
    ]


@pytest.mark.unit
def test_relay_on_redis_names_its_room(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    url = "rediss://:secret@redis.example:6380/2"
    result = invoke("relay", "--store", url, "--room", "lobby")
    assert calls[0]["options"].store == StoreURL("redis", url=url, room="lobby")
    assert "room store: rediss://:***@redis.example:6380/2 room lobby\n" in result.stderr
    assert "secret" not in result.stderr


@pytest.mark.unit
def test_relay_prints_its_default_store_named_after_the_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    result = invoke("relay", "--host", "::1", "--port", "9001")
    path = default_key_path("::1", 9001).parent / "relay-__1-9001.sqlite3"
    assert f"room store: sqlite:{path}\n" in result.stderr


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "store"),
    [
        ("memory:", StoreURL("memory")),
        ("sqlite:room.db", StoreURL("sqlite", Path("room.db"))),
        ("sqlite:///srv/room.db", StoreURL("sqlite", Path("/srv/room.db"))),
        ("redis://127.0.0.1:6379/0", StoreURL("redis", url="redis://127.0.0.1:6379/0")),
    ],
)
def test_relay_store_option(monkeypatch: pytest.MonkeyPatch, url: str, store: StoreURL) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    result = invoke("relay", "--store", url)
    assert calls[0]["options"].store == store
    assert f"room store: {store}\n" in result.stderr


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:99999/0", "--store: expected redis://HOST:PORT/DB (or rediss://), "
         "got a bad port"),
        ("redis://127.0.0.1/x", "got database 'x' (a number)"),
        ("sqlite:", "--store sqlite: needs a file"),
        (
            "room.db",
            "--store: expected memory:, sqlite:PATH or redis://HOST:PORT/DB, got 'room.db'",
        ),
    ],
)
def test_relay_store_errors_are_one_line_usage_errors(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    assert message in one_error_line(invoke("relay", "--store", url))
    assert calls == []


@pytest.mark.unit
def test_relay_on_redis_without_the_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_redis(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "redis" or name.startswith("redis."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "udpchat.stores.redis", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_redis)
    with pytest.raises(StoreError, match=r"pip install 'udpchat\[redis\]'"):
        open_store(parse_store("redis://127.0.0.1:1/0"), 10, lambda n: bytes(n))


@pytest.mark.e2e  # the relay binds its port before it opens its store
def test_relay_refuses_a_store_that_is_not_one_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a room\n" * 50)
    result = invoke("relay", "--port", "0", "--store", f"sqlite:{path}")
    assert result.exit_code == ExitCode.FAILURE
    last = result.stderr.splitlines()[-1]  # after the key's fingerprint and the store's name
    assert last == f"udpchat: {path} is not a udpchat room store (not an SQLite database)"
    assert path.read_text() == "not a room\n" * 50


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heartbeat", "0"], "--heartbeat: must be longer than zero"),
        (["--timeout", "fast"], "--timeout: invalid duration"),
        (["--heartbeat", "2s", "--timeout", "1s"], "--timeout must be longer than --heartbeat"),
        (["--port", "70000"], "--port: expected a number from 0 to 65535"),
        (["--max-members", "0"], "--max-members: expected 1 to 1024"),
        (["--max-members", "5000"], "--max-members: expected 1 to 1024"),
        (["--history", "-1"], "--history: expected 0 or more"),
        (["--notice-fanout", "0"], "--notice-fanout: expected a number above 0"),
        (["--notice-fanout", "-5"], "--notice-fanout: expected a number above 0"),
        (["--welcome-page", "0"], "--welcome-page: expected 1 to"),
        (["--dup", "200%"], "--dup: invalid rate"),
        (["--room", "lobby"], "--room names a room on Redis: it goes with --store redis://"),
        (["--store", "memory:", "--room", "lobby"], "--room names a room on Redis"),
        (["--store", "redis://h:1/0", "--room", "a{b}"], "--room: letters, digits"),
        (["--store", "redis://h:1/0", "--room", ""], "--room: expected 1 to 64 characters"),
    ],
)
def test_relay_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    assert message in one_error_line(invoke("relay", *args))
    assert calls == []


@pytest.mark.unit
def test_join_options_reach_run_client(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_entry(monkeypatch, "udpchat.cli.join", "run_client")
    result = invoke(
        "join",
        "Zoë",
        "--server",
        "[::1]:9001",
        "--json",
        "--key",
        "k",
        "--delay",
        "30ms",
        "--seed",
        "4",
    )
    assert result.exit_code == 3, result.output
    assert without_identity(calls) == [
        {
            "options": ClientOptions(
                nick="Zoë",
                server=("::1", 9001),
                impairment=ImpairmentConfig(delay=0.03, seed=4),
                key="k",
            ),
            "json_output": True,
        }
    ]


@pytest.mark.unit
def test_join_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_entry(monkeypatch, "udpchat.cli.join", "run_client")
    invoke("join", "bob", env={"UDPCHAT_KEY": "from env"})
    assert calls[0]["options"].server == ("127.0.0.1", 9000)
    assert calls[0]["json_output"] is False
    assert calls[0]["options"].key == "from env"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bo b"], "udpchat: bad nickname 'bo b': a nickname cannot contain whitespace"),
        (["/bob"], "udpchat: bad nickname '/bob': a nickname cannot start with '/'"),
        (["x" * 33], "a nickname has at most 32 characters"),
        (
            ["bob", "--server", "relay"],
            "udpchat: --server: invalid address 'relay': missing ':PORT'",
        ),
        (["bob", "--server", "[::1]:x"], "invalid port 'x'"),
        (["bob", "--loss", "half"], "udpchat: --loss: invalid rate 'half'"),
        (["bob", "--burst", "0"], "udpchat: --burst:"),
    ],
)
def test_join_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    calls = fake_entry(monkeypatch, "udpchat.cli.join", "run_client")
    assert message in one_error_line(invoke("join", *args))
    assert calls == []


@pytest.mark.unit
def test_help_never_shows_the_key() -> None:
    for command in ("relay", "join"):
        result = invoke(command, "--help", env={"UDPCHAT_KEY": "hunter2"})
        assert result.exit_code == 0
        assert "hunter2" not in result.output
        assert "UDPCHAT_KEY" in result.output


@pytest.mark.unit
def test_relay_help_names_the_redis_extra() -> None:
    # Square brackets are markup to the help renderer: an unescaped [redis] vanished.
    result = invoke("relay", "--help")
    assert result.exit_code == 0
    assert "udpchat[redis]" in result.output


@pytest.mark.unit
def test_load_rejects_bad_sizes_in_one_line() -> None:
    line = one_error_line(invoke("load", "--members", "10,zero"))
    assert line.startswith("udpchat: --members: expected positive numbers")


@pytest.mark.unit
def test_load_rejects_a_bad_store_in_one_line() -> None:
    line = one_error_line(invoke("load", "--store", "sqlite:/tmp/room.sqlite3"))
    assert line == (
        "udpchat: --store: expected memory:, sqlite: or redis://HOST:PORT/DB, "
        "got 'sqlite:/tmp/room.sqlite3'"
    )


@pytest.mark.unit
def test_load_that_cannot_finish_a_stage_says_why_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import udpchat_bench.load

    def stalled(*args: object, **kwargs: object) -> None:
        raise RuntimeError("join probe: the relay did not welcome one more member within 5 s")

    monkeypatch.setattr(udpchat_bench.load, "run_load", stalled)
    line = one_error_line(invoke("load", "--members", "10"), ExitCode.FAILURE)
    assert line == (
        "udpchat: load: join probe: the relay did not welcome one more member within 5 s"
    )


KEY_FORMAT = re.compile(r"[a-z2-7]{5}(-[a-z2-7]{5}){5}")


@pytest.mark.unit
def test_keygen_prints_a_150_bit_key_alone_and_says_how_to_use_it() -> None:
    result = invoke("keygen")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert result.stdout == key + "\n" and KEY_FORMAT.fullmatch(key), result.stdout
    # 30 characters from an alphabet of 32: 5 bits each.
    symbols = key.replace("-", "")
    assert len(symbols) * math.log2(32) == 150 >= 128
    assert f"UDPCHAT_KEY={key} udpchat relay" in result.stderr
    assert f"UDPCHAT_KEY={key} udpchat join" in result.stderr
    assert "150 bits" in result.stderr


@pytest.mark.unit
def test_keygen_draws_every_symbol_uniformly() -> None:
    """Every run is new, and the 32 symbols come up evenly, in every position: a chi-square
    test far from its bound (31 degrees of freedom; 80 is exceeded with p < 1e-5)."""
    runs = [invoke("keygen").stdout.strip() for _ in range(50)]
    assert len(set(runs)) == len(runs)
    keys = [generate_passphrase(secrets.choice) for _ in range(1000)]  # what keygen prints, faster
    assert all(KEY_FORMAT.fullmatch(k) for k in keys)
    symbols = "".join(k.replace("-", "") for k in keys)
    expected = len(symbols) / 32
    counts = Counter(symbols)
    assert set(counts) == set("abcdefghijklmnopqrstuvwxyz234567")
    chi2 = sum((counts[c] - expected) ** 2 / expected for c in counts)
    assert chi2 < 80, chi2
    for position in range(30):
        assert len({k.replace("-", "")[position] for k in keys}) == 32


@pytest.mark.unit
def test_key_help_points_to_keygen() -> None:
    for command in ("relay", "join"):
        result = invoke(command, "--help")
        assert "udpchat keygen" in " ".join(result.output.replace("│", " ").split())


# --- help as a person reads it ------------------------------------------------------------------


def help_text(*command: str, columns: int = 80) -> str:
    result = CliRunner().invoke(
        app, [*command, "--help"], env={"COLUMNS": str(columns)}, prog_name="udpchat"
    )
    assert result.exit_code == 0, result.output
    return str(result.output)


def words(text: str) -> str:
    """The help's words in one line, without the boxes drawn around them."""
    return " ".join(text.replace("\u2502", " ").split())


@pytest.mark.unit
@pytest.mark.parametrize("command", ["", "netem", "relay", "join", "demo", "bench", "load"])
def test_help_shows_no_placeholders_and_fits_80_columns(command: str) -> None:
    text = help_text(*filter(None, [command]))
    assert "<bool>" not in text and "<str>" not in text and "<int>" not in text
    assert "{" not in text.splitlines()[1]  # the usage line: NICK, not {NICK}
    assert max(len(line) for line in text.splitlines()) <= 80
    if command:
        assert "Example" in text


@pytest.mark.unit
def test_join_help_tells_what_a_new_user_needs() -> None:
    text = words(help_text("join"))
    assert "Usage: udpchat join [OPTIONS] NICK" in text
    for needed in ("/msg NICK TEXT", "/quit", "Ctrl-D", "Ctrl-C", "NO_COLOR", "--json", "stderr"):
        assert needed in text, needed


@pytest.mark.unit
def test_bench_help_keeps_its_bracketed_defaults() -> None:
    text = words(help_text("bench"))
    assert "[default: 0%,5%,10%,20%,30%; with --quick: 0%,20%]" in text
    assert "[default: 400; with --quick: 40]" in text
    assert "[default: 3,6; with --quick: 3]" in text


@pytest.mark.unit
def test_help_names_the_limits_and_the_exit_statuses() -> None:
    demo_help = words(help_text("demo"))
    assert "(2 to 32)" in demo_help and "(1 to 10,000)" in demo_help
    top = words(help_text())
    assert "2 bad command line" in top and "130 interrupted" in top
    relay_help = words(help_text("relay", columns=120))
    for option, default in (
        ("--flood-burst", "10"),
        ("--flood-rate", "5.0"),
        ("--handshake-burst", "20"),
        ("--handshake-rate", "5.0"),
        ("--admission-burst", "100"),
        ("--admission-rate", "400.0"),
        ("--socket-buffer", "1M"),
        ("--max-per-host", "64"),
        ("--max-per-network", "256"),
    ):
        assert option in relay_help, option
        after = relay_help.rsplit(option, 1)[1]
        assert f"[default: {default}]" in after.split("--", 1)[0], option


# --- one meaning of a rate ----------------------------------------------------------------------


@pytest.mark.unit
def test_a_rate_means_the_same_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert impairment_config(loss="20%") == impairment_config(loss="0.2")
    assert cli.parse_loss_percents("--loss", "0%,0.05,20%") == (0.0, 5.0, 20.0)
    with pytest.raises(ValueError, match="did you mean 20%"):
        cli.parse_loss_percents("--loss", "0,20")
    with pytest.raises(ValueError, match="did you mean 20%"):
        impairment_config(loss="20")


@pytest.mark.unit
def test_bench_loss_list_reaches_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(
        "udpchat_bench.report.run_bench", lambda config, out, **kw: seen.append(config) or 0
    )
    result = invoke("bench", "--quick", "--loss", "0.1,30%")
    assert result.exit_code == 0, result.output
    assert seen[0].losses == (10.0, 30.0)


# --- relay limits -------------------------------------------------------------------------------


@pytest.mark.unit
def test_relay_limits_reach_the_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    result = invoke(
        "relay",
        "--flood-burst",
        "40",
        "--flood-rate",
        "20",
        "--handshake-burst",
        "100",
        "--handshake-rate",
        "50",
        "--admission-burst",
        "300",
        "--admission-rate",
        "1000",
        "--socket-buffer",
        "512K",
        env={"UDPCHAT_KEY": ""},
    )
    assert result.exit_code == 3, result.output
    config = calls[0]["options"].config
    assert (config.flood_burst, config.flood_rate) == (40, 20.0)
    assert (config.handshake_burst, config.handshake_rate) == (100, 50.0)
    assert (config.admission_burst, config.admission_rate) == (300, 1000.0)
    assert calls[0]["options"].socket_buffer == 512 * 1024


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flood-burst", "0"], "--flood-burst: expected 1 or more, got 0"),
        (["--flood-rate", "-1"], "--flood-rate: expected a number above 0"),
        (["--handshake-burst", "0"], "--handshake-burst: expected 1 or more"),
        (["--handshake-rate", "0"], "--handshake-rate: expected a number above 0"),
        (["--admission-burst", "0"], "--admission-burst: expected 1 or more"),
        (["--admission-rate", "0"], "--admission-rate: expected a number above 0"),
        (["--socket-buffer", "4X"], "--socket-buffer: expected a size such as 4M"),
        (["--socket-buffer", "2048M"], "--socket-buffer: expected at most 1G"),
    ],
)
def test_relay_limit_errors(monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    assert message in one_error_line(invoke("relay", *args))
    assert calls == []


@pytest.mark.unit
def test_every_exit_status_is_documented_once_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("### Exit status", 1)[1].split("\n## ", 1)[0]
    rows = [row.split("|") for row in table.splitlines() if row.startswith("| ")]
    documented = [int(cells[1]) for cells in rows if cells[1].strip().isdigit()]
    assert documented == [code.value for code in ExitCode]
    assert set(SHORT_MEANING) == set(ExitCode)
