/* Test-only preload for sanitizer runs of nbdkit: strerror without gettext.
 *
 * Under a preloaded sanitizer runtime, glibc's strerror (through dcgettext
 * and __libc_setlocale_lock) leaves that lock unbalanced, and nbdkit then
 * hangs at exit in p11-kit's destructor (freelocale). Loaded right after the
 * runtime, these definitions are what its interceptors call: the same
 * English text, from strerrordesc_np, with no locale lock. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

static const char *text(int e) {
  const char *d = strerrordesc_np(e);
  return d ? d : "Unknown error";
}

char *strerror(int e) { return (char *)text(e); }

char *strerror_r(int e, char *buf, size_t n) {
  (void)buf;
  (void)n;
  return (char *)text(e);
}

int __xpg_strerror_r(int e, char *buf, size_t n) {
  if (n) snprintf(buf, n, "%s", text(e));
  return 0;
}
