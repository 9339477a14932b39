"""Plugin artifacts: request validation, records, fetching into the cache, the registry actor."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.blobserver import BlobServer, serve_blobs
from volant.actors import Actor, ActorRef
from volant.errors import NotFoundError, UnprocessableError, ValidationError
from volant.media import MediaCache
from volant.orchestrator.artifactrecord import (
    ArtifactRecord,
    FetchLimits,
    fetch_into_cache,
    parse_artifact_request,
)
from volant.orchestrator.artifacts import (
    ARTIFACTS_CODEC,
    ArtifactRegistry,
    DeleteArtifacts,
    DropPlugin,
    GetArtifact,
    ListArtifacts,
    UpsertArtifact,
    Upserted,
    artifacts_path,
)
from volant.orchestrator.events import EventBus
from volant.orchestrator.plugins import Get, ListPlugins
from volant.store import StateStore

BLOB = b"artifact bytes\n" * 100
DIGEST = hashlib.sha256(BLOB).hexdigest()
OTHER = b"other bytes\n"
OTHER_DIGEST = hashlib.sha256(OTHER).hexdigest()


# -- request validation -----------------------------------------------------------------------
def test_minimal_request_is_metadata_only() -> None:
    request = parse_artifact_request({"version": "1.0.0", "artifact_name": "kernel"})
    assert request.source == "" and request.checksum == "" and request.size_bytes == 0


def test_checksum_is_normalised_and_local_path_needs_none() -> None:
    request = parse_artifact_request({
        "version": "v1.2+b.3", "artifact_name": "root_fs.img", "source_url": "https://h/x",
        "checksum": DIGEST.upper(), "kind": "rootfs", "format": "application/x-raw",
        "size_bytes": 5})
    assert request.checksum == f"sha256:{DIGEST}"
    assert request.expected_sha256 == DIGEST
    local = parse_artifact_request({"version": "1", "artifact_name": "a",
                                    "local_path": "/srv/a.img", "size_bytes": None})
    assert local.source == "/srv/a.img" and local.checksum == "" and local.size_bytes == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"artifact_name": "a"}, "version"),
    ({"version": "1"}, "artifact_name"),
    ({"version": "", "artifact_name": "a"}, "version"),
    ({"version": 1, "artifact_name": "a"}, "version"),
    ({"version": "1", "artifact_name": "../etc"}, "artifact_name"),
    ({"version": "1", "artifact_name": "a b"}, "artifact_name"),
    ({"version": "1", "artifact_name": "a" * 129}, "artifact_name"),
    ({"version": "1", "artifact_name": "a", "kind": "two words"}, "kind"),
    ({"version": "1", "artifact_name": "a", "extra": 1}, "extra"),
    ({"version": "1", "artifact_name": "a", "checksum": "md5:abc"}, "checksum"),
    ({"version": "1", "artifact_name": "a", "checksum": "sha256:" + "g" * 64}, "checksum"),
    ({"version": "1", "artifact_name": "a", "size_bytes": -1}, "size_bytes"),
    ({"version": "1", "artifact_name": "a", "size_bytes": True}, "size_bytes"),
    ({"version": "1", "artifact_name": "a", "size_bytes": "5"}, "size_bytes"),
    ({"version": "1", "artifact_name": "a", "source_url": "ftp://h/x", "checksum": DIGEST},
     "source_url"),
    ({"version": "1", "artifact_name": "a", "source_url": "/no/scheme", "checksum": DIGEST},
     "source_url"),
    ({"version": "1", "artifact_name": "a", "source_url": "file://host/x", "checksum": DIGEST},
     "source_url"),
    ({"version": "1", "artifact_name": "a", "source_url": "http:///x", "checksum": DIGEST},
     "source_url"),
    ({"version": "1", "artifact_name": "a", "source_url": "http://h/x"}, "checksum"),
    ({"version": "1", "artifact_name": "a", "local_path": "rel/x"}, "local_path"),
    ({"version": "1", "artifact_name": "a", "local_path": "/x",
      "source_url": "http://h/x", "checksum": DIGEST}, "local_path"),
])
def test_bad_requests_are_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_artifact_request(body)
    assert type(caught.value) is ValidationError and caught.value.status == 400
    assert caught.value.details["field"] == field


def test_non_object_body_and_size_over_the_limit() -> None:
    with pytest.raises(ValidationError):
        parse_artifact_request(["version"])
    with pytest.raises(UnprocessableError) as caught:
        parse_artifact_request({"version": "1", "artifact_name": "a", "size_bytes": 11},
                               max_bytes=10)
    assert caught.value.status == 422


def test_record_round_trips_through_its_document() -> None:
    request = parse_artifact_request({"version": "1", "artifact_name": "a",
                                      "local_path": "/x", "kind": "kernel"})
    record = ArtifactRecord.from_request(request, id=7, plugin="demo", created_at="t0",
                                         now="t1")
    assert record.status == "fetching"
    done = attrs.evolve(record, status="failed", error="boom", error_status=502)
    assert ArtifactRecord.from_doc(done.to_doc()) == done
    body = done.to_json()
    assert body["plugin_name"] == "demo" and body["error"] == "boom"
    assert "error_status" not in body and "PluginName" not in body
    with pytest.raises(ValueError):
        ArtifactRecord.from_doc({**done.to_doc(), "status": "weird"})


# -- fetching ---------------------------------------------------------------------------------
def cache_files(media: MediaCache) -> list[str]:
    return sorted(p.name for p in media.root.iterdir())


async def test_fetch_from_a_file_url_verifies_and_caches(tmp_path: Path) -> None:
    source = tmp_path / "blob.bin"
    source.write_bytes(BLOB)
    media = MediaCache(tmp_path / "media")
    outcome = await fetch_into_cache(media, f"file://{source}", f"sha256:{DIGEST}", name="a",
                                     declared_size=len(BLOB))
    assert outcome.ok and outcome.sha256 == DIGEST and outcome.size_bytes == len(BLOB)
    assert outcome.cached_path is not None
    assert hashlib.sha256(Path(outcome.cached_path).read_bytes()).hexdigest() == DIGEST


async def test_fetch_failures_leave_nothing_in_the_cache(tmp_path: Path) -> None:
    source = tmp_path / "blob.bin"
    source.write_bytes(BLOB)
    media = MediaCache(tmp_path / "media")
    mismatch = await fetch_into_cache(media, str(source), f"sha256:{OTHER_DIGEST}", name="a")
    assert mismatch.error_status == 422 and "checksum mismatch" in (mismatch.error or "")
    too_big = await fetch_into_cache(media, str(source), "", name="a",
                                     limits=FetchLimits(max_bytes=len(BLOB) - 1))
    assert too_big.error_status == 422 and "larger than the limit" in (too_big.error or "")
    missing = await fetch_into_cache(media, str(tmp_path / "nope"), "", name="a")
    assert missing.error_status == 422 and "does not exist" in (missing.error or "")
    assert cache_files(media) == []
    wrong_size = await fetch_into_cache(media, str(source), "", name="a", declared_size=3)
    assert wrong_size.error_status == 422 and "size mismatch" in (wrong_size.error or "")


async def test_fetch_over_http_with_limits_and_errors(tmp_path: Path) -> None:
    media = MediaCache(tmp_path / "media")
    with serve_blobs({"/blob": BLOB, "/slow": OTHER}, slow={"/slow"}) as server:
        ok = await fetch_into_cache(media, f"{server.url}/blob", DIGEST, name="a")
        assert ok.ok and ok.sha256 == DIGEST
        # Cached by checksum: a second fetch does not touch the source again.
        again = await fetch_into_cache(media, f"{server.url}/blob", DIGEST, name="a")
        assert again.ok and server.hits["/blob"] == 1
        absent = await fetch_into_cache(media, f"{server.url}/absent", OTHER_DIGEST, name="a")
        assert absent.error_status == 502 and "404" in (absent.error or "")
        big = await fetch_into_cache(media, f"{server.url}/blob", OTHER_DIGEST, name="a",
                                     limits=FetchLimits(max_bytes=10))
        assert big.error_status == 422 and "limit" in (big.error or "")
        slow = await fetch_into_cache(media, f"{server.url}/slow", OTHER_DIGEST, name="a",
                                      limits=FetchLimits(deadline=0.3))
        assert slow.error_status == 504 and "did not finish" in (slow.error or "")
    assert cache_files(media) == [DIGEST]


# -- the registry actor -----------------------------------------------------------------------
@attrs.frozen
class FakePlugin:
    name: str


class FakePlugins(Actor[Any]):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    async def handle(self, msg: Any) -> Any:
        match msg:
            case Get(name):
                if name not in self.names:
                    raise NotFoundError(f"plugin {name} not found", plugin=name)
                return FakePlugin(name)
            case ListPlugins():
                return [FakePlugin(n) for n in sorted(self.names)]
        raise TypeError(msg)


@attrs.define
class Env:
    tmp_path: Path
    store: StateStore
    bus: EventBus
    media: MediaCache
    plugins: FakePlugins
    nursery: trio.Nursery
    source: Path

    async def start(self, limits: FetchLimits = FetchLimits()) -> ArtifactRegistry:
        registry = ArtifactRegistry(self.store, self.bus, self.media, self.plugins.ref, limits)
        await self.nursery.start(registry.run)
        return registry

    def file_body(self, name: str = "blob", version: str = "1.0", **extra: Any
                  ) -> dict[str, Any]:
        return {"version": version, "artifact_name": name,
                "source_url": f"file://{self.source}", "checksum": f"sha256:{DIGEST}",
                **extra}

    def on_disk(self, plugin: str = "demo") -> list[dict[str, Any]] | None:
        doc = self.store.read(artifacts_path(plugin), ARTIFACTS_CODEC)
        return None if doc is None else list(doc["artifacts"])


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = StateStore(tmp_path / "state")
    bus = EventBus(tmp_path / "state" / "events")
    plugins = FakePlugins({"demo", "other"})
    source = tmp_path / "blob.bin"
    source.write_bytes(BLOB)
    async with trio.open_nursery() as nursery:
        for actor in (bus, plugins):
            await nursery.start(actor.run)
        yield Env(tmp_path, store, bus, MediaCache(tmp_path / "state" / "cache" / "media"),
                  plugins, nursery, source)
        nursery.cancel_scope.cancel()


async def upsert_and_settle(registry: ArtifactRegistry, plugin: str,
                            body: dict[str, Any]) -> ArtifactRecord:
    result: Upserted = await registry.ref.call(UpsertArtifact(plugin, body))
    with trio.fail_after(10):
        await result.settled.wait()
    record: ArtifactRecord = await registry.ref.call(
        GetArtifact(plugin, body["artifact_name"], body["version"]))
    return record


async def test_upsert_fetches_persists_and_survives_a_restart(env: Env) -> None:
    registry = await env.start()
    result: Upserted = await registry.ref.call(UpsertArtifact("demo", env.file_body()))
    assert result.record.status == "fetching" and result.record.id == 1
    with trio.fail_after(10):
        await result.settled.wait()
    ready = await registry.ref.call(GetArtifact("demo", "blob", "1.0"))
    assert ready.status == "ready" and ready.sha256 == DIGEST
    assert ready.size_bytes == len(BLOB)
    assert Path(ready.cached_path).read_bytes() == BLOB
    assert [d["status"] for d in env.on_disk() or []] == ["ready"]

    # Replacing keeps the id and created_at; a second artifact gets the next id.
    replaced = await upsert_and_settle(registry, "demo", env.file_body(kind="disk"))
    assert (replaced.id, replaced.created_at, replaced.kind) == (1, ready.created_at, "disk")
    second = await upsert_and_settle(registry, "demo", env.file_body("b", "2.0"))
    assert second.id == 2

    registry.request_stop()
    again = await env.start()
    listed = await again.ref.call(ListArtifacts("demo"))
    assert [(r.version, r.artifact_name, r.status) for r in listed] == [
        ("1.0", "blob", "ready"), ("2.0", "b", "ready")]
    third = await upsert_and_settle(again, "demo", env.file_body("c"))
    assert third.id == 3


async def test_bad_input_and_unknown_plugin_change_nothing(env: Env) -> None:
    registry = await env.start()
    with pytest.raises(NotFoundError):
        await registry.ref.call(UpsertArtifact("ghost", env.file_body()))
    with pytest.raises(ValidationError):
        await registry.ref.call(UpsertArtifact("demo", env.file_body(checksum="nope")))
    with pytest.raises(UnprocessableError):
        await registry.ref.call(UpsertArtifact("demo", {
            "version": "1", "artifact_name": "a", "local_path": str(env.tmp_path / "nope")}))
    assert env.on_disk() is None and env.on_disk("ghost") is None
    for msg in (ListArtifacts("ghost"), GetArtifact("ghost", "a", "1"),
                DeleteArtifacts("ghost"), GetArtifact("demo", "blob", "1.0")):
        with pytest.raises(NotFoundError):
            await registry.ref.call(msg)


async def test_mismatch_fails_the_record_and_a_repost_retries(env: Env) -> None:
    registry = await env.start()
    failed = await upsert_and_settle(registry, "demo",
                                     env.file_body(checksum=f"sha256:{OTHER_DIGEST}"))
    assert failed.status == "failed" and failed.error_status == 422
    assert "checksum mismatch" in (failed.error or "") and failed.cached_path is None
    fixed = await upsert_and_settle(registry, "demo", env.file_body())
    assert fixed.status == "ready" and fixed.error is None


async def test_local_path_without_checksum_records_the_digest(env: Env) -> None:
    registry = await env.start()
    record = await upsert_and_settle(registry, "demo", {
        "version": "1", "artifact_name": "local", "local_path": str(env.source)})
    assert record.status == "ready" and record.sha256 == DIGEST and record.checksum == ""
    meta = await upsert_and_settle(registry, "demo", {"version": "1", "artifact_name": "meta"})
    assert meta.status == "registered" and meta.cached_path is None


async def test_delete_by_version_by_name_and_drop_plugin(env: Env) -> None:
    registry = await env.start()
    for name, version in (("a", "1"), ("b", "1"), ("a", "2")):
        await upsert_and_settle(registry, "demo", {"version": version, "artifact_name": name})
    await upsert_and_settle(registry, "other", {"version": "1", "artifact_name": "x"})
    assert await registry.ref.call(DeleteArtifacts("demo", "1")) == 2
    assert [r.key for r in await registry.ref.call(ListArtifacts("demo"))] == [("2", "a")]
    with pytest.raises(NotFoundError):
        await registry.ref.call(DeleteArtifacts("demo", "1", "a"))
    assert await registry.ref.call(DeleteArtifacts("demo", "2", "a")) == 1
    assert env.on_disk() is None  # the plugin's file goes with its last record
    assert await registry.ref.call(DropPlugin("other")) == 1
    assert env.on_disk("other") is None


async def test_start_resumes_fetches_and_drops_orphans(env: Env) -> None:
    request = parse_artifact_request(env.file_body())
    interrupted = ArtifactRecord.from_request(request, id=4, plugin="demo", created_at="t",
                                              now="t")
    env.store.write(artifacts_path("demo"), ARTIFACTS_CODEC,
                    {"plugin": "demo", "artifacts": [interrupted.to_doc()]})
    env.store.write(artifacts_path("gone"), ARTIFACTS_CODEC,
                    {"plugin": "gone", "artifacts": [attrs.evolve(
                        interrupted, plugin_name="gone").to_doc()]})
    registry = await env.start()
    assert env.on_disk("gone") is None
    with trio.fail_after(10):
        while (await registry.ref.call(GetArtifact("demo", "blob", "1.0"))).status != "ready":
            await trio.sleep(0.01)
    assert (env.on_disk() or [{}])[0]["status"] == "ready"
    # A ready record whose cache file vanished is fetched again at the next start.
    registry.request_stop()
    env.media.path_for(DIGEST).unlink()
    again = await env.start()
    with trio.fail_after(10):
        while (await again.ref.call(GetArtifact("demo", "blob", "1.0"))).status != "ready":
            await trio.sleep(0.01)
    assert env.media.path_for(DIGEST).read_bytes() == BLOB
    assert (await again.ref.call(ListArtifacts("demo")))[0].id == 4


async def start_slow_fetch(registry: ActorRef[Any], server: BlobServer, version: str,
                           name: str) -> Upserted:
    """Upsert an artifact served from ``/slow`` and return once its fetch has begun."""
    upserted: Upserted = await registry.call(UpsertArtifact("demo", {
        "version": version, "artifact_name": name, "source_url": f"{server.url}/slow",
        "checksum": OTHER_DIGEST}))
    with trio.fail_after(5):
        while not server.hits["/slow"]:
            await trio.sleep(0.01)
    return upserted


async def test_a_newer_upsert_wins_over_a_fetch_in_flight(env: Env) -> None:
    registry = await env.start()
    with serve_blobs({"/slow": OTHER}, slow={"/slow"}) as server:
        first = await start_slow_fetch(registry.ref, server, "1.0", "blob")
        second: Upserted = await registry.ref.call(UpsertArtifact("demo", env.file_body()))
        assert second.settled is first.settled  # earlier waiters wait for the newest fetch
        with trio.fail_after(10):
            await second.settled.wait()
    record = await registry.ref.call(GetArtifact("demo", "blob", "1.0"))
    assert record.status == "ready" and record.sha256 == DIGEST
    assert not any(p.name.startswith(".fetch-") for p in env.media.root.iterdir())


async def test_delete_cancels_a_fetch_and_wakes_its_waiters(env: Env) -> None:
    registry = await env.start()
    with serve_blobs({"/slow": OTHER}, slow={"/slow"}) as server:
        pending = await start_slow_fetch(registry.ref, server, "1", "s")
        assert await registry.ref.call(DeleteArtifacts("demo", "1")) == 1
        with trio.fail_after(5):
            await pending.settled.wait()
    assert await registry.ref.call(ListArtifacts("demo")) == []
    assert env.on_disk() is None
