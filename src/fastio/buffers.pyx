# Receive memory and the read-only views handed to callers.
#
# An Arena is one malloc'd block that the kernel writes into. Every MessageView holds a
# reference to its Arena, so an arena is written again only when its reference count shows
# that the owner (a FramedStream or a batch receiver) is the only one left: a view the caller
# holds is never overwritten or freed (see arena_is_private).
cimport cython
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE,
                             PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES)
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.object cimport PyObject
from libc.string cimport memcmp
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED
from cpython.object cimport PyTypeObject, Py_TPFLAGS_BASETYPE
from cpython.type cimport PyType_Modified
from includes.instancecache cimport cache_instances, cached_take, set_slot
from cpython.ref cimport Py_DECREF


cdef enum:
    WARM_ARENA_SIZE = 256 * 1024     # a FramedStream's receive arena (framing.pyx ARENA_SIZE)
    WARM_ARENAS = 16                 # kept at most: 4 MiB
    LARGE_ARENAS = 4                 # larger ones kept at most...
    LARGE_ARENA_BYTES = 8 * 1024 * 1024   # ...and at most this many bytes of them

# Freed arenas of WARM_ARENA_SIZE, pages already faulted in, for the next one. malloc serves
# 256 KiB with a fresh mmap(2), or from a heap top it may trim: a server making a stream per
# connection, and a stream whose views still pin its arena when it needs the next, faulted
# in 64 pages per arena (about 15 % of a 64 KiB-message transfer on io_uring). Only touched
# with the GIL held (object creation and deallocation).
cdef char *_warm_arenas[WARM_ARENAS]
cdef int _warm_count = 0

# Freed arenas larger than that (a FramedStream's room for one large frame), oldest first, for
# the next arena of at least half their size. Several freed together left glibc a heap top to
# trim: a stream receiving 1 MiB frames on io_uring, which holds a few of them at once,
# faulted in about 40 pages per frame, about half its CPU time.
cdef char *_large_arenas[LARGE_ARENAS]
cdef Py_ssize_t _large_sizes[LARGE_ARENAS]
cdef int _large_count = 0
cdef Py_ssize_t _large_bytes = 0


cdef char *remove_large_arena(int i) noexcept:
    """Take kept arena i out of the list (the later ones move up); its memory."""
    global _large_count, _large_bytes
    cdef char *data = _large_arenas[i]
    cdef int j
    _large_bytes -= _large_sizes[i]
    _large_count -= 1
    for j in range(i, _large_count):
        _large_arenas[j] = _large_arenas[j + 1]
        _large_sizes[j] = _large_sizes[j + 1]
    return data


cdef char *take_large_arena(Py_ssize_t size, Py_ssize_t *capacity) noexcept:
    """A kept arena of size to 2 * size bytes (its size in capacity[0]), or NULL."""
    cdef int i
    for i in range(_large_count):
        if size <= _large_sizes[i] <= 2 * size:
            capacity[0] = _large_sizes[i]
            return remove_large_arena(i)
    return NULL


cdef void keep_large_arena(char *data, Py_ssize_t size) noexcept:
    """Keep a freed arena for reuse, the oldest kept ones freed to make room."""
    global _large_count, _large_bytes
    if size > LARGE_ARENA_BYTES:
        PyMem_Free(data)
        return
    while _large_count == LARGE_ARENAS or _large_bytes + size > LARGE_ARENA_BYTES:
        PyMem_Free(remove_large_arena(0))           # the oldest
    _large_arenas[_large_count] = data
    _large_sizes[_large_count] = size
    _large_count += 1
    _large_bytes += size


def _release_warm_arenas():
    """Free the arenas kept for reuse; how many there were. (For tests that count memory.)"""
    global _warm_count
    cdef int released = _warm_count + _large_count
    while _warm_count > 0:
        _warm_count -= 1
        PyMem_Free(_warm_arenas[_warm_count])
    while _large_count > 0:
        PyMem_Free(remove_large_arena(0))
    return released


