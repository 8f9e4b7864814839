/* An HTTPS client on libcurl (built by the end-to-end tests against libcurl-gnutls), one
 * kept-alive connection. Usage: curl_client BASE_URL CA_FILE */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t discard(char *p, size_t size, size_t n, void *u) {
    (void)p, (void)u;
    return size * n;
}

static long call(CURL *h, const char *base, const char *path, const char *body,
                 struct curl_slist *headers) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (curl_easy_perform(h) != CURLE_OK) return -1;
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_CAINFO, argv[2]);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    if (call(h, argv[1], "/v1/customers/cus_warmup", NULL, NULL) != 200) return 2;
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 3;
    struct curl_slist *idem = curl_slist_append(NULL, "Idempotency-Key: c-1");
    long a = call(h, argv[1], "/v1/charges?delay_ms=120", "amount=100&source=tok_visa", idem);
    long b = call(h, argv[1], "/v1/charges", "amount=100&source=tok_chargeDeclined", NULL);
    long d = call(h, argv[1], "/v1/missing", NULL, NULL);
    printf("%ld %ld %ld\ndone\n", a, b, d);
    fflush(stdout);
    /* The connection stays open until told: see http_driver.h's hold(). */
    if (!fgets(line, sizeof line, stdin)) line[0] = 0;
    curl_slist_free_all(idem);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    return a == 200 && b == 402 && d == 404 ? 0 : 1;
}
