"""Elasticsearch ``_bulk`` end to end: the shippers' bodies against a real ``logsvc serve``."""

from __future__ import annotations

import gzip
import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Service, wait_for
from tests.test_http import http_port
from tests.wire.test_bulk import FILEBEAT, FLUENT_BIT, VECTOR

pytestmark = pytest.mark.slow


class Es:
    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.port = http_port(svc)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                method, path, body=body, headers={"Content-Type": "application/x-ndjson", **(headers or {})}
            )
            resp = conn.getresponse()
            data = resp.read()
            return (
                resp.status,
                {k.lower(): v for k, v in resp.getheaders()},
                json.loads(data) if data else None,
            )
        finally:
            conn.close()

    # The columns these tests read; the query itself is Service.rows.
    COLUMNS = "created, levelname, logger, message, extra"

    def rows(self, where: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return self.svc.rows(self.COLUMNS, where, params)

    def wait_rows(self, n: int, where: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return self.svc.wait_rows(n, self.COLUMNS, where, params)


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory, dsn: str) -> Iterator[Es]:
    schema = "t_" + uuid.uuid4().hex[:16]
    svc = Service(tmp_path_factory.mktemp("bulk"), dsn, schema, "--listen-http", "127.0.0.1:0")
    svc.start()
    try:
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the database connection")
        yield Es(svc)
    finally:
        svc.kill()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_get_root_says_elasticsearch_8(es: Es) -> None:
    status, headers, info = es.request("GET", "/")
    assert status == 200 and headers["x-elastic-product"] == "Elasticsearch"
    assert info["version"]["number"].startswith("8.")


def test_vector_body(es: Es) -> None:
    status, headers, answer = es.request("POST", "/_bulk", VECTOR)
    assert status == 200 and headers["x-elastic-product"] == "Elasticsearch"
    assert answer["errors"] is False and answer["items"][0]["create"]["status"] == 201
    (row,) = es.wait_rows(1, "message = 'hello there'")
    assert row["extra"]["_index"] == "vector" and row["created"].timestamp() == 1606784523.0


def test_fluent_bit_body_gzipped_to_an_index_path(es: Es) -> None:
    body = gzip.compress(FLUENT_BIT.replace(b'"_index":"fluent-bit",', b""))
    status, _, answer = es.request("POST", "/fb-index/_bulk", body, {"Content-Encoding": "gzip"})
    assert status == 200 and answer["errors"] is False
    (row,) = es.wait_rows(1, "extra->>'END_KEY' = 'JSON_END'")
    assert row["extra"]["_index"] == "fb-index" and row["created"].timestamp() == 1448403340.0


def test_filebeat_body(es: Es) -> None:
    status, _, answer = es.request("POST", "/_bulk", FILEBEAT)
    assert status == 200 and answer["errors"] is False
    (row,) = es.wait_rows(1, "message = 'GET /health 200'")
    assert row["levelname"] == "WARNING" and row["extra"]["_index"] == "filebeat-8.11.0"


def test_item_errors_and_a_bad_action_line(es: Es) -> None:
    body = b'{"index":{"_index":"mixed"}}\n{"message":"kept"}\n{"index":{}}\nnot json\n'
    status, _, answer = es.request("POST", "/_bulk", body)
    assert status == 200 and answer["errors"] is True
    assert [i["index"]["status"] for i in answer["items"]] == [201, 400]
    es.wait_rows(1, "message = 'kept'")
    status, _, answer = es.request("POST", "/_bulk", b"not an action\n{}\n")
    assert status == 400 and answer["error"]["type"] == "illegal_argument_exception"


def test_429_with_retry_after_while_the_journal_is_full(tmp_path: Path, schema: str) -> None:
    unreachable = "host=127.0.0.1 port=1 dbname=test user=postgres connect_timeout=1"
    svc = Service(
        tmp_path / "data",
        unreachable,
        schema,
        *(
            "--listen-http",
            "127.0.0.1:0",
            "--journal-segment-bytes",
            "64KiB",
            "--journal-max-bytes",
            "128KiB",
        ),
    ).start()
    try:
        e = Es(svc)
        body = b"".join(b'{"index":{}}\n{"message":"%s"}\n' % (b"x" * 200) for _ in range(200))
        statuses = []
        for _ in range(100):  # bounded: 128 KiB is reached after a few requests
            status, headers, _ = e.request("POST", "/_bulk", body)
            statuses.append(status)
            if status == 429:
                assert headers.get("retry-after") == "1"
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    finally:
        svc.kill()


def test_create_with_an_id_that_exists_is_stored_again_never_409(es: Es) -> None:
    # Elasticsearch answers a create whose _id exists 409 version_conflict_engine_exception.
    # logsvc keeps no ids (records are append-only): every create is stored and answered 201
    # "created", the _id kept in extra._id, so a shipper that retries a batch after a lost
    # answer (at least once) leaves duplicates that extra._id tells apart. 201 is what
    # Filebeat (each item's "status"), Fluent Bit and Vector ("errors", then each item's
    # "status") count as delivered (docs/reliability.md, "Limits, stated").
    tag = uuid.uuid4().hex
    body = (
        b'{"create":{"_index":"app","_id":"dup-1"}}\n{"message":"first %s"}\n'
        b'{"create":{"_index":"app","_id":"dup-1"}}\n{"message":"second %s"}\n'
    ) % (tag.encode(), tag.encode())
    for _ in range(2):  # the same ids in one body, and the whole body sent again
        status, _, answer = es.request("POST", "/_bulk", body)
        assert status == 200 and answer["errors"] is False
        for item in answer["items"]:
            (created,) = item.values()
            assert set(item) == {"create"}
            assert created["status"] == 201 and created["result"] == "created"
            assert created["_id"] == "dup-1" and created["_index"] == "app" and "error" not in created
    rows = es.wait_rows(4, "message LIKE %s", [f"% {tag}"])
    assert sorted(r["message"].split()[0] for r in rows) == ["first", "first", "second", "second"]
    assert {r["extra"]["_id"] for r in rows} == {"dup-1"} and {r["extra"]["_index"] for r in rows} == {"app"}


def test_the_official_elasticsearch_client_bulk_helpers(es: Es) -> None:
    # elasticsearch-py 8 (what Python applications and many pipelines ship with): it checks the
    # product header at its first request, sends Content-Type
    # application/vnd.elasticsearch+x-ndjson; compatible-with=8, and its helpers read the items.
    from elasticsearch import Elasticsearch, helpers

    client = Elasticsearch(f"http://127.0.0.1:{es.port}", request_timeout=30)
    try:
        run = uuid.uuid4().hex
        docs = [
            {
                "_index": "apps-py",
                "_op_type": "create" if n % 2 else "index",
                "@timestamp": f"2026-11-29T10:00:{n:02d}.250Z",
                "message": f"record {n}",
                "log": {"level": "warning" if n == 7 else "info", "logger": "shop.cart"},
                "run": run,
                "n": n,
            }
            for n in range(40)
        ]
        ok, errors = helpers.bulk(client, docs, chunk_size=16)
        assert (ok, errors) == (40, [])
        # streaming_bulk reports each item as it reads the answer: all created, in order.
        more = [{"_index": "apps-py", "message": f"streamed {n}", "run": run, "n": 100 + n} for n in range(5)]
        results = list(helpers.streaming_bulk(client, more, chunk_size=2))
        assert [(good, item["index"]["status"]) for good, item in results] == [(True, 201)] * 5
        rows = es.wait_rows(45, "extra->>'run' = %s", [run])
        by_n = {row["extra"]["n"]: row for row in rows}
        assert sorted(by_n) == [*range(40), *range(100, 105)]
        seven = by_n[7]
        assert (seven["message"], seven["levelname"], seven["logger"]) == ("record 7", "WARNING", "shop.cart")
        assert seven["created"].timestamp() == 1795946407.25
        assert seven["extra"]["_index"] == "apps-py"
        assert by_n[102]["message"] == "streamed 2"
    finally:
        client.close()
