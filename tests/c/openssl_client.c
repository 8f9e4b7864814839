/* An HTTPS client on OpenSSL's SSL_write/SSL_read, built by the end-to-end tests against the
 * static libssl.a (stripped and not). Usage: openssl_client PORT CA_FILE */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    SSL *ssl;
};
static int tls_write(struct conn *c, const char *buf, int len, int variant) {
    (void)variant;
    return SSL_write(c->ssl, buf, len);
}
static int tls_read(struct conn *c, char *buf, int cap, int variant) {
    (void)variant;
    return SSL_read(c->ssl, buf, cap);
}
#include "http_driver.h"

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    http_port = atoi(argv[1]);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1) return 2;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return 2;
    struct conn c = {SSL_new(ctx)};
    SSL_set_fd(c.ssl, fd);
    SSL_set_tlsext_host_name(c.ssl, "localhost");
    SSL_set1_host(c.ssl, "localhost");
    if (SSL_connect(c.ssl) != 1) {
        ERR_print_errors_fp(stderr);
        return 2;
    }
    if (exchange(&c, "GET", "/v1/customers/cus_warmup", "", NULL, 0) != 200) return 2;
    wait_for_go();
    int rc = run_calls(&c, &c);
    SSL_shutdown(c.ssl);
    SSL_free(c.ssl);
    close(fd);
    SSL_CTX_free(ctx);
    return rc;
}
