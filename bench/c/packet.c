/* In-memory IPv4+UDP packets, the C limit for csock.packet's parse and build rows.
 *
 *   packet parse N   parse N 92-byte packets (20 IPv4 + 8 UDP + 64 payload): every header
 *                    field read, the IPv4 header checksum verified
 *   packet build N   build N such packets from addresses and ports, both checksums computed
 *                    (IPv4 header; UDP with the pseudo-header)
 *
 * Prints {"elapsed": seconds, "count": n}; a wrong checksum exits 1. */
#include "common.h"

#define PAYLOAD 64
#define TOTAL (20 + 8 + PAYLOAD)

static void build(uint8_t *p, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                  const uint8_t *payload) {
    uint16_t ulen = 8 + PAYLOAD;
    memset(p, 0, 28);
    p[0] = 0x45; p[8] = 64; p[9] = 17;
    p[2] = TOTAL >> 8; p[3] = TOTAL & 0xFF; p[5] = 1;
    memcpy(p + 12, &src, 4); memcpy(p + 16, &dst, 4);
    uint16_t ck = fold(sum16(p, 20, 0));
    p[10] = ck >> 8; p[11] = ck & 0xFF;
    p[20] = sport >> 8; p[21] = sport & 0xFF; p[22] = dport >> 8; p[23] = dport & 0xFF;
    p[24] = ulen >> 8; p[25] = ulen & 0xFF;
    memcpy(p + 28, payload, PAYLOAD);
    uint32_t pseudo = sum16(p + 12, 8, 0) + 17 + ulen;
    uint16_t uck = fold(sum16(p + 20, ulen, pseudo));
    if (uck == 0) uck = 0xFFFF;
    p[26] = uck >> 8; p[27] = uck & 0xFF;
}

int main(int argc, char **argv) {
    static uint8_t packet[TOTAL], payload[PAYLOAD];
    if (argc < 3) { fprintf(stderr, "usage: %s parse|build N\n", argv[0]); return 2; }
    long long n = atoll(argv[2]);
    uint32_t src = htonl(0x0A010203), dst = htonl(0xC0A8C807);
    for (int i = 0; i < PAYLOAD; i++) payload[i] = (uint8_t)i;
    volatile uint64_t sink = 0;
    double t0 = now();
    if (strcmp(argv[1], "build") == 0) {
        for (long long i = 0; i < n; i++) {
            build(packet, src, dst, 40000, (uint16_t)(5353 + (i & 1)), payload);
            sink += packet[27];
        }
    } else {
        build(packet, src, dst, 40000, 5353, payload);
        for (long long i = 0; i < n; i++) {
            const volatile uint8_t *p = packet;           /* read every field each time */
            uint64_t fields = (p[0] >> 4) + (p[0] & 15) + p[1] + (p[2] << 8 | p[3]) + (p[4] << 8 | p[5])
                + (p[6] >> 5) + ((p[6] & 0x1F) << 8 | p[7]) + p[8] + p[9] + (p[10] << 8 | p[11]);
            uint32_t s, d;
            memcpy(&s, (const void *)(p + 12), 4); memcpy(&d, (const void *)(p + 16), 4);
            fields += s + d + (p[20] << 8 | p[21]) + (p[22] << 8 | p[23]) + (p[24] << 8 | p[25])
                + (p[26] << 8 | p[27]);
            if (fold(sum16((const uint8_t *)p, 20, 0)) != 0) mismatch("IPv4 checksum", 0, 1);
            sink += fields;
        }
    }
    report(now() - t0, n);
    return sink == 42 ? 3 : 0;
}
