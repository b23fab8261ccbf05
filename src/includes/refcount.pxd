# Reference counts read through a borrowed pointer. Cython 3 holds a new reference to an
# attribute it passes to a function (`f(self.arena)`), so a count read from the argument is
# one too high; callers pass `<PyObject *>self.arena`, which Cython leaves uncounted.
from cpython.object cimport PyObject


cdef extern from "Python.h":
    Py_ssize_t refcount_of "Py_REFCNT" (PyObject *o) noexcept nogil
