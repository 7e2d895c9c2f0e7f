"""What the SDK checks share: the server's addresses (from the environment run.sh sets),
a first-frame PNG made without third-party packages, and an MP4 check."""
import os
import struct
import urllib.request
import ssl
import zlib

KEY = os.environ["KILN_TEST_KEY"]
HTTP = os.environ["KILN_HTTP"]          # 127.0.0.1:port, plain HTTP (every dialect)
HTTPS = os.environ["KILN_HTTPS"]        # 127.0.0.1:port, TLS (fal's queue host)
FAL_RUN = os.environ["KILN_FAL_RUN"]    # 127.0.0.1:port, TLS (fal's run host)
WORK = os.environ["KILN_SDK_WORK"]


def first_frame_png() -> str:
    """A 112x64 frame: grey background, a red square left of centre. Returns its path."""
    w, h = 112, 64
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            inside = 30 <= x < 50 and 22 <= y < 42
            row += bytes((220, 30, 30) if inside else (128, 128, 128))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    path = os.path.join(WORK, "first.png")
    with open(path, "wb") as f:
        f.write(png)
    return path


def fetch(url: str) -> bytes:
    context = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))
    with urllib.request.urlopen(url, context=context, timeout=60) as r:
        return r.read()


def check_mp4(url: str, what: str) -> None:
    data = fetch(url)
    assert data[4:8] == b"ftyp", f"{what}: {url} is not an MP4 ({len(data)} bytes)"
    print(f"ok  {what}: {len(data)} bytes of MP4 from {url}")
