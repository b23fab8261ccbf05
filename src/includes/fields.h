/* Reading a packet field slot back as a C number, for csock/fastio/packet.pyx. */
#ifndef CSOCK_FIELDS_H
#define CSOCK_FIELDS_H
#include <Python.h>

/* v's value when v is an exact int small enough to read without a call (0 <= value < 2**30
   at least), else -1: the caller then takes the checked slow path. Field slots hold such
   ints nearly always, and this runs for every field of every packet built. */
static inline long csock_small_nonneg_long(PyObject *v) {
    if (!PyLong_CheckExact(v)) return -1;
#if PY_VERSION_HEX >= 0x030C0000
    if (!PyUnstable_Long_IsCompact((PyLongObject *)v)) return -1;
    Py_ssize_t value = PyUnstable_Long_CompactValue((PyLongObject *)v);
    return value >= 0 ? (long)value : -1;
#else
    Py_ssize_t size = Py_SIZE(v);
    if (size == 0) return 0;
    if (size == 1) return (long)((PyLongObject *)v)->ob_digit[0];
    return -1;
#endif
}
#endif
