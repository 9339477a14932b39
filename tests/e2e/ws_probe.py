"""Open a websocket, optionally send text, and wait for a frame containing a substring.

Run inside the test's network namespace (volantd's TCP listener lives there):
    ip netns exec NS python tests/e2e/ws_probe.py URL --expect TEXT [--send TEXT] [--timeout S]
Exit 0 when found (the matching frames are printed), 1 on timeout or close.
"""

from __future__ import annotations

import argparse
import sys

import trio
from trio_websocket import ConnectionClosed, open_websocket_url


async def probe(url: str, expect: str, send: str | None, trigger: str | None,
                timeout: float) -> bool:
    seen = ""
    with trio.move_on_after(timeout):
        async with open_websocket_url(url) as ws:
            if send is not None:
                await ws.send_message(send.encode())
            if trigger:
                import httpx  # a request whose effect the stream should show

                async with httpx.AsyncClient(timeout=30) as client:
                    await client.post(trigger, json={"name": "probe"})
            try:
                while True:
                    message = await ws.get_message()
                    text = message.decode(errors="replace") if isinstance(
                        message, bytes) else message
                    seen += text
                    if expect in seen:
                        print(seen[-2000:])
                        return True
            except ConnectionClosed as exc:
                print(f"closed: {exc.reason}", file=sys.stderr)
    print(seen[-2000:], file=sys.stderr)
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--expect", required=True)
    parser.add_argument("--send")
    parser.add_argument("--trigger", help="POST this URL once connected")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    found = trio.run(probe, args.url, args.expect, args.send, args.trigger, args.timeout)
    sys.exit(0 if found else 1)


if __name__ == "__main__":
    main()
