"""A JSON format per listener: ``--listen-json HOST:PORT=FORMAT`` and ``--listen-http HOST:PORT=FORMAT``."""

from __future__ import annotations

import argparse
import re
import socket
import urllib.request
from pathlib import Path

import psycopg
import pytest

from logsvc import config
from logsvc.config import JsonListen
from logsvc.errors import ConfigError
from tests.helpers import Service, wait_for


def parse(argv: list[str], env: dict[str, str] | None = None) -> config.Settings:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.resolve(parser.parse_args(argv), env or {})


def test_a_listener_names_its_format_after_an_equals_sign_from_flags() -> None:
    s = parse(
        [
            *("--listen-json", "127.0.0.1:5170=pino", "--listen-json", "127.0.0.1:5171"),
            *("--listen-json", "[::1]:5172=ECS", "--listen-http", "127.0.0.1:8080=structlog"),
            *("--json-format", "bunyan"),
        ]
    )
    assert s.listen_json == [
        JsonListen("127.0.0.1", 5170, "pino"),
        JsonListen("127.0.0.1", 5171),  # reads as --json-format says
        JsonListen("::1", 5172, "ecs"),
    ]
    assert s.listen_http == [JsonListen("127.0.0.1", 8080, "structlog")]
    assert s.json_format == "bunyan"


def test_from_the_environment() -> None:
    s = parse([], {"LOGSVC_LISTEN_JSON": "127.0.0.1:1=gelf,:2", "LOGSVC_LISTEN_HTTP": "127.0.0.1:3=plain"})
    assert s.listen_json == [JsonListen("127.0.0.1", 1, "gelf"), JsonListen("0.0.0.0", 2)]
    assert s.listen_http == [JsonListen("127.0.0.1", 3, "plain")]


def test_from_the_toml_file_as_a_list_or_one_string(tmp_path: Path) -> None:
    cfg = tmp_path / "logsvc.toml"
    cfg.write_text(
        '[serve]\njson_format = "pino"\n'
        'listen_json = ["127.0.0.1:5170=loguru", "127.0.0.1:5171"]\n'
        'listen-http = "127.0.0.1:8080=auto"\n'
    )
    s = parse(["--config", str(cfg)])
    assert s.listen_json == [JsonListen("127.0.0.1", 5170, "loguru"), JsonListen("127.0.0.1", 5171)]
    assert s.listen_http == [JsonListen("127.0.0.1", 8080, "auto")]
    assert s.json_format == "pino"


@pytest.mark.parametrize(
    ("argv", "env", "toml", "message"),
    [
        (
            ["--listen-json", "127.0.0.1:5170=pinot"],
            {},
            "",
            r"--listen-json: .*'pinot' must be one of: auto, plain",
        ),
        (["--listen-http", "127.0.0.1:80="], {}, "", r"--listen-http: .*give a JSON format after '='"),
        (["--listen-json", "127.0.0.1=pino"], {}, "", r"--listen-json: .*must be HOST:PORT"),
        ([], {"LOGSVC_LISTEN_JSON": "127.0.0.1:1=json"}, "", r"LOGSVC_LISTEN_JSON: .*'json' must be one of"),
        ([], {}, 'listen_http = ["127.0.0.1:1=xml"]', r"logsvc.toml: listen_http: .*'xml' must be one of"),
    ],
)
def test_an_unknown_format_is_a_clear_config_error(
    tmp_path: Path, argv: list[str], env: dict[str, str], toml: str, message: str
) -> None:
    if toml:
        cfg = tmp_path / "logsvc.toml"
        cfg.write_text(toml + "\n")
        argv = [*argv, "--config", str(cfg)]
    with pytest.raises(ConfigError, match=message):
        parse(argv, env)


@pytest.mark.slow
def test_two_listeners_read_the_same_pino_line_differently(tmp_path: Path, dsn: str, schema: str) -> None:
    # pino's 30 without its epoch-ms time: auto reads a stdlib 30 (WARNING), a listener named
    # pino reads pino's info; on both JSON transports, one line sent to each listener in turn.
    svc = Service(
        tmp_path / "data",
        dsn,
        schema,
        *("--listen-json", "127.0.0.1:0=pino", "--listen-json", "127.0.0.1:0"),
        *("--listen-http", "127.0.0.1:0=pino", "--listen-http", "127.0.0.1:0"),
    ).start()
    try:
        log = svc.log()
        json_pino = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(JSON lines; JSON read as pino\)", log)
        json_auto = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(JSON lines\)", log)
        http_pino = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: POST [^)]*; JSON read as pino\)", log)
        http_auto = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: POST [^;)]*\)", log)
        assert json_pino and json_auto and http_pino and http_auto, log
        line = b'{"level":30,"msg":"the same line"}\n'

        def levels() -> list[tuple[int, str]]:
            with psycopg.connect(dsn) as conn:
                if conn.execute("SELECT to_regclass(%s)", [f"{schema}.records"]).fetchone() == (None,):
                    return []
                got = conn.execute(f"SELECT message, levelno, levelname FROM {schema}.records ORDER BY seq")
                return [(n, name) for message, n, name in got.fetchall() if message == "the same line"]

        for i, port in enumerate((json_pino, json_auto)):
            with socket.create_connection(("127.0.0.1", int(port.group(1))), timeout=10) as sock:
                sock.sendall(line)
            wait_for(lambda: len(levels()) == i + 1, 30, f"row {i + 1}")  # noqa: B023
        for port in (http_pino, http_auto):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port.group(1)}/ingest",
                data=line,
                headers={"Content-Type": "application/x-ndjson"},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=10) as resp:  # answered once in the journal
                assert resp.status == 200
        wait_for(lambda: len(levels()) == 4, 30, "four rows")
        assert levels() == [(20, "INFO"), (30, "WARNING"), (20, "INFO"), (30, "WARNING")]
    finally:
        svc.stop()
