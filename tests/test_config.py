"""The configuration: the example loads, defaults apply, every problem is reported with its key, keys stay secret."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import random
import re
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest

from runwatch import config as config_module
from runwatch.catalog import load_catalog
from runwatch.config import (
    BudgetConfig,
    Config,
    DaemonConfig,
    HttpConfig,
    InboxConfig,
    NodeConfig,
    NotifyConfig,
    RunwayConfig,
    S3Config,
    SchedulerConfig,
    find_config,
    load_api_key,
    load_config,
    parse_config,
)
from runwatch.errors import ConfigError, Problem

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
BASE = Path("/etc/runwatch")
KEY = "key_" + "0123456789abcdef" * 8
MIB = 1024 * 1024


def minimal() -> dict[str, Any]:
    return {"inbox": [{"path": "/srv/in", "outbox": "/srv/out"}]}


def put(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set ``value`` at a path such as ``runway.timeout`` or ``inbox[0].settle``, making tables on the way."""
    tokens = re.findall(r"\[\d+\]|[^.\[\]]+", dotted)
    node: Any = data
    for token in tokens[:-1]:
        node = node[int(token[1:-1])] if token.startswith("[") else node.setdefault(token, {})
    last = tokens[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return data


def with_value(dotted: str, value: Any) -> dict[str, Any]:
    data = minimal()
    if dotted.startswith("s3.") and dotted != "s3.bucket":
        data["s3"] = {"bucket": "media"}
    return put(data, dotted, value)


def parse(data: Any, env: dict[str, str] | None = None, base: Path = BASE) -> Config:
    return parse_config(data, "test.toml", env={} if env is None else env, base=base)


def problems_of(data: Any, env: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse(data, env)
    assert info.value.path == "test.toml"
    return info.value.problems


def uncomment(text: str) -> str:
    """The example with every switched-off setting (``#key = value``, ``#[s3]``) switched on."""
    return re.sub(r"(?m)^#(?=[\[a-z])", "", text)


SECTIONS: dict[str, type[Any]] = {
    "runway": RunwayConfig,
    "s3": S3Config,
    "budget": BudgetConfig,
    "scheduler": SchedulerConfig,
    "daemon": DaemonConfig,
    "http": HttpConfig,
    "node": NodeConfig,
}


def inbox_keys() -> set[str]:
    """The keys of an [[inbox]] table: InboxConfig's fields but those derived from other sections."""
    return {f.name for f in dataclasses.fields(InboxConfig) if not f.metadata.get("derived")}


class TestExample:
    def test_loads(self) -> None:
        """config.example.toml loads as shipped, although its folders do not exist here."""
        config = load_config(EXAMPLE, env={})
        assert config.path == EXAMPLE
        assert [i.name for i in config.inboxes] == ["inbox"]
        assert config.s3 is None

    def test_loads_with_every_setting_switched_on(self, tmp_path: Path) -> None:
        """With the optional settings and the second inbox uncommented, the example still loads."""
        full = tmp_path / "full.toml"
        full.write_text(uncomment(EXAMPLE.read_text()))
        config = load_config(full, env={})
        assert config.s3 is not None and config.s3.bucket == "my-bucket"
        assert [i.name for i in config.inboxes] == ["stills", "voices"]
        assert config.inboxes[1].accept_media and config.inboxes[1].media_field == "audioUri"

    def test_every_key_is_in_it(self) -> None:
        """The fully uncommented example uses every key the loader knows, and no other."""
        data = tomllib.loads(uncomment(EXAMPLE.read_text()))
        for section, cls in SECTIONS.items():
            assert set(data[section]) == {f.name for f in dataclasses.fields(cls)}, section
        assert set(data["state"]) == {"dir", "database"}
        assert set(data["inbox"][0]) == inbox_keys()
        assert set(data["notify"][0]) == {f.name for f in dataclasses.fields(NotifyConfig)}
        assert set(data) == {
            "umask",
            "runway",
            "s3",
            "state",
            "budget",
            "scheduler",
            "daemon",
            "http",
            "node",
            "inbox",
            "notify",
        }

    def test_every_key_has_a_comment(self) -> None:
        """The first line of each setting follows an explanatory comment."""
        lines = EXAMPLE.read_text().splitlines()
        names = {f.name for cls in (*SECTIONS.values(), NotifyConfig) for f in dataclasses.fields(cls)}
        names |= inbox_keys() | {"umask"}
        for name in names:
            index = next(i for i, line in enumerate(lines) if re.match(rf"#?{name} = ", line))
            assert lines[index - 1].startswith("# "), name


class TestDefaults:
    def test_minimal_config(self) -> None:
        """Only an inbox's path and outbox are required; everything else takes its documented default."""
        config = parse(minimal())
        assert config.runway == RunwayConfig()
        assert config.s3 is None
        assert config.budget == BudgetConfig()
        assert config.scheduler == SchedulerConfig()
        assert config.state.dir == Path("/var/lib/runwatch")
        assert config.umask == 0o027
        assert config.path is None
        assert config.inboxes == (
            InboxConfig(name="in", path=Path("/srv/in"), outbox=Path("/srv/out"), work=Path("/srv/in/.runwatch")),
        )

    def test_s3_defaults(self) -> None:
        """An [s3] section needs only a bucket."""
        assert parse(with_value("s3.bucket", "media")).s3 == S3Config(bucket="media")

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({}, "/var/lib/runwatch"),
            ({"STATE_DIRECTORY": "/var/lib/runwatch-a"}, "/var/lib/runwatch-a"),
            ({"STATE_DIRECTORY": "/var/lib/one:/var/lib/two"}, "/var/lib/one"),
            ({"STATE_DIRECTORY": ""}, "/var/lib/runwatch"),
        ],
    )
    def test_state_dir_from_systemd(self, env: dict[str, str], expected: str) -> None:
        """Without [state], the state folder is systemd's $STATE_DIRECTORY (the first one), else /var/lib/runwatch."""
        assert parse(minimal(), env).state.dir == Path(expected)

    def test_state_dir_in_the_file_wins(self) -> None:
        """[state] dir beats $STATE_DIRECTORY."""
        data = with_value("state.dir", "/data/rw")
        assert parse(data, {"STATE_DIRECTORY": "/var/lib/x"}).state.dir == Path("/data/rw")

    @pytest.mark.parametrize(
        ("dotted", "value", "read", "expected"),
        [
            ("umask", "027", lambda c: c.umask, 0o027),
            ("umask", "0o077", lambda c: c.umask, 0o077),
            ("umask", 0o022, lambda c: c.umask, 0o022),
            ("umask", "0", lambda c: c.umask, 0),
            ("runway.base_url", "http://127.0.0.1:8000/", lambda c: c.runway.base_url, "http://127.0.0.1:8000"),
            ("runway.poll_interval", 2, lambda c: c.runway.poll_interval, 2.0),
            ("runway.unknown_models", "reject", lambda c: c.runway.unknown_models, "reject"),
            ("s3.prefix", "media", lambda c: c.s3.prefix, "media/"),
            ("s3.prefix", "", lambda c: c.s3.prefix, ""),
            ("s3.endpoint_url", "http://127.0.0.1:8333/", lambda c: c.s3.endpoint_url, "http://127.0.0.1:8333"),
            ("s3.presign_expiry", 604800, lambda c: c.s3.presign_expiry, 604800),
            ("s3.multipart_chunksize", 5 * MIB, lambda c: c.s3.multipart_chunksize, 5 * MIB),
            ("budget.daily", 0, lambda c: c.budget.daily, 0.0),
            ("budget.monthly", 40000, lambda c: c.budget.monthly, 40000.0),
            ("scheduler.per_model", 2, lambda c: c.scheduler.per_model, 2),
            ("inbox[0].name", "stills", lambda c: c.inboxes[0].name, "stills"),
            ("inbox[0].work", "/srv/work", lambda c: c.inboxes[0].work, Path("/srv/work")),
            ("inbox[0].work", "/srv/in/.jobs", lambda c: c.inboxes[0].work, Path("/srv/in/.jobs")),
            ("inbox[0].endpoint", "text_to_speech", lambda c: c.inboxes[0].endpoint, "text_to_speech"),
            ("inbox[0].transport", "data", lambda c: c.inboxes[0].transport, "data"),
            ("inbox[0].priority", -1000, lambda c: c.inboxes[0].priority, -1000),
            ("inbox[0].approve_above", 200, lambda c: c.inboxes[0].approve_above, 200.0),
        ],
    )
    def test_accepted_values(self, dotted: str, value: Any, read: Any, expected: Any) -> None:
        """Values inside the allowed range load, normalised where the table says so."""
        assert read(parse(with_value(dotted, value))) == expected

    def test_frozen(self) -> None:
        """The result cannot be changed: not its fields, not an inbox's defaults."""
        inbox = parse(with_value("inbox[0].defaults", {"model": "gen4_turbo"})).inboxes[0]
        assert isinstance(inbox.defaults, types.MappingProxyType)
        with pytest.raises(dataclasses.FrozenInstanceError):
            inbox.name = "other"  # type: ignore[misc]
        with pytest.raises(TypeError):
            inbox.defaults["model"] = "gen4.5"  # type: ignore[index]

    def test_defaults_are_a_copy(self) -> None:
        """Changing the parsed TOML afterwards does not reach the frozen config."""
        data = with_value("inbox[0].defaults", {"model": "gen4_turbo", "references": [{"uri": "a.jpg"}]})
        config = parse(data)
        data["inbox"][0]["defaults"]["references"].append({"uri": "b.jpg"})
        assert config.inboxes[0].defaults["references"] == [{"uri": "a.jpg"}]


