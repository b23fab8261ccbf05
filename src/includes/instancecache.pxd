# A per-type cache of freed instances for subclasses of Cython types (instancecache.h).
from cpython.object cimport PyTypeObject


cdef extern from "instancecache.h":
    int cache_instances "csock_cache_instances"(PyTypeObject *type) except -1
