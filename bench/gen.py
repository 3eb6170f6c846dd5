#!/usr/bin/python3
"""bench/gen.py DIR -- the files the bench serves and sends, written into DIR.

Every image is a valid PNG (RGB, 8 bits, stored deflate blocks) whose pixels
are random bytes, so nothing on the way can compress it. Responses have the
service's shape:
  {"created":..,"data":[{"b64_json":"..."}],"usage":{"billed_amount":"0.040000"}}

  s.json      S:  1 image of ~1.5 MiB
  m4.json     M4: 4 images of ~1.5 MiB (four different images)
  l.json      L:  1 image of ~20 MiB
  tiny.json   U, C8, P and CONN (the connection count): 1 image of ~12 KiB
  input.png   U:  the 8 MiB input image, given to the clients as a file path
  req-*.json  the request bodies curl sends (the other clients build the same)
  NAME-I.png  image I of answer NAME.json, to check the decoded bytes against
  manifest    one line per workload: name, images, bytes per image
"""
import base64
import json
import os
import struct
import sys
import zlib

MODEL = "gemini-2.0-flash-preview-image-generation"
PROMPT = "a lighthouse at dusk, watercolor"


def chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(side):
    """A side x side RGB PNG of random pixels (filter byte 0 on each row)."""
    row = 1 + 3 * side
    raw = bytearray(os.urandom(row * side))
    raw[0::row] = bytes(side)  # filter type 0 for every row
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 0)) + chunk(b"IEND", b""))


def response(images, price):
    data = ",".join('{"b64_json":"%s"}' % base64.b64encode(i).decode() for i in images)
    return ('{"created":1767225600,"data":[%s],"usage":{"billed_amount":"%s"}}'
            % (data, price)).encode()


def request(n, input_png=None):
    body = {"model": MODEL, "prompt": PROMPT, "n": n}
    if input_png is not None:
        url = "data:image/png;base64," + base64.b64encode(input_png).decode()
        body["input_images"] = [{"type": "image_url", "image_url": {"url": url}}]
    return json.dumps(body, separators=(",", ":")).encode()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def main():
    out = sys.argv[1]
    # Sides chosen so the PNG is just over 1.5 MiB, 20 MiB, 8 MiB, 12 KiB.
    s = png(724)
    m4 = [png(724) for _ in range(4)]
    big = png(2644)
    tiny = png(64)
    inp = png(1672)
    write(os.path.join(out, "s.json"), response([s], "0.040000"))
    write(os.path.join(out, "m4.json"), response(m4, "0.160000"))
    write(os.path.join(out, "l.json"), response([big], "0.040000"))
    write(os.path.join(out, "tiny.json"), response([tiny], "0.040000"))
    write(os.path.join(out, "input.png"), inp)
    # The expected images, byte for byte, for the clients' checked first run.
    for name, imgs in (("s", [s]), ("m4", m4), ("l", [big]), ("tiny", [tiny])):
        for i, img in enumerate(imgs):
            write(os.path.join(out, "%s-%d.png" % (name, i + 1)), img)
    write(os.path.join(out, "req-1.json"), request(1))
    write(os.path.join(out, "req-4.json"), request(4))
    write(os.path.join(out, "req-u.json"), request(1, inp))
    with open(os.path.join(out, "manifest"), "w") as f:
        for name, n, size in (("S", 1, len(s)), ("M4", 4, len(m4[0])), ("L", 1, len(big)),
                              ("U", 1, len(tiny)), ("C8", 1, len(tiny)), ("P", 1, len(tiny)), ("CONN", 1, len(tiny)),
                              ("input", 1, len(inp))):
            f.write("%s %d %d\n" % (name, n, size))


if __name__ == "__main__":
    main()