BAD_VALUES = [
    # (dotted key, value, what the message must say is allowed)
    ("runway.base_url", "ftp://example.com", "an http:// or https:// URL"),
    ("runway.base_url", 8000, "an http:// or https:// URL"),
    ("runway.api_version", "latest", 'a date like "2024-11-06"'),
    ("runway.unknown_models", "rejcet", 'one of "pass", "reject"'),
    ("runway.poll_interval", 0, "a number > 0"),
    ("runway.poll_interval", -1.5, "a number > 0"),
    ("runway.poll_interval", True, "a number > 0"),
    ("runway.poll_interval", "5", "a number > 0"),
    ("runway.poll_interval", math.nan, "a number > 0"),
    ("runway.timeout", math.inf, "a number > 0"),
    ("runway.api_key_file", 3, "a path"),
    ("runway.api_key_file", "", "a path"),
    ("s3.bucket", "s3://media/x", "no s3://"),
    ("s3.bucket", "", "a bucket name"),
    ("s3.prefix", "/abs/", "without spaces or a leading /"),
    ("s3.region", "", "a region name"),
    ("s3.endpoint_url", "localhost:8333", "an http:// or https:// URL"),
    ("s3.presign_expiry", 0, "from 1 to 604800"),
    ("s3.presign_expiry", 604801, "from 1 to 604800"),
    ("s3.presign_expiry", 3600.0, "an integer"),
    ("s3.keep", "yes", "true or false"),
    ("s3.keep", 1, "true or false"),
    ("s3.multipart_threshold", 1024, f">= {5 * MIB}"),
    ("s3.multipart_chunksize", 6 * 1024 * MIB, f"from {5 * MIB} to {5 * 1024 * MIB}"),
    ("s3.addressing_style", "vhost", 'one of "auto", "path", "virtual"'),
    ("state.dir", "", "a path"),
    ("state.dir", ["/a"], "a path"),
    ("budget.daily", -1, "a number >= 0"),
    ("budget.monthly", "lots", "a number >= 0"),
    ("budget.unknown_price", "deny", 'one of "hold", "allow"'),
    ("scheduler.max_in_flight", 0, "an integer >= 1"),
    ("scheduler.max_uploads", 1.5, "an integer >= 1"),
    ("scheduler.max_downloads", True, "an integer >= 1"),
    ("scheduler.per_model", 0, "an integer >= 1"),
    ("scheduler.rescan", 0, "a number > 0"),
    ("umask", "abc", 'an octal umask such as "027"'),
    ("umask", "0277", "owner digit 0"),
    ("umask", 0o1000, "owner digit 0"),
    ("umask", True, 'an octal umask such as "027"'),
    ("umask", 27.0, 'an octal umask such as "027"'),
    ("inbox[0].name", "a/b", "a name without slashes"),
    ("inbox[0].name", "", "a name without slashes"),
    ("inbox[0].path", 7, "a path"),
    ("inbox[0].outbox", "", "a path"),
    ("inbox[0].work", False, "a path"),
    ("inbox[0].endpoint", "image2video", '"image_to_video"'),
    ("inbox[0].endpoint", "/v1/image_to_video", '"voice_isolation"'),
    ("inbox[0].defaults", "model=gen4_turbo", "a table of request body fields"),
    ("inbox[0].defaults", ["model"], "a table of request body fields"),
    ("inbox[0].polling", "false", "true or false"),
    ("inbox[0].settle", 0, "a number > 0"),
    ("inbox[0].transport", "ftp", 'one of "auto", "s3", "runway", "data"'),
    ("inbox[0].accept_media", 0, "true or false"),
    ("inbox[0].media_field", "prompt image", "a request field name as the API spells it"),
    ("inbox[0].media_field", "promptImage.uri", "a request field name as the API spells it"),
    ("inbox[0].media_field", "prompt_image", "a request field name as the API spells it"),
    ("inbox[0].budget_daily", -5, "a number >= 0"),
    ("inbox[0].approve_above", "200", "a number >= 0"),
    ("inbox[0].priority", 1001, "an integer from -1000 to 1000"),
    ("inbox[0].priority", 1.0, "an integer from -1000 to 1000"),
]


