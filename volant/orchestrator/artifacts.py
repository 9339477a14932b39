"""The ArtifactRegistry actor: plugin artifact records, fetched and verified.

It owns ``artifacts/<plugin>.json`` (every record of one plugin) and the in-memory
view. Records belong to an installed plugin: every route answers 404 for an unknown
plugin (asked of the PluginRegistry), a plugin's removal drops its records
(``DropPlugin``), and records of plugins that vanished while volantd was down are
dropped at start.

An upsert is persisted (status ``fetching``) and answered at once; the fetch runs
as a helper task of this actor (see ``artifactrecord.fetch_into_cache``), so the
mailbox stays free and a slow source never delays other requests. The reply carries
a ``trio.Event`` set when the record settles (``ready``/``failed``, or deleted), which
is how ``POST ...?wait=ready`` waits without polling. A newer upsert or a delete
cancels the fetch in flight. Records still ``fetching`` at start (volantd stopped
mid-transfer), and ``ready`` ones whose cache file disappeared, are fetched again.

Every change of a plugin's records goes through ``_commit`` under one lock: the file
is written first, memory updated after, so a refused write (507) changes nothing and
the file's writes never overtake each other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from volant.actors import Actor, ActorRef
from volant.errors import NotFoundError, UnprocessableError, VolantError
from volant.logging import get_logger
from volant.media import MediaCache
from volant.orchestrator.artifactrecord import (
    ArtifactRecord,
    FetchLimits,
    FetchOutcome,
    fetch_into_cache,
    parse_artifact_request,
)
from volant.orchestrator.events import EventBus, utc_now
from volant.orchestrator.plugins import Get, ListPlugins
from volant.store import SnapshotCodec, StateStore

log = get_logger("volant.artifacts")

ARTIFACTS_CODEC = SnapshotCodec("plugin-artifacts", 1)
ARTIFACTS_DIR = "artifacts"
PLUGIN_CALL_TIMEOUT = 10.0

Key = tuple[str, str]           # (version, artifact_name) within one plugin
FetchKey = tuple[str, str, str]  # (plugin, version, artifact_name)
Records = dict[Key, ArtifactRecord]


def artifacts_path(plugin: str) -> str:
    return f"{ARTIFACTS_DIR}/{plugin}.json"


# Messages ---------------------------------------------------------------------------
@attrs.frozen
class ListArtifacts:
    plugin: str
    version: str | None = None


@attrs.frozen
class GetArtifact:
    plugin: str
    artifact_name: str
    version: str


@attrs.frozen
class UpsertArtifact:
    plugin: str
    body: Any


@attrs.frozen
class DeleteArtifacts:
    """Delete a plugin's records: all, one version's, or one artifact (404 if absent)."""

    plugin: str
    version: str | None = None
    artifact_name: str | None = None


@attrs.frozen
class DropPlugin:
    """The plugin was removed: forget its records (no plugin check)."""

    plugin: str


ArtifactMsg = ListArtifacts | GetArtifact | UpsertArtifact | DeleteArtifacts | DropPlugin


@attrs.frozen
class Upserted:
    """The reply to an upsert: the record as accepted and when it settles."""

    record: ArtifactRecord
    settled: trio.Event


class ArtifactRegistry(Actor[ArtifactMsg]):
    mailbox_size = 256

    def __init__(self, store: StateStore, events: EventBus, media: MediaCache,
                 plugins: ActorRef[Any], limits: FetchLimits = FetchLimits()) -> None:
        self.store = store
        self.events = events
        self.media = media
        self.plugins = plugins
        self.limits = limits
        self.records: dict[str, Records] = {}
        self._fetches: dict[FetchKey, trio.CancelScope] = {}
        self._settled: dict[FetchKey, trio.Event] = {}
        self._lock = trio.Lock()
        self._next_id = 1

    # -- start ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        result = await trio.to_thread.run_sync(
            self.store.load_all, ARTIFACTS_DIR, "*.json", ARTIFACTS_CODEC)
        for item in result.quarantined:
            self.events.publish("SNAPSHOT_QUARANTINED", item.relpath, message=item.reason)
        installed = {p.name for p in await self.plugins.call(ListPlugins(),
                                                             timeout=PLUGIN_CALL_TIMEOUT)}
        for relpath, doc in result.documents.items():
            plugin = Path(relpath).stem
            if plugin not in installed:  # removed while its records were being dropped
                await trio.to_thread.run_sync(self.store.delete, relpath)
                continue
            try:
                loaded = [ArtifactRecord.from_doc(item) for item in doc["artifacts"]]
            except (KeyError, TypeError, ValueError) as exc:
                await trio.to_thread.run_sync(self.store.quarantine, relpath, repr(exc))
                self.events.publish("SNAPSHOT_QUARANTINED", relpath, message=repr(exc))
                continue
            self.records[plugin] = {r.key: r for r in loaded}
        ids = [r.id for records in self.records.values() for r in records.values()]
        self._next_id = max(ids, default=0) + 1
        for plugin, by_key in list(self.records.items()):
            for record in list(by_key.values()):
                if await self._needs_fetch(record):
                    await self._refetch(plugin, record)

    async def _needs_fetch(self, record: ArtifactRecord) -> bool:
        if record.status == "fetching":
            return True
        if record.status == "ready" and record.cached_path and record.source:
            return not await trio.to_thread.run_sync(Path(record.cached_path).is_file)
        return False

    # -- messages ------------------------------------------------------------------------
    async def handle(self, msg: ArtifactMsg) -> Any:
        match msg:
            case ListArtifacts(plugin, version):
                await self._require_plugin(plugin)
                records = self.records.get(plugin, {}).values()
                return sorted((r for r in records if version is None or r.version == version),
                              key=lambda r: r.key)
            case GetArtifact(plugin, name, version):
                await self._require_plugin(plugin)
                return self._get(plugin, version, name)
            case UpsertArtifact(plugin, body):
                return await self._upsert(plugin, body)
            case DeleteArtifacts(plugin, version, name):
                await self._require_plugin(plugin)
                if name is not None:
                    self._get(plugin, version or "", name)
                return await self._delete(plugin, lambda r: (
                    (version is None or r.version == version)
                    and (name is None or r.artifact_name == name)))
            case DropPlugin(plugin):
                return await self._delete(plugin, lambda _r: True)
        raise TypeError(f"unknown message {msg!r}")

    async def _require_plugin(self, plugin: str) -> None:
        await self.plugins.call(Get(plugin), timeout=PLUGIN_CALL_TIMEOUT)  # 404 when unknown

    def _get(self, plugin: str, version: str, name: str) -> ArtifactRecord:
        record = self.records.get(plugin, {}).get((version, name))
        if record is None:
            raise NotFoundError(f"artifact {name} version {version} of plugin {plugin} "
                                "not found", plugin=plugin, artifact=name, version=version)
        return record

    async def _upsert(self, plugin: str, body: Any) -> Upserted:
        request = parse_artifact_request(body, self.limits.max_bytes)
        await self._require_plugin(plugin)
        if request.local_path and not await trio.to_thread.run_sync(
                Path(request.local_path).is_file):
            raise UnprocessableError(f"local_path: {request.local_path} is not a file",
                                     field="local_path")
        key: Key = (request.version, request.artifact_name)
        async with self._lock:
            previous = self.records.get(plugin, {}).get(key)
            now = utc_now()
            record = ArtifactRecord.from_request(
                request, id=previous.id if previous else self._next_id, plugin=plugin,
                created_at=previous.created_at if previous else now, now=now)
            await self._commit(plugin, lambda records: {**records, key: record})
            if previous is None:
                self._next_id += 1
            # Under the lock: a superseded fetch that just finished must not write its
            # result over this record.
            self._cancel_fetch((plugin, *key))
            if record.status == "fetching":
                settled = self._launch(plugin, record)
            else:
                settled = self._settle((plugin, *key)) or trio.Event()
                settled.set()
        return Upserted(record, settled)

    async def _delete(self, plugin: str, match: Callable[[ArtifactRecord], bool]) -> int:
        async with self._lock:
            doomed = [r for r in self.records.get(plugin, {}).values() if match(r)]
            if doomed:
                await self._commit(plugin, lambda records: {
                    k: r for k, r in records.items() if not match(r)})
            for record in doomed:
                self._cancel_fetch((plugin, *record.key))
        for record in doomed:
            self._settle((plugin, *record.key))
            self.events.publish("ARTIFACT_DELETED", plugin,
                                message=f"{record.artifact_name}@{record.version}")
        return len(doomed)

    # -- persistence ---------------------------------------------------------------------
    async def _commit(self, plugin: str, change: Callable[[Records], Records]) -> None:
        """Apply ``change`` to the plugin's records: write the file, then memory.

        Callers hold ``self._lock``, so the read-modify-write is never interleaved.
        """
        updated = change(dict(self.records.get(plugin, {})))
        relpath = artifacts_path(plugin)
        if updated:
            doc = {"plugin": plugin,
                   "artifacts": [r.to_doc() for _k, r in sorted(updated.items())]}
            await trio.to_thread.run_sync(self.store.write, relpath, ARTIFACTS_CODEC, doc)
            self.records[plugin] = updated
        else:
            await trio.to_thread.run_sync(self.store.delete, relpath)
            self.records.pop(plugin, None)

    # -- fetching ------------------------------------------------------------------------
    async def _refetch(self, plugin: str, record: ArtifactRecord) -> None:
        """At start: fetch again what was interrupted or whose cache file is gone."""
        async with self._lock:
            fetching = attrs.evolve(record, status="fetching", error=None, error_status=0,
                                    sha256=None, cached_path=None, updated_at=utc_now())
            if fetching != record:
                await self._commit(plugin, lambda records: {**records, record.key: fetching})
            self._launch(plugin, fetching)

    def _launch(self, plugin: str, record: ArtifactRecord) -> trio.Event:
        """Start the fetch of ``record`` (caller holds the lock); returns its settle event."""
        key: FetchKey = (plugin, *record.key)
        scope = trio.CancelScope()
        self._fetches[key] = scope
        self.nursery.start_soon(self._fetch, plugin, record, scope)
        return self._settled.setdefault(key, trio.Event())

    def _cancel_fetch(self, key: FetchKey) -> None:
        scope = self._fetches.pop(key, None)
        if scope is not None:
            scope.cancel()

    def _settle(self, key: FetchKey) -> trio.Event | None:
        """Wake whoever waits for ``key``; returns the event (already set) if there was one."""
        event = self._settled.pop(key, None)
        if event is not None:
            event.set()
        return event

    async def _fetch(self, plugin: str, record: ArtifactRecord, scope: trio.CancelScope) -> None:
        with scope:
            try:
                outcome = await fetch_into_cache(
                    self.media, record.source, record.checksum, name=record.artifact_name,
                    declared_size=record.size_bytes, limits=self.limits)
            except Exception as exc:  # a bug here must not crash-loop the registry
                log.error("artifact fetch failed unexpectedly", plugin=plugin,
                          artifact=record.artifact_name, exc_info=exc)
                outcome = FetchOutcome(error=f"artifact {record.artifact_name}: internal "
                                             f"error while fetching ({type(exc).__name__})",
                                       error_status=500)
        if scope.cancelled_caught:
            return  # superseded or deleted: whoever cancelled owns the record now
        await self._finish(plugin, record, scope, outcome)

    async def _finish(self, plugin: str, record: ArtifactRecord, scope: trio.CancelScope,
                      outcome: FetchOutcome) -> None:
        key: FetchKey = (plugin, *record.key)
        async with self._lock:
            current = self.records.get(plugin, {}).get(record.key)
            if self._fetches.get(key) is not scope or current is None:
                return
            del self._fetches[key]
            if outcome.ok:
                done = attrs.evolve(current, status="ready", error=None, error_status=0,
                                    sha256=outcome.sha256, cached_path=outcome.cached_path,
                                    size_bytes=outcome.size_bytes, updated_at=utc_now())
            else:
                done = attrs.evolve(current, status="failed", error=outcome.error,
                                    error_status=outcome.error_status, sha256=None,
                                    cached_path=None, updated_at=utc_now())
            try:
                await self._commit(plugin, lambda records: {**records, record.key: done})
            except VolantError as exc:
                # Kept in memory; the file still says "fetching", so the next start
                # fetches again rather than trusting a result it could not record.
                log.warning("artifact state not persisted", plugin=plugin,
                            artifact=record.artifact_name, error=exc.message)
                self.records.setdefault(plugin, {})[record.key] = done
        self._settle(key)
        label = f"{record.artifact_name}@{record.version}"
        if outcome.ok:
            self.events.publish("ARTIFACT_READY", plugin, message=label)
        else:
            self.events.publish("ARTIFACT_FAILED", plugin, message=f"{label}: {outcome.error}")
