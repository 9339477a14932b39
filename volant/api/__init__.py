"""The HTTP/SSE/websocket API of volantd (quart-trio served by hypercorn)."""
