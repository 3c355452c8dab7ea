#!/usr/bin/env python3
"""Echo bot for the telephony bridge, in Python.

The bridge opens one WebSocket per phone call to this server (the bridge is
the client). The bot:

* echoes every ``media`` chunk straight back as ``response.audio.delta``,
  so the caller hears themselves;
* answers every ``dtmf`` key press with ``session.dtmf`` carrying the same
  digit (played back to the phone);
* after ``#``, also sends ``session.hangup``;
* prints ``start`` / ``stop`` / ``error`` and other events;
* on ``stop``, sends nothing more and closes the socket.

Requires only the ``websockets`` package (version 13 or later, for the
``websockets.asyncio`` API)::

    pip install websockets
    python3 examples/python/echo_bot.py --host 127.0.0.1 --port 9000

Then point a call's ``wss_url`` at ``ws://127.0.0.1:9000/`` (see
``examples/README.md``). The wire protocol is ``protocol/PROTOCOL.md``.
"""

import argparse
import asyncio
import json

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


def redact(value):
    """Keep the first four characters of a secret (nothing if it is short)."""
    return value[:4] + "…" if len(value) > 8 else "…"


def log(peer, call_sid, text):
    print(f"[{peer}] [call {call_sid or '-'}] {text}", flush=True)


async def send_json(connection, message):
    await connection.send(json.dumps(message, separators=(",", ":")))


async def handler(connection):
    peer = "%s:%s" % connection.remote_address[:2]

    # Show which headers arrived (names only; Authorization redacted), so a
    # user can check that the call's wss_header got through.
    headers = connection.request.headers
    auth = headers.get("Authorization")
    log(peer, None,
        f"opened {connection.request.path} headers: {', '.join(headers.keys())}"
        f"; authorization: {redact(auth) if auth is not None else '(none)'}")

    call_sid = None
    media_echoed = 0
    try:
        async for message in connection:
            if isinstance(message, bytes):
                continue  # the bridge sends JSON text frames only
            try:
                event = json.loads(message)
            except ValueError:
                log(peer, call_sid, f"unparsable event: {message[:80]!r}")
                continue

            kind = event.get("event")
            if kind == "media":
                # The payload is base64 of LE PCM16; echo the same bytes back
                # without decoding them.
                await send_json(connection, {
                    "type": "response.audio.delta",
                    "delta": event["media"]["payload"],
                })
                media_echoed += 1
            elif kind == "connected":
                log(peer, call_sid, "connected")
            elif kind == "start":
                start = event["start"]
                call_sid = start.get("call_sid")
                log(peer, call_sid,
                    f"start stream_sid={event.get('stream_sid')} "
                    f"from={start.get('from')} to={start.get('to')} "
                    f"format={start.get('media_format')}")
            elif kind == "dtmf":
                digit = event["dtmf"]["digit"]
                log(peer, call_sid,
                    f"dtmf {digit} ({event['dtmf'].get('duration')} ms)")
                await send_json(connection,
                                {"type": "session.dtmf", "dtmf": digit})
                if digit == "#":
                    log(peer, call_sid, "'#' pressed: hanging up")
                    await send_json(connection, {"type": "session.hangup"})
            elif kind == "stop":
                stop = event.get("stop", {})
                log(peer, stop.get("call_sid", call_sid),
                    f"stop reason={stop.get('reason')} "
                    f"media_echoed={media_echoed}")
                await connection.close()
                return
            elif kind == "error":
                err = event.get("error", {})
                log(peer, call_sid,
                    f"error from bridge: {err.get('code')}: "
                    f"{err.get('message')}")
            else:
                # mark, clear, transfer_failed, or something newer.
                log(peer, call_sid, f"{kind}: {message}")
    except ConnectionClosed as e:
        log(peer, call_sid, f"connection lost: {e}")
        return
    log(peer, call_sid,
        f"closed without stop (media_echoed={media_echoed})")


async def main():
    parser = argparse.ArgumentParser(
        description="Echo bot for the telephony bridge (WebSocket server)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000,
                        help="port to listen on (default 9000)")
    args = parser.parse_args()

    # max_size matches the bridge's largest message (1 MiB); the library
    # answers the bridge's pings by itself.
    async with serve(handler, args.host, args.port, max_size=1 << 20) as server:
        print(f"echo bot listening on ws://{args.host}:{args.port}/",
              flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
