"""Settings from flags, environment and TOML, and the CLI's handling of bad ones."""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import zoneinfo
from pathlib import Path

import pytest

from logsvc import config
from logsvc.errors import ConfigError


def parse(argv: list[str], env: dict[str, str] | None = None) -> config.Settings:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.resolve(parser.parse_args(argv), env or {})


def test_defaults_listen_on_loopback_only() -> None:
    s = parse([])
    assert s.listen == [("127.0.0.1", 5000)]
    assert s.dsn is None and s.fsync == "interval" and s.batch_max_age == 0.2


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    cfg = tmp_path / "logsvc.toml"
    cfg.write_text(
        '[serve]\nbatch_max_age = "1s"\nschema = "from_file"\nfsync = "never"\nlisten = ["[::1]:7000"]\n'
    )
    s = parse(["--config", str(cfg), "--batch-max-age", "50ms"], {"LOGSVC_SCHEMA": "from_env"})
    assert s.batch_max_age == pytest.approx(0.05)
    assert s.schema == "from_env"
    assert s.fsync == "never"
    assert s.listen == [("::1", 7000)]


def test_repeatable_listen_from_flags_and_env() -> None:
    assert parse(["--listen", "127.0.0.1:1", "--listen", "0.0.0.0:2"]).listen == [
        ("127.0.0.1", 1),
        ("0.0.0.0", 2),
    ]
    assert parse([], {"LOGSVC_LISTEN": "127.0.0.1:3,[::1]:4"}).listen == [("127.0.0.1", 3), ("::1", 4)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "nonsense"], "must be HOST:PORT"),
        (["--listen", "127.0.0.1:99999"], "port must be"),
        (["--fsync", "sometimes"], "must be one of"),
        (["--batch-max-age", "soon"], "not a duration"),
        (["--journal-max-bytes", "lots"], "not a size"),
        (["--journal-max-bytes", "1MiB", "--journal-segment-bytes", "1MiB"], "at least twice"),
        (["--batch-max-records", "0"], "must be positive"),
    ],
)
def test_bad_settings_say_what_is_wrong(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(argv)


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("bach_max_age = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        parse(["--config", str(cfg)])


def test_sizes_and_durations() -> None:
    assert config.parse_size("64MiB") == 64 << 20
    assert config.parse_size("1g") == 1 << 30
    assert config.parse_size("4096") == 4096
    assert config.parse_duration("200ms") == pytest.approx(0.2)
    assert config.parse_duration("2m") == 120.0


def test_cli_reports_a_bad_setting_in_one_line_with_status_2(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "logsvc", "serve", "--fsync", "sometimes", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == "logsvc: --fsync: fsync policy 'sometimes' must be one of: always, interval, never"
    )


def test_cli_help_lists_every_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "logsvc", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for opt in config.OPTIONS:
        assert "--" + opt.name.replace("_", "-") in out.stdout


def test_trace_id_is_indexed_by_default_and_an_empty_value_turns_it_off() -> None:
    assert parse([]).index_extra == ["trace_id"]
    assert parse(["--index-extra="]).index_extra == [""]
    assert parse([], {"LOGSVC_INDEX_EXTRA": ""}).index_extra == []
    assert parse(["--index-extra", "user", "--index-extra", "tenant"]).index_extra == ["user", "tenant"]
    with pytest.raises(ConfigError, match="index-extra"):
        parse(["--index-extra", "a-b"])


def test_assume_timezone_defaults_to_utc_and_takes_iana_names_from_flag_env_and_file(tmp_path: Path) -> None:
    assert parse([]).assume_timezone is datetime.UTC
    assert parse(["--assume-timezone", "UTC"]).assume_timezone is datetime.UTC
    assert parse(["--assume-timezone", "Europe/Berlin"]).assume_timezone == zoneinfo.ZoneInfo("Europe/Berlin")
    assert parse([], {"LOGSVC_ASSUME_TIMEZONE": "America/New_York"}).assume_timezone == zoneinfo.ZoneInfo(
        "America/New_York"
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text('[serve]\nassume_timezone = "Asia/Tokyo"\n')
    assert parse(["--config", str(cfg)]).assume_timezone == zoneinfo.ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize(
    "name", ["Mars/Olympus_Mons", "utc", "America", "", "../etc/passwd", "/etc/localtime"]
)
def test_an_unknown_time_zone_is_a_clear_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=r"--assume-timezone: .* is not a time zone this system knows"):
        parse(["--assume-timezone", name])
