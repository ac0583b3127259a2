// Notices and warnings for the operator, next to nbdkit's own error lines.
//
// nbdkit (1.32 to 1.42) has no notice level for plugins: nbdkit_error is the
// only line an operator sees without -v. Routine events (a path entering
// service, a group change, a reload, an operator action) must not be errors,
// so they take one of three ways, chosen once:
//
//   stderr is the journal          "<5>multipath: notice: ..." on stderr: the
//   (JOURNAL_STREAM names it)       journal reads the sd-daemon prefix as the
//                                   line's priority (5 notice, 4 warning)
//   stderr is /dev/null (nbdkit    syslog(3), LOG_NOTICE / LOG_WARNING, where
//   forked into the background)     nbdkit's own errors go too
//   otherwise (a terminal, a        "nbdkit: multipath: notice: ..." on stderr,
//   file, a pipe)                   shaped like nbdkit's error lines
//
// Errors stay nbdkit_error, so nbdkit's --log decides where they go; the unit
// (systemd/nbd-multipath@.service) runs nbdkit with --log=syslog, so errors
// reach the journal at priority 3 and notices at 5.
#define NBDKIT_API_VERSION 2
#include "plugin/log.h"

#include <nbdkit-plugin.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <syslog.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace mp::plugin {
namespace {

enum class Sink { Stderr, Journal, Syslog };
Sink sink = Sink::Stderr;  // set in init_log, before any other thread logs

bool stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");  // "DEV:INO" of the journal's stream
  if (!js) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st;
  return fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

bool stderr_is_devnull() {
  struct stat e, n;
  return fstat(STDERR_FILENO, &e) == 0 && stat("/dev/null", &n) == 0 && S_ISCHR(e.st_mode) &&
         e.st_rdev == n.st_rdev;
}

// One write(2) per line, so lines from different threads do not interleave.
void write_stderr(const std::string& s) {
  const char* p = s.data();
  std::size_t left = s.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) return;  // nowhere to report it
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

}  // namespace

void init_log() {
  sink = stderr_is_journal() ? Sink::Journal : stderr_is_devnull() ? Sink::Syslog : Sink::Stderr;
}

void log_line(LogLevel level, const std::string& line, bool verbose) {
  switch (level) {
    case LogLevel::Error:
      nbdkit_error("%s", line.c_str());
      return;
    case LogLevel::Debug:
      if (verbose) nbdkit_debug("%s", line.c_str());
      return;
    case LogLevel::Notice:
    case LogLevel::Warning:
      break;
  }
  const bool warn = level == LogLevel::Warning;
  const char* word = warn ? "warning" : "notice";
  switch (sink) {
    case Sink::Journal:
      write_stderr(std::string(warn ? "<4>" : "<5>") + "multipath: " + word + ": " + line + "\n");
      return;
    case Sink::Syslog:
      syslog(warn ? LOG_WARNING : LOG_NOTICE, "multipath: %s: %s", word, line.c_str());
      return;
    case Sink::Stderr:
      write_stderr(std::string("nbdkit: multipath: ") + word + ": " + line + "\n");
      return;
  }
}

}  // namespace mp::plugin