class TestBadValues:
    @pytest.mark.parametrize(("dotted", "value", "allowed"), BAD_VALUES)
    def test_names_file_key_found_and_allowed(self, dotted: str, value: Any, allowed: str) -> None:
        """A wrong type or value is one problem naming the file, the dotted key, what was found and what is allowed."""
        with pytest.raises(ConfigError) as info:
            parse(with_value(dotted, value))
        assert [p.path for p in info.value.problems] == [dotted]
        message = info.value.problems[0].message
        assert allowed in message
        assert "found " in message
        assert str(info.value).startswith("test.toml: ")
        assert f"  {dotted}: " in str(info.value)

    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            (True, "true (a boolean)"),
            (1, "1 (an integer)"),
            ("1", '"1" (a string)'),
            ({"a": 1}, "a table"),
            ([1], "an array"),
            ("x" * 200, "…"),
            (datetime.date(2024, 1, 1), "a date"),
        ],
    )
    def test_found_value_shown_in_toml_words(self, value: Any, shown: str) -> None:
        """The found value is described the way the TOML file wrote it (and long strings are cut short)."""
        (problem,) = problems_of(with_value("runway.unknown_models", value))
        assert shown in problem.message

    @pytest.mark.parametrize(
        "dotted",
        [
            "runway.poll_interval",
            "runway.timeout",
            "scheduler.rescan",
            "inbox[0].settle",
            "budget.daily",
            "inbox[0].approve_above",
        ],
    )
    def test_booleans_are_not_numbers(self, dotted: str) -> None:
        """TOML's true is not 1, wherever a number is expected."""
        (problem,) = problems_of(with_value(dotted, True))
        assert problem.path == dotted

    def test_every_problem_at_once(self) -> None:
        """All problems are collected and reported together, in file order per section."""
        data = minimal()
        put(data, "runway.poll_interval", 0)
        put(data, "runway.unknown_models", "maybe")
        put(data, "s3.presign_expiry", 10**9)
        put(data, "scheduler.max_uploads", 0)
        put(data, "inbox[0].settle", -1)
        put(data, "inbox[0].colour", "red")
        put(data, "umask", "999")
        paths = [p.path for p in problems_of(data)]
        assert set(paths) == {
            "runway.poll_interval",
            "runway.unknown_models",
            "[s3]",  # the missing bucket, located by its table
            "s3.presign_expiry",
            "scheduler.max_uploads",
            "inbox[0].settle",
            "inbox[0].colour",
            "umask",
        }

    @pytest.mark.parametrize("section", ["runway", "s3", "state", "budget", "scheduler"])
    def test_section_must_be_a_table(self, section: str) -> None:
        """A section given as a plain value is refused by name."""
        problems = problems_of({**minimal(), section: 5})
        assert problems[0].path == section
        assert f"a table ([{section}] section)" in problems[0].message


