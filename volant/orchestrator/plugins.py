"""The PluginRegistry actor: installed manifests and their enabled flag.

Upstream kept two copies (database and an in-memory map) that drifted apart:
disabling or deleting a plugin only took effect after a restart. Here the actor
is the single owner of ``plugins/<name>.json`` and of the in-memory view, and
every change is persisted before it is acknowledged, so it takes effect at once.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from volant.actors import Actor
from volant.errors import ConflictError, NotFoundError, ValidationError
from volant.manifest import Manifest, manifest_to_dict, parse_manifest
from volant.orchestrator.events import EventBus, utc_now
from volant.store import SnapshotCodec, StateStore

PLUGIN_CODEC = SnapshotCodec("plugin", 1)


@attrs.frozen
class InstalledPlugin:
    manifest: Manifest
    enabled: bool
    installed_at: str
    updated_at: str

    @property
    def name(self) -> str:
        return self.manifest.name

    def manifest_json(self) -> dict[str, Any]:
        body = manifest_to_dict(self.manifest)
        body["enabled"] = self.enabled
        return body

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.manifest.version, "enabled": self.enabled,
                "runtime": self.manifest.runtime}


# Messages ---------------------------------------------------------------------------
@attrs.frozen
class Install:
    body: Any


@attrs.frozen
class Get:
    name: str


@attrs.frozen
class ListPlugins:
    pass


@attrs.frozen
class SetEnabled:
    name: str
    enabled: Any


@attrs.frozen
class Remove:
    name: str


@attrs.frozen
class Resolve:
    """Return the manifest for a VM create: 404 when unknown, 409 when disabled."""

    name: str


PluginMsg = Install | Get | ListPlugins | SetEnabled | Remove | Resolve


class PluginRegistry(Actor[PluginMsg]):
    mailbox_size = 256

    def __init__(self, store: StateStore, events: EventBus) -> None:
        self.store = store
        self.events = events
        self.plugins: dict[str, InstalledPlugin] = {}

    async def on_start(self) -> None:
        result = await trio.to_thread.run_sync(
            self.store.load_all, "plugins", "*.json", PLUGIN_CODEC
        )
        for item in result.quarantined:
            self.events.publish("SNAPSHOT_QUARANTINED", item.relpath, message=item.reason)
        for relpath, doc in result.documents.items():
            try:
                manifest = parse_manifest(doc["manifest"])
                plugin = InstalledPlugin(manifest, bool(doc.get("enabled", True)),
                                         str(doc.get("installed_at", "")),
                                         str(doc.get("updated_at", "")))
            except (KeyError, TypeError, ValidationError) as exc:
                reason = exc.message if isinstance(exc, ValidationError) else repr(exc)
                await trio.to_thread.run_sync(self.store.quarantine, relpath, reason)
                self.events.publish("SNAPSHOT_QUARANTINED", relpath, message=reason)
                continue
            self.plugins[plugin.name] = plugin

    async def handle(self, msg: PluginMsg) -> Any:
        match msg:
            case Install(body):
                return await self._install(body)
            case Get(name):
                return self._get(name)
            case ListPlugins():
                return [self.plugins[name] for name in sorted(self.plugins)]
            case SetEnabled(name, enabled):
                return await self._set_enabled(name, enabled)
            case Remove(name):
                plugin = self._get(name)
                await trio.to_thread.run_sync(self.store.delete, f"plugins/{name}.json")
                del self.plugins[name]
                self.events.publish("PLUGIN_DELETED", name)
                return plugin
            case Resolve(name):
                plugin = self._get(name)
                if not plugin.enabled:
                    raise ConflictError(f"plugin {name} disabled", plugin=name)
                return plugin.manifest
        raise TypeError(f"unknown message {msg!r}")

    def _get(self, name: str) -> InstalledPlugin:
        plugin = self.plugins.get(name)
        if plugin is None:
            raise NotFoundError(f"plugin {name} not found", plugin=name)
        return plugin

    async def _persist(self, plugin: InstalledPlugin) -> None:
        doc = {
            "enabled": plugin.enabled,
            "installed_at": plugin.installed_at,
            "updated_at": plugin.updated_at,
            "manifest": manifest_to_dict(plugin.manifest),
        }
        await trio.to_thread.run_sync(
            self.store.write, f"plugins/{plugin.name}.json", PLUGIN_CODEC, doc
        )

    async def _install(self, body: Any) -> InstalledPlugin:
        manifest = parse_manifest(body)
        # Upstream enabled the plugin in its database but registered it disabled in
        # memory unless the body said "enabled": true. Installed means enabled,
        # unless the body explicitly says false.
        enabled = not (isinstance(body, dict) and body.get("enabled") is False)
        now = utc_now()
        previous = self.plugins.get(manifest.name)
        plugin = InstalledPlugin(manifest, enabled,
                                 previous.installed_at if previous else now, now)
        await self._persist(plugin)
        self.plugins[plugin.name] = plugin
        self.events.publish("PLUGIN_INSTALLED", plugin.name, message=manifest.version)
        return plugin

    async def _set_enabled(self, name: str, enabled: Any) -> InstalledPlugin:
        if not isinstance(enabled, bool):
            raise ValidationError("enabled: expected a boolean", field="enabled")
        plugin = attrs.evolve(self._get(name), enabled=enabled, updated_at=utc_now())
        await self._persist(plugin)
        self.plugins[name] = plugin
        self.events.publish("PLUGIN_ENABLED" if enabled else "PLUGIN_DISABLED", name)
        return plugin
