/* nbdkit-spikes-filter: make a share of requests slow, at random.
 *
 *   nbdkit --filter=./nbdkit-spikes-filter.so file disk.img spike-rate=2 spike-ms=50
 *
 * Each pread, pwrite, flush, trim and zero waits spike-ms milliseconds
 * (default 50) with probability spike-rate percent (default 2, a decimal such
 * as 0.5 is allowed), and passes at once otherwise: a path with intermittent
 * slowness, the "gray failure" of a link that drops and retransmits or a disk
 * that retries a sector. Requests wait in parallel. nbdkit's delay filter
 * only delays every request by a fixed time.
 *
 * Build: cc -shared -fPIC -O2 -o nbdkit-spikes-filter.so spikes.c
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

static double spike_rate = 2.0; /* percent; set by .config, read-only after */
static unsigned spike_ms = 50;

static int
spikes_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
               const char *key, const char *value)
{
  char *end;

  if (strcmp (key, "spike-rate") == 0) {
    spike_rate = strtod (value, &end);
    if (*end || spike_rate < 0 || spike_rate > 100) {
      nbdkit_error ("spike-rate must be a percentage from 0 to 100, not '%s'", value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "spike-ms") == 0) {
    unsigned long ms = strtoul (value, &end, 10);
    if (*end || ms > 3600000) {
      nbdkit_error ("spike-ms must be milliseconds from 0 to 3600000, not '%s'", value);
      return -1;
    }
    spike_ms = (unsigned) ms;
    return 0;
  }
  return next (nxdata, key, value);
}

/* One xorshift64* generator per worker thread, seeded from the clock and
 * the generator's address (distinct per thread). */
static __thread uint64_t rng_state;

static double
uniform_percent (void)
{
  if (rng_state == 0) {
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    rng_state = ((uint64_t) ts.tv_nsec << 20) ^ (uint64_t) (uintptr_t) &rng_state ^ 0x9e3779b97f4a7c15u;
  }
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double) ((rng_state * 0x2545f4914f6cdd1du) >> 11) / (double) (1ull << 53) * 100.0;
}

/* Sleep for a spike (or not), waking early when nbdkit shuts down. */
static int
maybe_spike (int *err)
{
  if (spike_ms == 0 || uniform_percent () >= spike_rate)
    return 0;
  if (nbdkit_nanosleep (spike_ms / 1000, (spike_ms % 1000) * 1000000) == -1) {
    *err = errno;
    return -1;
  }
  return 0;
}

static int
spikes_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  (void) handle;
  if (maybe_spike (err) == -1)
    return -1;
  return next->pread (next, buf, count, offset, flags, err);
}

static int
spikes_pwrite (nbdkit_next *next, void *handle, const void *buf,
               uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  (void) handle;
  if (maybe_spike (err) == -1)
    return -1;
  return next->pwrite (next, buf, count, offset, flags, err);
}

static int
spikes_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  (void) handle;
  if (maybe_spike (err) == -1)
    return -1;
  return next->flush (next, flags, err);
}

static int
spikes_trim (nbdkit_next *next, void *handle, uint32_t count,
             uint64_t offset, uint32_t flags, int *err)
{
  (void) handle;
  if (maybe_spike (err) == -1)
    return -1;
  return next->trim (next, count, offset, flags, err);
}

static int
spikes_zero (nbdkit_next *next, void *handle, uint32_t count,
             uint64_t offset, uint32_t flags, int *err)
{
  (void) handle;
  if (maybe_spike (err) == -1)
    return -1;
  return next->zero (next, count, offset, flags, err);
}

static struct nbdkit_filter filter = {
  .name = "spikes",
  .longname = "nbdkit spikes filter (a share of requests is slow)",
  .config = spikes_config,
  .config_help = "spike-rate=PERCENT  share of slow requests (default 2)\n"
                 "spike-ms=MS         how slow (default 50)",
  .pread = spikes_pread,
  .pwrite = spikes_pwrite,
  .flush = spikes_flush,
  .trim = spikes_trim,
  .zero = spikes_zero,
};

NBDKIT_REGISTER_FILTER (filter)
