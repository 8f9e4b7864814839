/* The probe-cost benchmark's GnuTLS program: a client and a server session in one process,
 * joined by memory buffers (push/pull functions, no sockets, no syscalls). After the handshake
 * it prints `ready`, then for each number N read on stdin it times N pairs of a 1 KiB
 * gnutls_record_send on the client and gnutls_record_recv on the server, and prints the
 * nanoseconds per call.
 *
 * Usage: gnutls_bench CERT_PEM KEY_PEM
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One direction's bytes in flight. */
struct pipe {
    unsigned char buf[1 << 20];
    size_t start, end;
};

struct end {
    struct pipe *in, *out;
};

static ssize_t push(gnutls_transport_ptr_t p, const void *data, size_t len) {
    struct end *e = p;
    struct pipe *o = e->out;
    if (o->start == o->end)
        o->start = o->end = 0;
    if (len > sizeof o->buf - o->end) {
        errno = ENOSPC;
        return -1;
    }
    memcpy(o->buf + o->end, data, len);
    o->end += len;
    return (ssize_t)len;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *data, size_t len) {
    struct end *e = p;
    struct pipe *i = e->in;
    size_t n = i->end - i->start;
    if (n == 0) {
        /* GnuTLS reads the system errno of a pull function by default. */
        errno = EAGAIN;
        return -1;
    }
    if (n > len)
        n = len;
    memcpy(data, i->buf + i->start, n);
    i->start += n;
    return (ssize_t)n;
}

static void check(int rc, const char *what) {
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", what, gnutls_strerror(rc));
        exit(1);
    }
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: gnutls_bench CERT_PEM KEY_PEM\n");
        return 2;
    }
    static struct pipe c2s, s2c;
    struct end client_end = {&s2c, &c2s}, server_end = {&c2s, &s2c};
    check(gnutls_global_init(), "init");
    gnutls_certificate_credentials_t scred, ccred;
    check(gnutls_certificate_allocate_credentials(&scred), "server credentials");
    check(gnutls_certificate_set_x509_key_file(scred, argv[1], argv[2], GNUTLS_X509_FMT_PEM),
          "server key");
    check(gnutls_certificate_allocate_credentials(&ccred), "client credentials");

    gnutls_session_t c, s;
    check(gnutls_init(&c, GNUTLS_CLIENT | GNUTLS_NONBLOCK), "client");
    check(gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK), "server");
    check(gnutls_set_default_priority(c), "client priority");
    check(gnutls_set_default_priority(s), "server priority");
    check(gnutls_credentials_set(c, GNUTLS_CRD_CERTIFICATE, ccred), "client credentials");
    check(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, scred), "server credentials");
    /* The benchmark measures record calls, not certificate checks: the client verifies
     * nothing (no gnutls_session_set_verify_cert). */
    gnutls_transport_set_ptr(c, &client_end);
    gnutls_transport_set_ptr(s, &server_end);
    gnutls_transport_set_push_function(c, push);
    gnutls_transport_set_push_function(s, push);
    gnutls_transport_set_pull_function(c, pull);
    gnutls_transport_set_pull_function(s, pull);

    int cdone = 0, sdone = 0;
    for (int round = 0; !(cdone && sdone); round++) {
        if (round > 1000) {
            fprintf(stderr, "handshake did not finish\n");
            return 1;
        }
        if (!cdone) {
            int rc = gnutls_handshake(c);
            if (rc == 0)
                cdone = 1;
            else if (gnutls_error_is_fatal(rc))
                check(rc, "client handshake");
        }
        if (!sdone) {
            int rc = gnutls_handshake(s);
            if (rc == 0)
                sdone = 1;
            else if (gnutls_error_is_fatal(rc))
                check(rc, "server handshake");
        }
    }
    /* TLS 1.3 session tickets arrive after the handshake: let the client take them. */
    char scratch[2048];
    while (gnutls_record_recv(c, scratch, sizeof scratch) > 0) {
    }

    char payload[1024];
    memset(payload, 'x', sizeof payload);
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        long n = atol(line);
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            if (gnutls_record_send(c, payload, sizeof payload) != (ssize_t)sizeof payload) {
                fprintf(stderr, "send failed\n");
                return 1;
            }
            if (gnutls_record_recv(s, scratch, sizeof payload) != (ssize_t)sizeof payload) {
                fprintf(stderr, "recv failed\n");
                return 1;
            }
        }
        printf("%.1f\n", (now_ns() - t0) / (2.0 * (double)n));
        fflush(stdout);
    }
    return 0;
}
