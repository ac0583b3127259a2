/* Test-only preload for sanitizer runs of nbdkit: strerror without gettext.
 *
 * Under a preloaded sanitizer runtime, glibc's strerror (through dcgettext
 * and __libc_setlocale_lock) leaves that lock unbalanced, and nbdkit then
 * hangs at exit in p11-kit's destructor (freelocale). Loaded right after the
 * runtime, these definitions are what its interceptors call: the same
 * English text, from strerrordesc_np, with no locale lock. */
#define _GNU_SOURCE
#include <locale.h>
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

/* nbdkit's own "%m" (glibc's internal strerror, which no preload reaches)
 * still goes through dcgettext, so after a run with many failed socket
 * writes (clients that hung up) the lock can be left unbalanced all the same,
 * and p11-kit's destructor hangs at exit in freelocale, which takes it for
 * writing (seen with gdb after test-abrupt-disconnect). A locale need not be
 * freed: leak checking is off in these runs. */
void freelocale(locale_t l) { (void)l; }
