# Member descriptors: object slots of an extension type exposed as attributes (members.h).
from cpython.object cimport PyObject, PyTypeObject


cdef extern from "members.h":
    ctypedef struct PyMemberDef:
        const char *name
        int type
        Py_ssize_t offset
        int flags
        const char *doc
    int Py_T_OBJECT_EX
    int Py_READONLY
    object PyDescr_NewMember(PyTypeObject *type, PyMemberDef *member)
    int csock_type_set(PyTypeObject *type, object name, object value) except -1
    void csock_use_generic_getattr(PyTypeObject *type)
    Py_ssize_t csock_member_offset(PyTypeObject *cls, object descr)
    void csock_slot_store(object obj, Py_ssize_t offset, object value)
    PyObject **csock_member_slot(object obj, object name)
