/* The HTTP side of the small TLS clients the end-to-end tests build with gcc: HTTP/1.1
 * requests on one kept-alive TLS connection, responses read up to their Content-Length.
 * A client defines `struct conn`, `tls_write` and `tls_read` for its TLS library, then includes
 * this file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct conn;
static int tls_write(struct conn *c, const char *buf, int len, int variant);
static int tls_read(struct conn *c, char *buf, int cap, int variant);

/* The server's port, named in the Host header as a browser or curl would: set by the client. */
static int http_port;

/* Sends one request and reads its response; returns the status (or -1). `variant` lets the
 * client alternate between its library's write/read functions. */
static int exchange(struct conn *c, const char *method, const char *path, const char *headers,
                    const char *body, int variant) {
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: localhost:%d\r\nUser-Agent: taskless-test-client\r\n"
                     "Connection: keep-alive\r\n%sContent-Length: %zu\r\n\r\n%s",
                     method, path, http_port, headers, body ? strlen(body) : 0, body ? body : "");
    for (int off = 0; off < n;) {
        int w = tls_write(c, req + off, n - off, variant);
        if (w <= 0) return -1;
        off += w;
    }
    static char resp[1 << 16];
    int got = 0, head = -1;
    long length = -1;
    while (got < (int)sizeof resp - 1) {
        int r = tls_read(c, resp + got, (int)sizeof resp - 1 - got, variant);
        if (r <= 0) return -1;
        got += r;
        resp[got] = 0;
        if (head < 0) {
            char *end = strstr(resp, "\r\n\r\n");
            if (!end) continue;
            head = (int)(end - resp) + 4;
            char *cl = strcasestr(resp, "\r\ncontent-length:");
            if (!cl || cl > end) return -1;
            length = strtol(cl + 17, NULL, 10);
        }
        if (head >= 0 && got >= head + length) break;
    }
    int status = -1;
    if (sscanf(resp, "HTTP/1.1 %d", &status) != 1) return -1;
    return status;
}

/* Says `done` and keeps the connections open until a line (or the end) of stdin: an agent reads
 * a connection's addresses from /proc when it first sees it, which a client that has exited
 * would no longer have. */
static void hold(void) {
    printf("done\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return;
}

/* The calls every client makes once released (a line on stdin). */
static int run_calls(struct conn *ok_conn, struct conn *conn) {
    const char *form = "Content-Type: application/x-www-form-urlencoded\r\n";
    char headers[256];
    snprintf(headers, sizeof headers, "%sIdempotency-Key: c-1\r\n", form);
    int a = exchange(ok_conn, "POST", "/v1/charges?delay_ms=120", headers,
                     "amount=100&source=tok_visa", 0);
    int b = exchange(conn, "POST", "/v1/charges", form, "amount=100&source=tok_chargeDeclined", 1);
    int d = exchange(conn, "GET", "/v1/missing", "", NULL, 0);
    printf("%d %d %d\n", a, b, d);
    hold();
    return a == 200 && b == 402 && d == 404 ? 0 : 1;
}

static void wait_for_go(void) {
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) exit(3);
}