class TestUnknownKeys:
    @pytest.mark.parametrize(
        ("dotted", "allowed"),
        [
            ("colour", "runway, s3, state, budget, scheduler, daemon, http, node, inbox, umask"),
            ("runway.colour", "base_url, api_version, unknown_models, poll_interval, api_key_file, timeout"),
            ("s3.colour", "bucket, prefix, region, endpoint_url, presign_expiry, keep, multipart_threshold"),
            ("state.colour", "allowed keys: dir"),
            ("budget.colour", "daily, monthly, unknown_price"),
            ("scheduler.colour", "max_in_flight, max_uploads, max_downloads, per_model, rescan"),
            (
                "inbox[0].colour",
                "name, path, outbox, work, endpoint, defaults, polling, settle, transport, accept_media",
            ),
        ],
    )
    def test_at_every_level(self, dotted: str, allowed: str) -> None:
        """An unknown key is an error naming its dotted path and the keys allowed there."""
        data = with_value(dotted, "red")
        if dotted.startswith("s3."):
            data["s3"]["bucket"] = "media"
        (problem,) = problems_of(data)
        assert problem.path == dotted
        assert problem.message.startswith("unknown key")
        assert allowed in problem.message

    @pytest.mark.parametrize(
        ("dotted", "hint"),
        [
            ("runway.poll_intervall", "poll_interval"),
            ("scheduler.max_inflight", "max_in_flight"),
            ("inbox[0].outbx", "outbox"),
            ("inbox[0].approve_abov", "approve_above"),
            ("budgit", "budget"),
        ],
    )
    def test_typos_get_a_suggestion(self, dotted: str, hint: str) -> None:
        """A near miss names the key that was probably meant."""
        (problem,) = problems_of(with_value(dotted, 1))
        assert f'did you mean "{hint}"?' in problem.message

    def test_request_body_fields_in_defaults_are_free(self) -> None:
        """Keys inside an inbox's defaults are request body fields, not config keys: they are not checked here."""
        data = with_value("inbox[0].defaults", {"model": "gen4_turbo", "anyField": {"nested": [1, 2.5, True]}})
        assert parse(data).inboxes[0].defaults["anyField"] == {"nested": [1, 2.5, True]}


class TestApiKeyInConfig:
    @pytest.mark.parametrize(
        "dotted",
        [
            "runway.api_key",
            "runway.API_KEY",
            "runway.api-key",
            "runway.secret",
            "runway.token",
            "api_key",
            "s3.api_key",
            "inbox[0].api_key",
        ],
    )
    def test_key_names_refused(self, dotted: str) -> None:
        """A key-named setting is refused with where the key must come from instead."""
        data = with_value(dotted, "anything")
        if dotted.startswith("s3."):
            data["s3"]["bucket"] = "media"
        (problem,) = problems_of(data)
        assert problem.path == dotted
        for source in ("RUNWAYML_API_SECRET", "RUNWAY_API_KEY", "runway_api_key", "api_key_file", "never"):
            assert source in problem.message

    @pytest.mark.parametrize(
        "dotted",
        [
            "runway.api_key",
            "runway.base_url",
            "inbox[0].defaults.promptText",
            "inbox[0].defaults.list",
            "inbox[0].name",
            "budget.note",
        ],
    )
    def test_key_looking_values_refused_and_never_shown(self, dotted: str) -> None:
        """A value that looks like a Runway key is refused wherever it is, and the key never appears in the error."""
        value = [f"Bearer {KEY}"] if dotted.endswith("list") else KEY
        with pytest.raises(ConfigError) as info:
            parse(with_value(dotted, value))
        paths = [p.path for p in info.value.problems]
        assert dotted in paths or f"{dotted}[0]" in paths
        assert "never goes in the config file" in str(info.value)
        assert KEY not in str(info.value)
        assert KEY[:20] not in str(info.value)

    def test_key_as_a_toml_key_is_masked(self) -> None:
        """Even a key pasted as a TOML key name does not reach the message."""
        data = with_value(f"runway.{KEY}", 1)
        with pytest.raises(ConfigError) as info:
            parse(data)
        assert KEY[:20] not in str(info.value)

    def test_s3_credentials_refused(self) -> None:
        """AWS credentials in [s3] are refused with where they come from instead."""
        data = with_value("s3.aws_secret_access_key", "abc")
        data["s3"]["bucket"] = "media"
        (problem,) = problems_of(data)
        assert problem.path == "s3.aws_secret_access_key"
        assert "boto3's usual chain" in problem.message


