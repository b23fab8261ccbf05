# buffers.pyx: receive memory and the read-only views into it. Arena, ReadOnlyView,
# MessageView and make_view are public C API (csock/_fastio.pxd); framing and mmsg also
# decide with arena_is_private when an arena may be written again, and the batch senders
# (stream, mmsg) export messages with export_readable.
from cpython.buffer cimport PyBuffer_FillInfo, PyObject_GetBuffer, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from includes.pyapi cimport refcount_of


cdef inline bint arena_is_private(PyObject *arena) noexcept:
    """True when only the owner's reference is left (no view alive): safe to write again.

    The owner passes its attribute as a borrowed pointer, `<PyObject *>self.arena`: passed as
    an object, Cython would count its own temporary reference and the arena would never look
    private (see includes/pyapi.pxd)."""
    return refcount_of(arena) == 1


cdef inline int export_readable(object item, Py_buffer *view) except -1:
    """PyObject_GetBuffer(item, view, PyBUF_SIMPLE), with bytes exported in place: what bytes'
    own getbuffer does (its memory never changes; the view holds a reference), without the
    type-slot dispatch, for the batch senders' one export per message."""
    if PyBytes_CheckExact(item):
        return PyBuffer_FillInfo(view, item, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item), 1,
                                 PyBUF_SIMPLE)
    return PyObject_GetBuffer(item, view, PyBUF_SIMPLE)
