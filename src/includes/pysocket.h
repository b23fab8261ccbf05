/* The leading fields of CPython's socket object (Modules/socketmodule.h, PySocketSockObject),
 * unchanged from 3.7 to 3.13. csock reads fd and timeout straight from them on the hot path;
 * src/fastio/sockref.pyx checks this layout against a live socket at import and falls back to
 * method calls if it does not match. */
#ifndef CSOCK_PYSOCKET_H
#define CSOCK_PYSOCKET_H
#include <Python.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    int sock_fd;
    int sock_family;
    int sock_type;
    int sock_proto;
    PyObject *(*errorhandler)(void);
    int64_t sock_timeout;   /* nanoseconds; -1 blocking, 0 non-blocking */
} csock_socket_fields;

#define CSOCK_SOCKET_FIELDS(o) ((csock_socket_fields *)(o))
#endif