class TestInboxRules:
    def two(self, first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
        return {"inbox": [first, second]}

    @pytest.mark.parametrize(
        ("inbox", "message"),
        [
            ({}, "at least one [[inbox]]"),
            ({"path": "/x", "outbox": "/y"}, "write [[inbox]], not [inbox]"),
            ([], "at least one [[inbox]]"),
            ("inbox", "at least one [[inbox]]"),
        ],
    )
    def test_at_least_one_inbox(self, inbox: Any, message: str) -> None:
        """[[inbox]] is required, as an array of tables."""
        data = {} if inbox == {} else {"inbox": inbox}
        (problem,) = problems_of(data)
        assert problem.path == ("" if inbox == {} else "inbox")
        assert message in problem.message

    def test_item_not_a_table(self) -> None:
        """Each inbox entry must be a table; the good ones are still checked."""
        problems = problems_of({"inbox": [5, {"path": "/a", "colour": 1}]})
        assert [p.path for p in problems] == ["inbox[0]", "[[inbox]] 2", "inbox[1].colour"]

    @pytest.mark.parametrize("missing", ["path", "outbox"])
    def test_folders_required(self, missing: str) -> None:
        """An inbox needs its path and outbox; a missing one is named as missing, in the table the file
        writes ("[[inbox]] 2", counted from 1), and the error is not called an invalid configuration."""
        inbox = {"path": "/a", "outbox": "/b"}
        del inbox[missing]
        with pytest.raises(ConfigError) as info:
            parse({"inbox": [{"path": "/x", "outbox": "/y"}, inbox]})
        (problem,) = info.value.problems
        assert str(problem).startswith(f"[[inbox]] 2: `{missing}` is missing (the folder ")
        assert str(info.value).startswith("test.toml: a required key is missing\n  [[inbox]] 2: ")
        assert "invalid" not in str(info.value)

    def test_missing_and_wrong_together(self) -> None:
        """A missing key beside a wrong value: each says what it is, under one heading."""
        with pytest.raises(ConfigError) as info:
            parse({"s3": {"region": "us-east-1"}, "inbox": [{"path": "/a", "outbox": 3}]})
        assert [str(p).split(" (")[0] for p in info.value.problems] == [
            "[s3]: `bucket` is missing",
            "inbox[0].outbox: expected a path",
        ]
        assert str(info.value).startswith("test.toml: invalid configuration\n")

    @pytest.mark.parametrize(
        ("first", "second", "path", "message"),
        [
            (
                {"path": "/a/in", "outbox": "/a/out"},
                {"path": "/b/in", "outbox": "/b/out"},
                "inbox[1].name",
                '"in" is already the name of inbox[0]',
            ),
            (
                {"path": "/a", "outbox": "/o1", "name": "x"},
                {"path": "/b", "outbox": "/o2", "name": "x"},
                "inbox[1].name",
                "names must be unique",
            ),
            (
                {"path": "/a", "outbox": "/o1"},
                {"path": "/a/", "outbox": "/o2", "name": "b"},
                "inbox[1].path",
                "inbox[0]'s folder /a",
            ),
            ({"path": "/a", "outbox": "/o1"}, {"path": "/a/sub", "outbox": "/o2"}, "inbox[1].path", "inside"),
            ({"path": "/a/sub", "outbox": "/o1"}, {"path": "/a", "outbox": "/o2"}, "inbox[1].path", "contains"),
            (
                {"path": "/a", "outbox": "/b/out"},
                {"path": "/b", "outbox": "/o2"},
                "inbox[0].outbox",
                "status files would be taken as requests",
            ),
        ],
    )
    def test_across_inboxes(self, first: dict[str, Any], second: dict[str, Any], path: str, message: str) -> None:
        """Names are unique, folders distinct and not nested, and no outbox feeds another inbox."""
        (problem,) = problems_of(self.two(first, second))
        assert problem.path == path
        assert message in problem.message

    def test_shared_outbox_is_fine(self) -> None:
        """Two inboxes may write into the same outbox."""
        config = parse(self.two({"path": "/a", "outbox": "/o"}, {"path": "/b", "outbox": "/o"}))
        assert [i.name for i in config.inboxes] == ["a", "b"]

    @pytest.mark.parametrize(
        ("extra", "path", "message"),
        [
            ({"outbox": "/srv/in"}, "inbox[0].outbox", "must not be the inbox itself nor inside it"),
            ({"outbox": "/srv/in/out"}, "inbox[0].outbox", "must not be the inbox itself nor inside it"),
            ({"work": "/srv/in"}, "inbox[0].work", "must not be the inbox"),
            ({"work": "/srv/out/.work"}, "inbox[0].work", "nor inside the outbox"),
            ({"work": "/srv/in/work"}, "inbox[0].work", "must be a hidden folder"),
            ({"transport": "s3"}, "inbox[0].transport", '"s3" needs an [s3] section'),
            ({"accept_media": True}, "inbox[0].accept_media", "needs this inbox's endpoint"),
            (
                {"accept_media": True, "endpoint": "video_upscale"},
                "inbox[0].media_field",
                '"promptImage" is not a field of video_upscale; allowed: creativity, flavor, fpsBoost, model',
            ),
            ({"defaults": {"endpoint": "image_to_video"}}, "inbox[0].defaults.endpoint", "use the inbox's endpoint"),
            ({"defaults": {"runwatch": {"priority": 1}}}, "inbox[0].defaults.runwatch", "not a request body field"),
            ({"defaults": {"seed": math.nan}}, "inbox[0].defaults.seed", "cannot be sent in a JSON request body"),
            ({"defaults": {"at": [datetime.time(1, 2)]}}, "inbox[0].defaults.at[0]", "found a time"),
        ],
    )
    def test_within_one_inbox(self, extra: dict[str, Any], path: str, message: str) -> None:
        """An inbox's own settings must fit together."""
        (problem,) = problems_of({"inbox": [{"path": "/srv/in", "outbox": "/srv/out", **extra}]})
        assert problem.path == path
        assert message in problem.message

    def test_root_folder_needs_a_name(self) -> None:
        """The folder / has no name to default to."""
        problems = problems_of({"inbox": [{"path": "/", "outbox": "/srv/out"}]})
        assert Problem("inbox[0].name", "the folder / has no name to use; set name") in problems

    def test_accept_media_with_a_real_field(self) -> None:
        """accept_media works with an endpoint that has the chosen field."""
        inbox = {
            "path": "/a",
            "outbox": "/b",
            "endpoint": "video_upscale",
            "accept_media": True,
            "media_field": "videoUri",
        }
        assert parse({"inbox": [inbox]}).inboxes[0].media_field == "videoUri"

    def test_s3_transport_with_s3(self) -> None:
        """transport = "s3" is fine once [s3] is configured."""
        data = with_value("inbox[0].transport", "s3")
        data["s3"] = {"bucket": "media"}
        assert parse(data).inboxes[0].transport == "s3"

    @pytest.mark.parametrize(
        ("transport", "bucket", "chosen"),
        [("auto", False, "runway"), ("auto", True, "s3"), ("data", True, "data"), ("runway", True, "runway")],
    )
    def test_media_transport(self, transport: str, bucket: bool, chosen: str) -> None:
        """The transport an inbox's media go by, which request checks fit them to: auto is s3 with a bucket."""
        data = with_value("inbox[0].transport", transport)
        if bucket:
            data["s3"] = {"bucket": "media"}
        assert parse(data).inboxes[0].media_transport == chosen

    def test_all_fourteen_endpoints(self) -> None:
        """Every task endpoint of the catalogue is accepted as an inbox endpoint."""
        endpoints = sorted(load_catalog().endpoints)
        assert len(endpoints) == 14
        for endpoint in endpoints:
            assert parse(with_value("inbox[0].endpoint", endpoint)).inboxes[0].endpoint == endpoint


class TestPaths:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("in", "/etc/runwatch/in"),
            ("./in/", "/etc/runwatch/in"),
            ("../srv/in", "/etc/srv/in"),
            ("/abs/in", "/abs/in"),
            ("~/in", "/home/op/in"),
            ("~", "/home/op"),
        ],
    )
    def test_relative_to_the_config_folder(self, value: str, expected: str) -> None:
        """Relative paths are taken from the config file's folder, normalised; ~/ means $HOME."""
        data = {"inbox": [{"path": value, "outbox": "/o"}], "runway": {"api_key_file": value}, "state": {"dir": value}}
        config = parse(data, {"HOME": "/home/op"})
        assert config.inboxes[0].path == Path(expected)
        assert config.runway.api_key_file == Path(expected)
        assert config.state.dir == Path(expected)

    @pytest.mark.parametrize(("value", "env"), [("~op/in", {"HOME": "/home/op"}), ("~/in", {})])
    def test_tilde_only_with_home(self, value: str, env: dict[str, str]) -> None:
        """Only a leading ~/ is expanded, and only when HOME is known."""
        (problem,) = problems_of(with_value("inbox[0].path", value), env)
        assert "only a leading ~/ is expanded" in problem.message

    def test_load_config_uses_the_files_folder(self, tmp_path: Path) -> None:
        """load_config resolves against the folder the file is in, not the current folder."""
        file = tmp_path / "etc" / "runwatch.toml"
        file.parent.mkdir()
        file.write_text('[[inbox]]\npath = "in"\noutbox = "../out"\n')
        config = load_config(file, env={})
        assert config.path == file
        assert config.inboxes[0].path == tmp_path / "etc" / "in"
        assert config.inboxes[0].outbox == tmp_path / "out"
        assert not config.inboxes[0].path.exists()

    def test_parse_without_base_uses_current_folder(self) -> None:
        """Without a base, relative paths are taken from the current folder, so they are never left relative."""
        config = parse_config({"inbox": [{"path": "in", "outbox": "out"}]}, "x", env={})
        assert config.inboxes[0].path == Path.cwd() / "in"


