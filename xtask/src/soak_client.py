"""The soak's client: HTTPS calls to the local test API over kept-alive connections, with the
SHA-256 of every response body, so a run with the agent can be compared with one without.

Arguments: host port ca_file requests workers held out_file.
- `held` connections are opened first, each makes one call and then stays open, idle, until the
  workers are half way, when each makes a second call and closes.
- `workers` threads, each on its own kept-alive connection, make `requests` calls between them:
  request i goes to one of a fixed set of endpoints (small and large JSON, a byte pattern of
  varying length, a form POST, a chat completion), chosen by i.
- It prints `ready` once every connection is open, waits for `go` on stdin, prints `progress N`
  every 1,000 calls, `held-open` and `held-closed` around the held connections' second calls,
  and `done CALLS FAILURES` at the end; `out_file` gets one `i status sha256` line per call,
  sorted by i.
"""
import hashlib, http.client, json, resource, ssl, sys, threading

host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
requests, workers, held, out_file = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
ctx = ssl.create_default_context(cafile=ca)


def call(conn, i):
    kind = i % 5
    if kind == 0:
        conn.request("GET", "/v1/customers/cus_%d" % i)
    elif kind == 1:
        conn.request("GET", "/v1/bytes?n=%d" % (100 + (i * 7919) % 40000))
    elif kind == 2:
        body = "amount=%d&currency=usd&source=tok_visa" % (i % 10000)
        conn.request("POST", "/v1/charges", body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    elif kind == 3:
        body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi %d" % i}]})
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Content-Type": "application/json"})
    else:
        conn.request("GET", "/v1/unknown/%d" % i)
    r = conn.getresponse()
    data = r.read()
    return r.status, hashlib.sha256(data).hexdigest()


results = {}
lock = threading.Lock()
state = {"next": 0, "done": 0, "failures": 0}
half = threading.Event()
go = threading.Event()


def worker(conn):
    go.wait()
    while True:
        with lock:
            i = state["next"]
            if i >= requests:
                return
            state["next"] += 1
        try:
            status, digest = call(conn, i)
        except Exception as e:  # a failure is a result too: it must not differ between runs
            status, digest = 0, type(e).__name__
            conn.close()
            conn = http.client.HTTPSConnection(host, port, context=ctx)
            with lock:
                state["failures"] += 1
        with lock:
            results[i] = (status, digest)
            state["done"] += 1
            n = state["done"]
        if n % 1000 == 0:
            print("progress %d" % n, flush=True)
        if n == requests // 2:
            half.set()


held_conns = []
for h in range(held):
    c = http.client.HTTPSConnection(host, port, context=ctx)
    c.connect()
    held_conns.append(c)
conns = []
for _ in range(workers):
    c = http.client.HTTPSConnection(host, port, context=ctx)
    c.connect()
    conns.append(c)
print("ready", flush=True)
sys.stdin.readline()
# Each held connection makes one call, then stays open while the workers run.
for h, c in enumerate(held_conns):
    results[requests + 2 * h] = call(c, requests + 2 * h)
print("held-open %d" % held, flush=True)
threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
for t in threads:
    t.start()
go.set()
half.wait()
for h, c in enumerate(held_conns):
    results[requests + 2 * h + 1] = call(c, requests + 2 * h + 1)
    c.close()
print("held-closed %d" % held, flush=True)
for t in threads:
    t.join()
with open(out_file, "w") as f:
    for i in sorted(results):
        f.write("%d %d %s\n" % (i, results[i][0], results[i][1]))
print("done %d %d" % (len(results), state["failures"]), flush=True)
sys.stdin.readline()
