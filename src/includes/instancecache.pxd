# A per-type cache of freed instances (instancecache.h): for subclasses of Cython types, and
# for the per-message objects csock builds without their tp_new.
from cpython.object cimport PyObject, PyTypeObject


cdef extern from "instancecache.h":
    int cache_instances "csock_cache_instances"(PyTypeObject *type) except -1
    # a cached instance with one reference and its object fields NULL, or NULL (none cached)
    PyObject *cached_take "csock_cached_take"(PyTypeObject *type)
    void set_slot "csock_set_slot"(PyObject *o, Py_ssize_t offset, PyObject *value)
