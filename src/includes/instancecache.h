/* Freed instances kept for reuse, per type.
 *
 * Cython's @cython.freelist serves only a type whose own tp_new allocates; a subclass of a
 * Cython base (the csock.packet layers under Layer, MessageView and PayloadView under
 * ReadOnlyView) is allocated by the base's tp_new through tp_alloc and freed through
 * tp_free, so csock_cache_instances() replaces those two for such a type: up to
 * CSOCK_CACHE_DEPTH freed instances wait in a stack instead of going back to the allocator.
 * Only for types outside the garbage collector (@cython.no_gc): a GC object's memory starts
 * before the object. The GIL protects the stacks.
 *
 * csock_cached_take() hands a freed instance back without the type's tp_new: for the view a
 * batch receive makes per message (MessageView; make_view writes every field itself, with
 * csock_set_slot for the object field its dealloc left NULL). */
#ifndef CSOCK_INSTANCECACHE_H
#define CSOCK_INSTANCECACHE_H
#include <Python.h>
#include <string.h>

#define CSOCK_CACHE_TYPES 16
#define CSOCK_CACHE_DEPTH 1024     /* a full recvmmsg batch */

typedef struct {
    PyTypeObject *type;
    int count;
    PyObject *items[CSOCK_CACHE_DEPTH];
} csock_instance_cache;

static csock_instance_cache csock_caches[CSOCK_CACHE_TYPES];
static int csock_cache_types = 0;

static inline csock_instance_cache *csock_cache_of(PyTypeObject *type) {
    for (int i = 0; i < csock_cache_types; i++)
        if (csock_caches[i].type == type)
            return &csock_caches[i];
    return NULL;
}

static PyObject *csock_cached_alloc(PyTypeObject *type, Py_ssize_t nitems) {
    csock_instance_cache *cache = csock_cache_of(type);
    if (cache != NULL && cache->count > 0 && nitems == 0) {
        PyObject *o = cache->items[--cache->count];
        memset(o, 0, (size_t)type->tp_basicsize);
        return PyObject_Init(o, type);
    }
    return PyType_GenericAlloc(type, nitems);
}

static void csock_cached_free(void *block) {
    csock_instance_cache *cache = csock_cache_of(Py_TYPE((PyObject *)block));
    if (cache != NULL && cache->count < CSOCK_CACHE_DEPTH) {
        cache->items[cache->count++] = (PyObject *)block;
        return;
    }
    PyObject_Free(block);
}

/* A freed instance of type made live again (one reference; object fields NULL, the others as
 * they were), or NULL when none is cached: the caller then goes through the type. */
static inline PyObject *csock_cached_take(PyTypeObject *type) {
    csock_instance_cache *cache = csock_cache_of(type);
    if (cache == NULL || cache->count == 0)
        return NULL;
    return PyObject_Init(cache->items[--cache->count], type);
}

/* Store a new reference to value in the object field at offset of o (one that is NULL). */
static inline void csock_set_slot(PyObject *o, Py_ssize_t offset, PyObject *value) {
    Py_INCREF(value);
    *(PyObject **)((char *)o + offset) = value;
}

static int csock_cache_instances(PyTypeObject *type) {
    if (PyType_IS_GC(type) || type->tp_itemsize != 0) {
        PyErr_Format(PyExc_TypeError, "%s: only fixed-size types outside the GC", type->tp_name);
        return -1;
    }
    if (csock_cache_types == CSOCK_CACHE_TYPES) {
        PyErr_SetString(PyExc_RuntimeError, "csock_cache_instances: the table is full");
        return -1;
    }
    csock_caches[csock_cache_types].type = type;
    csock_caches[csock_cache_types].count = 0;
    csock_cache_types++;
    type->tp_alloc = csock_cached_alloc;
    type->tp_free = csock_cached_free;
    return 0;
}
#endif
