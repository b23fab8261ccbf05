/* Network byte order loads and stores at any alignment (memcpy compiles to one move). */
#ifndef CSOCK_BYTEORDER_H
#define CSOCK_BYTEORDER_H
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>

static inline uint16_t csock_load_be16(const void *p) { uint16_t v; memcpy(&v, p, 2); return ntohs(v); }
static inline uint32_t csock_load_be32(const void *p) { uint32_t v; memcpy(&v, p, 4); return ntohl(v); }
static inline void csock_store_be16(void *p, uint16_t v) { v = htons(v); memcpy(p, &v, 2); }
static inline void csock_store_be32(void *p, uint32_t v) { v = htonl(v); memcpy(p, &v, 4); }
#endif