class TestLoadConfig:
    @pytest.mark.parametrize(
        ("text", "where"),
        [
            ("[runway]\nbase_url = \n", "at line 2, column 12"),
            ("[[inbox]]\npath = '/a'\npath = '/b'\n", "at line 3"),
            ("umask = 027\n", "at line 1"),
        ],
    )
    def test_syntax_error_names_line_and_column(self, tmp_path: Path, text: str, where: str) -> None:
        """A TOML syntax error names the file, the line and the column."""
        file = tmp_path / "bad.toml"
        file.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(file, env={})
        assert info.value.path == str(file)
        assert "TOML syntax error" in str(info.value)
        assert where in str(info.value)

    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda p: None, "cannot read"),
            (lambda p: p.mkdir(), "cannot read"),
            (lambda p: p.write_bytes(b"umask = '\xff'\n"), "not UTF-8"),
        ],
    )
    def test_unreadable_file(self, tmp_path: Path, make: Any, message: str) -> None:
        """A missing, unreadable or non-UTF-8 file is a ConfigError naming it."""
        file = tmp_path / "runwatch.toml"
        make(file)
        with pytest.raises(ConfigError) as info:
            load_config(file, env={})
        assert info.value.path == str(file)
        assert message in str(info.value)

    def test_problem_in_file_names_the_file(self, tmp_path: Path) -> None:
        """A validation problem in a file names that file."""
        file = tmp_path / "runwatch.toml"
        file.write_text('[scheduler]\nrescan = "often"\n[[inbox]]\npath = "a"\noutbox = "b"\n')
        with pytest.raises(ConfigError) as info:
            load_config(file, env={})
        assert str(info.value).startswith(f"{file}: invalid configuration\n  scheduler.rescan: expected")


