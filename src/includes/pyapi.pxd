# Python C-API calls that Cython's own cpython/*.pxd do not declare.
from cpython.object cimport PyObject
from cpython.pystate cimport PyInterpreterState


cdef extern from "Python.h":
    # A reference count read through a borrowed pointer. Cython 3 holds a new reference to an
    # attribute it passes to a function (`f(self.arena)`), so a count read from the argument is
    # one too high; callers pass `<PyObject *>self.arena`, which Cython leaves uncounted.
    Py_ssize_t refcount_of "Py_REFCNT" (PyObject *o) noexcept nogil
    PyInterpreterState *PyInterpreterState_Get() noexcept
    int _PyBytes_Resize(PyObject **string, Py_ssize_t newsize) except -1
    # os.fsdecode in C, as the stdlib's socket module decodes an AF_UNIX path
    str PyUnicode_DecodeFSDefaultAndSize(const char *s, Py_ssize_t size)
