# members.pyx: member descriptors for Cython types (attribute reads CPython specialises).
# Used by sockref (the socket's state slot), mmsg (Datagram) and csock._packet (the layers).
from cpython.object cimport PyObject


cdef int install_members(type cls, tuple names, Py_ssize_t *offsets, bint readonly) except -1
cdef int use_generic_getattr(type cls) except -1
cdef Py_ssize_t slot_offset(type cls, str name) except -1
cdef int store_member(object obj, object name, object value) except -1


cdef inline PyObject *slot_value(object obj, Py_ssize_t offset) noexcept:
    """The object in obj's slot at offset (borrowed; NULL while the slot is unset). obj must be
    an instance of the type the offset came from."""
    return (<PyObject **>((<char *><PyObject *>obj) + offset))[0]
