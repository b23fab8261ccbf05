/* The receive-timestamp socket options in both time formats (Linux 5.1 split each into _OLD
 * and _NEW: socket(7)); each variant reads set only when it is the one turned on. Headers
 * older than that have one of each: the _NEW ones are then -1, which getsockopt(2) refuses
 * (read as off). */
#ifndef CSOCK_TIMESTAMPS_H
#define CSOCK_TIMESTAMPS_H
#include <sys/socket.h>
#ifndef SO_TIMESTAMP_OLD
#define SO_TIMESTAMP_OLD SO_TIMESTAMP
#define SO_TIMESTAMPNS_OLD SO_TIMESTAMPNS
#endif
#ifndef SO_TIMESTAMP_NEW
#define SO_TIMESTAMP_NEW (-1)
#define SO_TIMESTAMPNS_NEW (-1)
#define SO_TIMESTAMPING_NEW (-1)
#endif
#endif
