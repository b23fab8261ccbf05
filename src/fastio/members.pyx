# Attribute reads the interpreter specialises.
#
# CPython (3.11+) compiles `obj.name` into a direct load from the object (LOAD_ATTR_SLOT,
# about 4 ns) when the type's attribute is a member descriptor of type T_OBJECT_EX and the
# type's tp_getattro is PyObject_GenericGetAttr. Cython exposes `cdef readonly` attributes as
# getset descriptors and installs its own tp_getattro, so each read is a descriptor call
# (25-50 ns, plus a new int object for values above 256). install_members() exposes chosen
# object attributes of a Cython type as member descriptors instead and restores the generic
# getattr. The slots are found by offsetof() on the type's instance struct (a `public` class
# names it). Descriptors of a type that validates values are read-only (readonly=True): a
# store or delete through the descriptor itself (type(p).__dict__["ttl"].__set__(p, x),
# .__delete__) would skip the validation or leave a NULL slot for C code to read. Such a type
# validates in its __setattr__ and stores with store_member().
from cpython.mem cimport PyMem_RawCalloc
from cpython.object cimport PyObject, PyTypeObject, PyObject_GenericSetAttr
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_AsUTF8
from includes.members cimport (PyMemberDef, Py_T_OBJECT_EX, Py_READONLY, PyDescr_NewMember,
                               csock_type_set, csock_use_generic_getattr, csock_member_offset,
                               csock_member_slot)

cdef list _member_names = []      # the descriptors point at these strings' UTF-8 forever


cdef int install_members(type cls, tuple names, Py_ssize_t *offsets, bint readonly) except -1:
    """Expose names[i], the object slot at offsets[i] of cls's instances, as a member
    descriptor of cls (readonly: stores raise AttributeError)."""
    cdef Py_ssize_t i, n = len(names)
    cdef PyMemberDef *defs = <PyMemberDef *>PyMem_RawCalloc(n, sizeof(PyMemberDef))
    if defs == NULL:
        raise MemoryError()
    for i in range(n):       # the table lives as long as the type: never freed
        name = names[i]
        _member_names.append(name)
        defs[i].name = PyUnicode_AsUTF8(name)
        defs[i].type = Py_T_OBJECT_EX
        defs[i].offset = offsets[i]
        defs[i].flags = Py_READONLY if readonly else 0
        csock_type_set(<PyTypeObject *>cls, name, PyDescr_NewMember(<PyTypeObject *>cls, &defs[i]))
    use_generic_getattr(cls)
    return 0


cdef int use_generic_getattr(type cls) except -1:
    """Make cls's attribute loads specialisable (see above); for subclasses that inherit
    members from a base, call it on each."""
    csock_use_generic_getattr(<PyTypeObject *>cls)
    return 0


cdef Py_ssize_t slot_offset(type cls, str name) except -1:
    """Where instances of cls keep the object slot `name` (a __slots__ entry); ValueError if
    cls has no such slot."""
    cdef Py_ssize_t offset = csock_member_offset(<PyTypeObject *>cls, cls.__dict__.get(name))
    if offset < 0:
        raise ValueError(f"{cls.__name__}.{name} is not an object slot")
    return offset


cdef int store_member(object obj, object name, object value) except -1:
    """Store value (already validated) in the object slot of obj that the member descriptor
    `name` of its type names, read-only or not; anything else goes to the generic setattr
    (AttributeError for a name obj has no slot for)."""
    cdef PyObject **slot = csock_member_slot(obj, name)
    cdef PyObject *old
    if slot == NULL:
        PyObject_GenericSetAttr(obj, name, value)
        return 0
    Py_INCREF(value)
    old = slot[0]
    slot[0] = <PyObject *>value
    Py_XDECREF(old)
    return 0
