// NoDescriptors: fills this process's descriptor table for a unit test, so
// that the next accept (or open) fails with EMFILE.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <vector>

namespace mp {

// Lowers this process's soft descriptor limit and fills the table, so that
// the next accept fails with EMFILE; undone when it goes out of scope.
struct NoDescriptors {
  rlimit saved{};
  std::vector<int> fds;
  NoDescriptors() {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    for (;;) {
      int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      fds.push_back(fd);
      if (fds.size() == 256) {  // lower the limit to what is open now
        rlimit rl = saved;
        rl.rlim_cur = static_cast<rlim_t>(fd + 1);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &rl) == 0);
      }
    }
    REQUIRE(errno == EMFILE);
  }
  void free_some(std::size_t n) {
    for (; n > 0 && !fds.empty(); n--) {
      ::close(fds.back());
      fds.pop_back();
    }
  }
  ~NoDescriptors() {
    free_some(fds.size());
    ::setrlimit(RLIMIT_NOFILE, &saved);
  }
};

}  // namespace mp
