#!/usr/bin/env python3
"""Writes hand-made seed inputs (valid messages of each kind) into
fuzz/corpus/<target>/seed-*, so fuzzing starts from real shapes. Run from
the fuzz directory; `cargo fuzz cmin` then keeps what adds coverage."""
import base64
import json
import os
import struct


def put(target, name, data):
    d = f"corpus/{target}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/seed-{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def frame(binary, ticks, payload, dtmf=False, backlog=False):
    """bot_message's framing: [head][len][bytes], head = binary|dtmf|backlog|ticks."""
    head = (0x80 if binary else 0) | (0x40 if dtmf else 0) | (0x08 if backlog else 0) | (ticks & 7)
    out = b""
    while payload:
        chunk, payload = payload[:255], payload[255:]
        out += bytes([head, len(chunk)]) + chunk
    return out


delta = json.dumps(
    {"type": "response.audio.delta", "delta": base64.b64encode(b"\x01\x02" * 80).decode()},
    separators=(",", ":"),
).encode()
msgs = [
    delta,
    b'{"type":"mark","mark":{"name":"m1"}}',
    b'{"type":"audio.clear"}',
    b'{"type":"session.dtmf","digits":"12#"}',
    b'{"type":"session.hangup"}',
    b'{"type":"session.transfer","destination":"+15551234567"}',
    b'{"type":"session.transfer","destination":["+15551234567","101"],"mode":"warm","timeout":20}',
    b'{"type":"session.transfer_ws","url":"wss://example.com/b"}',
    b'{"type":"session.flow_transfer","flow_id":"menu"}',
    b'{"type":"session.transfer_extension","extension":"101"}',
]
put("bot_message", "all", b"".join(frame(False, 2, m) for m in msgs))
put("bot_message", "binary", frame(True, 3, b"\x00\x10" * 100) + frame(False, 1, msgs[1]))
for i, m in enumerate(msgs):
    put("bot_message", f"m{i}", frame(False, 1, m, dtmf=i % 2 == 0))

sdp = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
invite = (
    "INVITE sip:+15550001000@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"
    "From: <sip:+15557654321@127.0.0.1>;tag=1\r\nTo: <sip:+15550001000@127.0.0.1>\r\n"
    "Call-ID: abc@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:5070>\r\n"
    "Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
    f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
)
register = (
    "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-2\r\n"
    "From: <sip:101@127.0.0.1>;tag=2\r\nTo: <sip:101@127.0.0.1>\r\nCall-ID: reg@127.0.0.1\r\n"
    "CSeq: 2 REGISTER\r\nContact: <sip:101@127.0.0.1:5070>\r\nExpires: 3600\r\n"
    'Authorization: Digest username="101", realm="bridge", nonce="abc", uri="sip:127.0.0.1", '
    'response="0123456789abcdef0123456789abcdef", algorithm=MD5\r\nContent-Length: 0\r\n\r\n'
)
put("sip_message", "invite", invite)
put("sip_message", "register", register)
put(
    "sip_message",
    "response",
    "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n"
    "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n\r\n",
)
put("sdp", "offer", sdp)
put("sdp", "hold", sdp.replace("sendrecv", "sendonly"))
put("sdp", "ip6", sdp.replace("IN IP4 127.0.0.1", "IN IP6 ::1"))


def rtp(seq, ts, pt, payload, marker=0):
    return struct.pack("!BBHII", 0x80, (marker << 7) | pt, seq, ts, 0xDEADBEEF) + payload


def dgram(flags, pkt):
    return bytes([flags, len(pkt)]) + pkt


pkts = b"".join(dgram(1, rtp(i, 160 * i, 0, b"\xff" * 160)) for i in range(10))
pkts += dgram(1, rtp(10, 1600, 101, bytes([5, 0x0A, 0, 160]), 1))
pkts += dgram(2, rtp(11, 1600, 101, bytes([5, 0x8A, 1, 64])))
pkts += dgram(0, bytes([0x81, 200, 0, 6]) + b"\0" * 24)
pkts += dgram(0x81, rtp(12, 1920, 0, b"\x7f" * 160))
put("rtp_stream", "call", pkts)


def wav(rate, channels, samples):
    data = struct.pack(f"<{len(samples)}h", *samples)
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", len(data)) + data


put("wav", "8k", wav(8000, 1, list(range(-100, 100))))
put("wav", "48k-stereo", wav(48000, 2, [1000, -1000] * 200))
put("wav", "16k", wav(16000, 1, [0, 3000, 0, -3000] * 50))

body = {
    "customer_no": "+99910001",
    "wss_url": "wss://bot.example.com/x",
    "wss_header": "Authorization: Bearer x",
    "connect_ws_after_answer": "0",
    "schedule_datetime": "2099-01-01 10:00:00",
    "timezone": "Asia/Kolkata",
    "system_msg": "hi",
}
put("rest_body", "json", b"\x00" + json.dumps(body).encode())
put("rest_body", "form", b"\x01customer_no=%2B99910001&wss_url=ws%3A%2F%2F127.0.0.1%3A9%2F&connect_ws_after_answer=1")
with open("../bridge/config.example.toml", "rb") as f:
    put("config", "example", f.read())
