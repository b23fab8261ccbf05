/* Member descriptors (structmember.h) for csock/fastio/members.pyx. */
#ifndef CSOCK_MEMBERS_H
#define CSOCK_MEMBERS_H
#include <Python.h>
#include <structmember.h>

#ifndef Py_T_OBJECT_EX            /* Python < 3.12 spells them without the Py_ prefix */
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif

/* Static types refuse setattr(type, ...): put the descriptor in the type's dict directly. */
static inline int csock_type_set(PyTypeObject *type, PyObject *name, PyObject *value) {
    if (PyDict_SetItem(type->tp_dict, name, value) < 0) return -1;
    PyType_Modified(type);
    return 0;
}

/* The offset in instances of cls of an object slot given its member descriptor (a
   __slots__ entry of a Python class, for instance); -1 if descr is not a T_OBJECT_EX member
   of cls or of a base of it (another type's descriptor put in cls's dict names an offset in
   that type's instances). */
static inline Py_ssize_t csock_member_offset(PyTypeObject *cls, PyObject *descr) {
    if (!PyObject_TypeCheck(descr, &PyMemberDescr_Type)) return -1;
    PyMemberDescrObject *member = (PyMemberDescrObject *)descr;
    if (!PyType_IsSubtype(cls, PyDescr_TYPE(member))) return -1;
    PyMemberDef *m = member->d_member;
    return m->type == Py_T_OBJECT_EX ? m->offset : -1;
}

/* Store value into obj's object slot at offset (a __slots__ entry found by
   csock_member_offset), taking a new reference; the old value, if any, is released. */
static inline void csock_slot_store(PyObject *obj, Py_ssize_t offset, PyObject *value) {
    PyObject **slot = (PyObject **)((char *)obj + offset);
    PyObject *old = *slot;
    Py_INCREF(value);
    *slot = value;
    Py_XDECREF(old);
}

/* The object slot of obj that its type's member descriptor `name` names (found as attribute
   lookup finds it, and checked to belong to a type obj is an instance of, as the descriptor's
   own __set__ checks), or NULL with no exception set when there is none. */
static inline PyObject **csock_member_slot(PyObject *obj, PyObject *name) {
    PyObject *descr = _PyType_Lookup(Py_TYPE(obj), name);      /* borrowed, or NULL */
    if (descr == NULL || !PyObject_TypeCheck(descr, &PyMemberDescr_Type)) return NULL;
    PyMemberDescrObject *member = (PyMemberDescrObject *)descr;
    if (member->d_member->type != Py_T_OBJECT_EX || !PyObject_TypeCheck(obj, PyDescr_TYPE(member)))
        return NULL;
    return (PyObject **)((char *)obj + member->d_member->offset);
}

/* Cython gives extension types its own tp_getattro; the interpreter specialises attribute
   loads only for types whose tp_getattro is PyObject_GenericGetAttr itself. */
static inline void csock_use_generic_getattr(PyTypeObject *type) {
    type->tp_getattro = PyObject_GenericGetAttr;
    PyType_Modified(type);
}
#endif