@cython.final
cdef class Arena:
    """At least size bytes of memory (`size` says how many: a kept arena may be larger).
    mapped=True (a batch receiver's scratch, which lives as long as its socket and can span
    megabytes of which few pages are touched) takes it with mmap(2), so munmap gives every page
    back when the arena goes, where free() could leave them in the heap for the life of the
    process; short-lived arenas come from malloc, whose warm pages the next one reuses."""
    def __cinit__(self, Py_ssize_t size, bint mapped=False):
        global _warm_count
        cdef void *memory
        cdef Py_ssize_t capacity = size
        if size < 0:
            raise ValueError("negative arena size")
        if mapped:
            memory = mmap(NULL, max(size, 1), PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            if memory == MAP_FAILED:
                raise MemoryError()
            self.data = <char *>memory
            self.mapped = True
        elif size == WARM_ARENA_SIZE and _warm_count > 0:
            _warm_count -= 1
            self.data = _warm_arenas[_warm_count]
        else:
            if size > WARM_ARENA_SIZE:
                self.data = take_large_arena(size, &capacity)
            if self.data == NULL:
                self.data = <char *>PyMem_Malloc(size if size > 0 else 1)
            if self.data == NULL:
                raise MemoryError()
        self.size = capacity                # (a kept arena may be larger than asked)

    def __dealloc__(self):
        global _warm_count
        if self.data == NULL:
            return
        if self.mapped:
            munmap(self.data, max(self.size, 1))
        elif self.size == WARM_ARENA_SIZE and _warm_count < WARM_ARENAS:
            _warm_arenas[_warm_count] = self.data
            _warm_count += 1
        elif self.size > WARM_ARENA_SIZE:
            keep_large_arena(self.data, self.size)
        else:
            PyMem_Free(self.data)

    def __len__(self):
        return self.size


cdef extern from *:
    Py_ssize_t VIEW_ARENA "offsetof(struct csock_MessageView, arena)"


cdef MessageView make_view(Arena arena, const char *ptr, Py_ssize_t length):
    """A MessageView of ptr[0:length] in arena: a freed one taken back from the type's cache
    and filled in place (a batch receive makes one per message; going through the type's
    tp_new costs about 50 instructions more), or a new one when none is cached."""
    cdef MessageView v
    cdef PyObject *o = cached_take(<PyTypeObject *>MessageView)
    if o == NULL:
        v = MessageView.__new__(MessageView)
        v.arena = arena
    else:
        set_slot(o, VIEW_ARENA, <PyObject *>arena)
        v = <MessageView>o
        Py_DECREF(v)                       # the reference cached_take gave, now v's
    v.ptr = ptr
    v.length = length
    return v


cdef class ReadOnlyView:
    """The read-only, bytes-like views csock hands out (MessageView; csock.packet's
    PayloadView): the buffer protocol over memory the subclass keeps alive, equal to any
    bytes-like object with the same bytes. ``bytes(view)`` copies it out."""

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        """One contiguous run of unsigned bytes, read-only: what PyBuffer_FillInfo would fill
        in, written directly (struct.unpack_from(view) and memoryview(view) ask for it once
        per received message)."""
        if flags & PyBUF_WRITABLE:
            raise BufferError(f"a {type(self).__name__} is read-only")
        buffer.obj = self
        buffer.buf = <void *>self.ptr
        buffer.len = self.length
        buffer.readonly = 1
        buffer.itemsize = 1
        buffer.format = NULL
        buffer.ndim = 1
        buffer.shape = NULL
        buffer.strides = NULL
        buffer.suboffsets = NULL
        if flags & PyBUF_FORMAT:
            buffer.format = b"B"
        if flags & PyBUF_ND == PyBUF_ND:
            buffer.shape = &buffer.len
        if flags & PyBUF_STRIDES == PyBUF_STRIDES:
            buffer.strides = &buffer.itemsize
        buffer.internal = NULL

    def __len__(self):
        return self.length

    def __bytes__(self):
        return PyBytes_FromStringAndSize(self.ptr, self.length)

    def tobytes(self):
        """A bytes copy of the view."""
        return PyBytes_FromStringAndSize(self.ptr, self.length)

    def decode(self, encoding="utf-8", errors="strict"):
        return PyBytes_FromStringAndSize(self.ptr, self.length).decode(encoding, errors)

    def hex(self, *args):
        return memoryview(self).hex(*args)

    def tolist(self):
        return list(PyBytes_FromStringAndSize(self.ptr, self.length))

    @property
    def nbytes(self):
        return self.length

    @property
    def readonly(self):
        return True

    def __getitem__(self, index):
        if isinstance(index, slice):
            return memoryview(self)[index]
        cdef Py_ssize_t i = index
        if i < 0:
            i += self.length
        if i < 0 or i >= self.length:
            raise IndexError("index out of range")
        return <unsigned char>self.ptr[i]

    def __iter__(self):
        return iter(PyBytes_FromStringAndSize(self.ptr, self.length))

    def __eq__(self, other):
        return view_equals(self.ptr, self.length, other)

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(PyBytes_FromStringAndSize(self.ptr, self.length))

    def __reduce__(self):
        return bytes, (self.tobytes(),)

    def __repr__(self):
        return view_repr(type(self)._repr_name, self.ptr, self.length)

    _repr_name = "csock.ReadOnlyView"


# Not final in C: csock.uring's ReceivedView is one whose memory is a ring buffer (its arena
# is None; it gives the buffer back itself). Only exact MessageViews are taken from the cache.
@cython.no_gc                 # its one reference, an Arena, refers to nothing
cdef class MessageView(ReadOnlyView):
    """A received message: read-only, bytes-like (buffer protocol), compares equal to bytes.

    It points into csock's receive memory, which is never written again while this view (or
    any memoryview made from it) is alive. ``bytes(view)`` copies it out."""
    _repr_name = "csock.MessageView"


cache_instances(<PyTypeObject *>MessageView)   # @cython.freelist would not apply to a subclass
# ...but final to Python code, as it was: type_new checks the flag, PyType_Ready (C types) not.
(<PyTypeObject *>MessageView).tp_flags &= ~Py_TPFLAGS_BASETYPE
PyType_Modified(MessageView)


cdef object view_equals(const void *ptr, Py_ssize_t length, object other):
    """== for the read-only view types (MessageView, csock.packet's PayloadView): equal to any
    bytes-like object with the same bytes; NotImplemented for anything else."""
    cdef Py_buffer theirs
    try:
        PyObject_GetBuffer(other, &theirs, PyBUF_SIMPLE)
    except TypeError:
        return NotImplemented
    except BufferError:         # not one run of bytes (a strided view): its bytes in order
        return PyBytes_FromStringAndSize(<const char *>ptr, length) == memoryview(other).tobytes()
    try:
        # (memcmp of NULL is undefined even for 0 bytes: an uninitialised view has no memory)
        return theirs.len == length and (length == 0 or memcmp(ptr, theirs.buf, length) == 0)
    finally:
        PyBuffer_Release(&theirs)


cdef str view_repr(str name, const void *ptr, Py_ssize_t length):
    cdef Py_ssize_t shown = min(length, 32)
    head = PyBytes_FromStringAndSize(<const char *>ptr, shown)
    return f"<{name} {length} bytes {head!r}{'...' if shown < length else ''}>"
