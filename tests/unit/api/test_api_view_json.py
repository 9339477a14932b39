"""The per-view JSON cache behind GET /api/v1/vms: bytes follow the published view."""

from __future__ import annotations

import json

from api_unit_support import MakeApp

from volant.api.vms import ViewJsonCache


async def test_cached_bytes_follow_the_published_view(make_app: MakeApp) -> None:
    app = make_app()
    cache = ViewJsonCache()
    async with app.app_context():
        running = {"name": "a", "status": "running", "ip_address": "10.0.0.2"}
        first = cache.encode(running)
        assert json.loads(first) == running
        assert cache.encode(running) is first  # same published dict: no new encoding
        stopped = {**running, "status": "stopped"}  # a change publishes a new dict
        assert json.loads(cache.encode(stopped))["status"] == "stopped"
        cache.encode({"name": "b", "status": "running"})
        assert len(cache) == 2
        cache.prune({"b"})
        assert len(cache) == 1
        assert json.loads(cache.encode(stopped)) == stopped  # re-encoded after pruning


async def test_list_bytes_match_jsonify(make_app: MakeApp) -> None:
    """Clients see the same document as before the cache (sorted keys, one newline)."""
    from quart import jsonify

    from volant.api.vms import _json_body

    app = make_app()
    cache = ViewJsonCache()
    views = [{"name": "b", "z": 1, "a": [1, 2]}, {"name": "a", "memory_mb": 512}]
    async with app.app_context():
        ours = await _json_body([cache.encode(v) for v in views]).get_data()
        reference = await jsonify(views).get_data()
    assert ours == reference
