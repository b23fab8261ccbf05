# Reading packet field slots back as C numbers (fields.h).
from cpython.object cimport PyObject


cdef extern from "fields.h":
    long csock_small_nonneg_long(PyObject *v)
