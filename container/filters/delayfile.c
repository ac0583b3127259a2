/* nbdkit-delayfile-filter: add latency to every request while a file says so.
 *
 *   nbdkit --filter=./nbdkit-delayfile-filter.so file disk.img delay-file=F
 *
 * While F exists and holds a number N, each pread, pwrite, flush, trim, zero,
 * extents and cache request waits N milliseconds before it is passed on.
 * Without F (or with 0 in it) requests pass at once. F is read on every
 * request, so a test or the rig changes the latency at run time by writing
 * the file (write a temporary file and rename it over F, so a reader never
 * sees it half written). Requests wait in parallel: the delay is added to
 * each request's latency, it does not serialise them.
 *
 * The nbdkit delay filter takes fixed delays at start-up only; this one is
 * for the test rig (container/rig fail PATH slow MS).
 *
 * Build: cc -shared -fPIC -O2 -o nbdkit-delayfile-filter.so delayfile.c
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

static char *delay_file; /* set once by .config, read-only afterwards */

static int
delayfile_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                  const char *key, const char *value)
{
  if (strcmp (key, "delay-file") == 0) {
    free (delay_file);
    delay_file = nbdkit_absolute_path (value);
    return delay_file ? 0 : -1;
  }
  return next (nxdata, key, value);
}

static void
delayfile_unload (void)
{
  free (delay_file);
}

/* Milliseconds the file asks for; 0 when it is absent, empty or unreadable. */
static unsigned
current_delay_ms (void)
{
  char buf[32];
  ssize_t n;
  int fd;
  unsigned long ms;

  if (delay_file == NULL)
    return 0;
  fd = open (delay_file, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return 0;
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  ms = strtoul (buf, NULL, 10);
  return ms > 3600000 ? 3600000 : (unsigned) ms;
}

/* Sleep, but wake early when nbdkit shuts down or the client goes away. */
static int
delay (int *err)
{
  unsigned ms = current_delay_ms ();

  if (ms == 0)
    return 0;
  if (nbdkit_nanosleep (ms / 1000, (ms % 1000) * 1000000) == -1) {
    *err = errno;
    return -1;
  }
  return 0;
}

static int
delayfile_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
                 uint64_t offset, uint32_t flags, int *err)
{
  if (delay (err) == -1)
    return -1;
  return next->pread (next, buf, count, offset, flags, err);
}

static int
delayfile_pwrite (nbdkit_next *next, void *handle, const void *buf,
                  uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  if (delay (err) == -1)
    return -1;
  return next->pwrite (next, buf, count, offset, flags, err);
}

static int
delayfile_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  if (delay (err) == -1)
    return -1;
  return next->flush (next, flags, err);
}

static int
delayfile_trim (nbdkit_next *next, void *handle, uint32_t count,
                uint64_t offset, uint32_t flags, int *err)
{
  if (delay (err) == -1)
    return -1;
  return next->trim (next, count, offset, flags, err);
}

static int
delayfile_zero (nbdkit_next *next, void *handle, uint32_t count,
                uint64_t offset, uint32_t flags, int *err)
{
  if (delay (err) == -1)
    return -1;
  return next->zero (next, count, offset, flags, err);
}

static int
delayfile_extents (nbdkit_next *next, void *handle, uint32_t count,
                   uint64_t offset, uint32_t flags,
                   struct nbdkit_extents *extents, int *err)
{
  if (delay (err) == -1)
    return -1;
  return next->extents (next, count, offset, flags, extents, err);
}

static int
delayfile_cache (nbdkit_next *next, void *handle, uint32_t count,
                 uint64_t offset, uint32_t flags, int *err)
{
  if (delay (err) == -1)
    return -1;
  return next->cache (next, count, offset, flags, err);
}

static struct nbdkit_filter filter = {
  .name = "delayfile",
  .longname = "nbdkit delay-file filter (nbd-multipath test rig)",
  .unload = delayfile_unload,
  .config = delayfile_config,
  .config_help = "delay-file=<FILE>  While FILE exists, delay each request by "
                 "the milliseconds it holds.",
  .pread = delayfile_pread,
  .pwrite = delayfile_pwrite,
  .flush = delayfile_flush,
  .trim = delayfile_trim,
  .zero = delayfile_zero,
  .extents = delayfile_extents,
  .cache = delayfile_cache,
};

NBDKIT_REGISTER_FILTER (filter)
