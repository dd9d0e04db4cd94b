/* The requests and constants of fake_engine.c, a stand-in for libIOASIDEngine.so that checks the
 * preload contract (docs/architecture.md) on its own, with answers a real file never gives. */
#ifndef IOASID_FAKE_ENGINE_H
#define IOASID_FAKE_ENGINE_H

#define FAKE_ECHO 0xFA000001UL          /* *(int *)argument = fd; returns 77 */
#define FAKE_LIVE 0xFA000002UL          /* returns how many fds the engine holds */
#define FAKE_INSTALL 0xFA000003UL       /* creates and claims a new eventfd; returns it */
#define FAKE_CLAIM 0xFA000004UL         /* claims *(int *)argument without a kernel fd; returns 0 */
#define FAKE_LAST_DUP 0xFA000005UL      /* returns (oldfd << 20) | newfd of the last dup */
#define FAKE_ERRNO(e) (0xFB000000UL | (unsigned long)(e)) /* returns -e */

#define FAKE_MMAP_BASE 0x100000000000L  /* mmap returns FAKE_MMAP_BASE + offset */
#define FAKE_READ_BYTE 'R'              /* read fills the buffer with it and returns count */
                                        /* write returns count / 2 */
                                        /* open with O_EXCL fails with EACCES */
#endif
