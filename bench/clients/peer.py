"""bench/clients/peer.py -- the Python peer: requests + json + base64.

  /usr/bin/python3 peer.py BASE WORKLOAD K N BYTES INPUT VERIFY

The same work as clients/omixa.lua: K requests on one requests.Session
(C8: K batches of 8 from a pool of 8 threads, one Session per thread), the
same JSON body (U: the input image read from its path into a data URL),
each answer decoded to image bytes in memory and checked (with VERIFY, not
"-", every byte against VERIFY-<i>.png).
"""
import base64
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

BASE, WORKLOAD, K, N, BYTES, INPUT = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
VERIFY = None if sys.argv[7] == "-" else sys.argv[7]
URL = BASE + "/images/generations"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def fail(msg):
    sys.stderr.write("python client: %s: %s\n" % (WORKLOAD, msg))
    sys.exit(1)


def body():
    req = {"model": "gemini-2.0-flash-preview-image-generation",
           "prompt": "a lighthouse at dusk, watercolor", "n": N}
    if WORKLOAD == "U":
        with open(INPUT, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        req["input_images"] = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + data}}]
    return json.dumps(req)


def generate(session):
    r = session.post(URL, data=body(), headers=HEADERS, timeout=60)
    if r.status_code != 200:
        fail("HTTP %d" % r.status_code)
    doc = json.loads(r.content)
    return [base64.b64decode(item["b64_json"]) for item in doc["data"]]


def check(images):
    if len(images) != N:
        fail("expected %d images" % N)
    for i, img in enumerate(images):
        if len(img) != BYTES or img[:4] != b"\x89PNG":
            fail("image %d has %d bytes, expected a PNG of %d" % (i + 1, len(img), BYTES))
        if VERIFY:
            with open("%s-%d.png" % (VERIFY, i + 1), "rb") as f:
                if f.read() != img:
                    fail("image %d differs from %s-%d.png" % (i + 1, VERIFY, i + 1))


def main():
    if WORKLOAD == "C8":
        local = threading.local()

        def one(_):
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return generate(local.session)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(K):
                for images in pool.map(one, range(8)):
                    check(images)
        return
    session = requests.Session()
    for _ in range(K):
        check(generate(session))


if __name__ == "__main__":
    main()