class TestFindConfig:
    @pytest.fixture
    def places(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
        """One candidate file per source, with the system default moved into tmp_path."""
        places = {name: tmp_path / name / "runwatch.toml" for name in ("explicit", "env", "cwd", "system")}
        for path in places.values():
            path.parent.mkdir()
            path.write_text("")
        monkeypatch.setattr(config_module, "SYSTEM_CONFIG", places["system"])
        return places

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (("explicit", "env", "cwd", "system"), "explicit"),
            (("env", "cwd", "system"), "env"),
            (("cwd", "system"), "cwd"),
            (("system",), "system"),
        ],
    )
    def test_order(self, places: dict[str, Path], tmp_path: Path, given: tuple[str, ...], expected: str) -> None:
        """--config, then $RUNWATCH_CONFIG, then ./runwatch.toml, then /etc/runwatch/config.toml."""
        explicit = places["explicit"] if "explicit" in given else None
        env = {"RUNWATCH_CONFIG": str(places["env"])} if "env" in given else {}
        cwd = places["cwd"].parent if "cwd" in given else tmp_path
        assert find_config(explicit, env=env, cwd=cwd) == places[expected]

    @pytest.mark.parametrize("source", ["explicit", "env"])
    def test_named_file_must_exist(self, places: dict[str, Path], tmp_path: Path, source: str) -> None:
        """A file named by --config or $RUNWATCH_CONFIG must exist; there is no fall-back to another file."""
        missing = tmp_path / "nope.toml"
        explicit = missing if source == "explicit" else None
        env = {"RUNWATCH_CONFIG": str(missing)}
        with pytest.raises(ConfigError) as info:
            find_config(explicit, env=env, cwd=places["cwd"].parent)
        assert [p.path for p in info.value.problems] == [str(missing)]
        assert "no such file" in str(info.value)

    def test_relative_names_from_cwd(self, places: dict[str, Path], tmp_path: Path) -> None:
        """A relative --config or $RUNWATCH_CONFIG is taken from the current folder."""
        assert find_config("explicit/runwatch.toml", env={}, cwd=tmp_path) == places["explicit"]
        assert find_config(None, env={"RUNWATCH_CONFIG": "env/runwatch.toml"}, cwd=tmp_path) == places["env"]

    def test_empty_names_are_unset(self, places: dict[str, Path]) -> None:
        """An empty --config or $RUNWATCH_CONFIG counts as not given."""
        assert find_config("", env={"RUNWATCH_CONFIG": ""}, cwd=places["cwd"].parent) == places["cwd"]

    def test_nothing_found_names_every_place(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no file anywhere, the error names every place tried, in order."""
        monkeypatch.setattr(config_module, "SYSTEM_CONFIG", tmp_path / "etc" / "config.toml")
        (tmp_path / "runwatch.toml").mkdir()
        with pytest.raises(ConfigError) as info:
            find_config(None, env={}, cwd=tmp_path)
        assert info.value.summary == "no configuration file found; tried:"
        assert [p.path for p in info.value.problems] == [
            str(tmp_path / "runwatch.toml"),
            str(tmp_path / "etc" / "config.toml"),
        ]
        assert "not a regular file (from the current folder)" in str(info.value)
        assert "no such file (from the system default)" in str(info.value)


SOURCES = ("RUNWAYML_API_SECRET", "RUNWAY_API_KEY", "credential", "file")


class TestApiKey:
    def setup(self, tmp_path: Path, values: dict[str, str]) -> tuple[Config, dict[str, str]]:
        """A config whose api_key_file and credential folder live in tmp_path, holding ``values`` per source."""
        creds = tmp_path / "creds"
        creds.mkdir()
        key_file = tmp_path / "key"
        env = {name: values[name] for name in SOURCES[:2] if name in values}
        env["CREDENTIALS_DIRECTORY"] = str(creds)
        if "credential" in values:
            (creds / "runway_api_key").write_text(values["credential"])
        if "file" in values:
            key_file.write_text(values["file"])
        config = parse(with_value("runway.api_key_file", str(key_file)))
        return config, env

    @pytest.mark.parametrize(
        "present",
        [
            SOURCES,
            SOURCES[1:],
            SOURCES[2:],
            SOURCES[3:],
            ("RUNWAYML_API_SECRET", "file"),
            ("RUNWAY_API_KEY", "file"),
            ("credential", "RUNWAY_API_KEY"),
        ],
    )
    def test_first_source_wins_and_is_stripped(self, tmp_path: Path, present: tuple[str, ...]) -> None:
        """Sources are tried in order; the first one with a key wins, surrounding whitespace stripped."""
        keys = {name: f"key_{i}" + "ab" * 64 for i, name in enumerate(SOURCES)}
        config, env = self.setup(tmp_path, {name: f"  {keys[name]}\r\n\n" for name in present})
        winner = next(name for name in SOURCES if name in present)
        assert load_api_key(config, env) == keys[winner]

    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            ({"RUNWAYML_API_SECRET": "", "RUNWAY_API_KEY": KEY}, KEY),
            ({"RUNWAYML_API_SECRET": " \n", "credential": KEY}, KEY),
            ({"credential": "\n", "file": KEY + "\n"}, KEY),
        ],
    )
    def test_empty_sources_are_skipped(self, tmp_path: Path, values: dict[str, str], expected: str) -> None:
        """An empty variable or credential counts as absent."""
        config, env = self.setup(tmp_path, values)
        assert load_api_key(config, env) == expected

    def test_none_found_lists_sources_in_order(self, tmp_path: Path) -> None:
        """With no key anywhere, the error lists every source tried, in order, and what was wrong with it."""
        config, env = self.setup(tmp_path, {"RUNWAY_API_KEY": ""})
        with pytest.raises(ConfigError) as info:
            load_api_key(config, env)
        assert info.value.summary == "no Runway API key found; tried, in order:"
        assert [p.path for p in info.value.problems] == [
            "RUNWAYML_API_SECRET",
            "RUNWAY_API_KEY",
            "$CREDENTIALS_DIRECTORY/runway_api_key",
            "runway.api_key_file",
        ]
        assert [p.message.split(":")[0] for p in info.value.problems[:2]] == ["not set", "set but empty"]
        assert "no such file" in str(info.value)

    def test_none_configured(self) -> None:
        """Without a credential folder or api_key_file, the error says how to provide them."""
        with pytest.raises(ConfigError) as info:
            load_api_key(parse(minimal()), {})
        assert "LoadCredential=runway_api_key:FILE" in str(info.value)
        assert "runway.api_key_file: not set in the config" in str(info.value)

    @pytest.mark.parametrize("source", SOURCES)
    def test_whitespace_inside_is_refused_without_showing_it(self, tmp_path: Path, source: str) -> None:
        """A key with whitespace inside (a broken paste) is refused; the error names the source, never the key."""
        config, env = self.setup(tmp_path, {source: f"{KEY[:40]} {KEY[40:]}\n"})
        with pytest.raises(ConfigError) as info:
            load_api_key(config, env)
        assert "whitespace or control characters inside" in str(info.value)
        assert KEY[:20] not in str(info.value) and KEY[40:60] not in str(info.value)

    def test_unreadable_file_is_an_error(self, tmp_path: Path) -> None:
        """A key file that exists but cannot be read is an error, not a silent skip."""
        config, env = self.setup(tmp_path, {})
        (tmp_path / "creds" / "runway_api_key").mkdir()
        with pytest.raises(ConfigError) as info:
            load_api_key(config, env)
        assert info.value.problems[0].path == "$CREDENTIALS_DIRECTORY/runway_api_key"
        assert "cannot read" in info.value.problems[0].message


JUNK: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**70,
    -(2**70),
    0.5,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    "",
    " ",
    "x",
    "\x00",
    "~",
    "~x",
    "/",
    "..",
    "027",
    "s3",
    "promptImage",
    KEY,
    [],
    [1],
    [{}],
    {},
    {"a": 1},
    {1: 2},
    datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    datetime.date(2024, 1, 1),
    datetime.time(1, 2),
    b"bytes",
    object(),
]
KEYS = (
    [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    + ["state.dir", "umask", "runway", "s3", "state", "budget", "scheduler", "inbox", "inbox[0]"]
    + [f"inbox[0].{name}" for name in sorted(inbox_keys())]
)


class TestOnlyConfigError:
    @pytest.mark.parametrize("dotted", KEYS)
    def test_junk_per_key(self, dotted: str) -> None:
        """Any junk value for any key either loads or raises ConfigError: never TypeError, KeyError and the like."""
        for value in JUNK:
            try:
                parse(with_value(dotted, value), {"HOME": "/home/op"})
            except ConfigError as exc:
                assert exc.problems
                assert KEY not in str(exc)

    def test_random_configs(self) -> None:
        """Random mixtures of good and junk values over many keys only ever raise ConfigError."""
        rng = random.Random(20241106)
        good = tomllib.loads(uncomment(EXAMPLE.read_text()))
        for _ in range(400):
            data: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in good.items()}
            data["inbox"] = [dict(i) for i in good["inbox"]]
            for dotted in rng.sample(KEYS, rng.randint(1, 6)):
                try:
                    put(data, dotted, copy.deepcopy(rng.choice(JUNK)))
                except (TypeError, KeyError, IndexError, AttributeError):
                    continue  # an earlier junk value replaced the table this key lives in
            try:
                parse(data)
            except ConfigError as exc:
                assert exc.problems

    @pytest.mark.parametrize("data", [None, 5, "x", [], [{"inbox": []}]])
    def test_top_level_not_a_table(self, data: Any) -> None:
        """Even a top level that is not a table gives a ConfigError."""
        with pytest.raises(ConfigError):
            parse(data)


class TestFindConfigUnreadable:
    def test_a_place_that_cannot_be_looked_at(self, tmp_path: Path) -> None:
        """A config path the system refuses to look at (here a name too long; for a user, a folder it may not
        search) is a config error naming it, not a traceback."""
        with pytest.raises(ConfigError) as info:
            find_config(tmp_path / ("x" * 300))
        assert "cannot be looked at" in str(info.value)


class TestUmaskFromEnvironment:
    def test_used_when_the_config_has_none(self, tmp_path: Path) -> None:
        """$RUNWATCH_UMASK (a container's UMASK) is the umask when the config sets none; the config wins."""
        data: dict[str, Any] = {"inbox": [{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}]}
        assert parse_config(data, "c.toml", env={"RUNWATCH_UMASK": "002"}).umask == 0o002
        assert parse_config(dict(data, umask="077"), "c.toml", env={"RUNWATCH_UMASK": "002"}).umask == 0o077
        assert parse_config(data, "c.toml", env={}).umask == 0o027

    def test_a_bad_one_is_a_config_error(self, tmp_path: Path) -> None:
        """A $RUNWATCH_UMASK that is not an octal umask with owner digit 0 is refused, naming it."""
        data: dict[str, Any] = {"inbox": [{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}]}
        for bad in ("abc", "700", "0999"):
            with pytest.raises(ConfigError, match="RUNWATCH_UMASK"):
                parse_config(data, "c.toml", env={"RUNWATCH_UMASK": bad})


class TestHttp:
    def test_defaults_and_off(self) -> None:
        """The server listens on 127.0.0.1:8765 unless told; "" switches it off; a token file is a path."""
        assert parse(minimal()).http == HttpConfig(listen="127.0.0.1:8765")
        assert not parse(put(minimal(), "http.listen", "")).http.enabled
        config = parse(put(put(minimal(), "http.listen", "[::1]:9000"), "http.token_file", "token"))
        assert (config.http.host, config.http.port, config.http.token_file) == ("::1", 9000, BASE / "token")

    @pytest.mark.parametrize(
        ("key", "value", "expected"),
        [
            ("http.listen", "8765", "HOST:PORT"),
            ("http.listen", "127.0.0.1:99999", "a port from 0 to 65535"),
            ("http.allowed_hosts", "runwatch.example.org", "a list of host names"),
            ("http.allowed_hosts", ["https://x.example.org"], "a list of host names"),
            ("http.token", "s3cret", "RUNWATCH_HTTP_TOKEN"),
        ],
    )
    def test_bad_values_name_the_key(self, key: str, value: Any, expected: str) -> None:
        """Each bad [http] value is a problem naming its key and what is allowed; a token in the file is refused
        with where it goes instead."""
        found = problems_of(put(minimal(), key, value))
        assert [p.path for p in found] == [key] and expected in found[0].message
