// Unit tests for server/config_reader.h on a real event loop: the file is read
// on the reader's thread (a FIFO with no writer yet leaves the loop free),
// answers arrive on the loop thread in request order, and none after stop().
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/config_reader.h"
#include "server/loop.h"

namespace {

using namespace std::chrono_literals;
using mp::ConfigReader;
using mp::EventLoop;

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/mpreader.XXXXXX";
    REQUIRE(::mkdtemp(t) != nullptr);
    path = t;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

constexpr const char* kYaml = "paths:\n  - uri: nbd://a\n";

// Counts answers; wait() blocks (bounded) until `n` have come.
struct Answers {
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;
  void add() {
    std::lock_guard lock(mu);
    count++;
    cv.notify_all();
  }
  bool wait(int n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 10s, [&] { return count >= n; });
  }
  int now() {
    std::lock_guard lock(mu);
    return count;
  }
};

}  // namespace

TEST_CASE("answers come on the loop thread, in order") {
  TempDir dir;
  std::ofstream(dir.path + "/good.yaml") << kYaml;
  std::ofstream(dir.path + "/bad.yaml") << "paths: 3\n";
  EventLoop loop([](mp::LogLevel, const std::string&) {});
  loop.start();
  std::thread::id loop_id;
  loop.run_sync([&] { loop_id = std::this_thread::get_id(); });
  ConfigReader reader(loop);
  std::vector<std::string> got;  // touched on the loop thread only
  Answers answers;
  loop.run_sync([&] {
    for (const char* name : {"good.yaml", "bad.yaml", "missing.yaml", "good.yaml"})
      reader.read(dir.path + "/" + name, [&, name](mp::config::LoadResult r) {
        CHECK(std::this_thread::get_id() == loop_id);
        got.push_back(std::string(name) + (r ? ": ok" : ": refused"));
        answers.add();
      });
  });
  REQUIRE(answers.wait(4));
  loop.run_sync([&] {
    CHECK(got == std::vector<std::string>{"good.yaml: ok", "bad.yaml: refused",
                                          "missing.yaml: refused", "good.yaml: ok"});
  });
  reader.stop();
  loop.stop();
}

TEST_CASE("a file that blocks on open leaves the loop free") {
  TempDir dir;
  const std::string fifo = dir.path + "/disk.yaml";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  EventLoop loop([](mp::LogLevel, const std::string&) {});
  loop.start();
  ConfigReader reader(loop);
  Answers answered;
  std::atomic<bool> ok{false};
  loop.run_sync([&] {
    reader.read(fifo, [&](mp::config::LoadResult r) {
      ok = static_cast<bool>(r);
      answered.add();
    });
  });
  // The reader now waits in open() for a writer; the loop still runs.
  for (int i = 0; i < 10; i++) {
    std::promise<void> p;
    loop.post([&] { p.set_value(); });
    CHECK(p.get_future().wait_for(5s) == std::future_status::ready);
  }
  CHECK(answered.now() == 0);
  {
    std::ofstream w(fifo);
    w << kYaml;
  }
  REQUIRE(answered.wait(1));
  CHECK(ok);
  reader.stop();
  loop.stop();
}

TEST_CASE("no answer after stop, and no read") {
  TempDir dir;
  const std::string fifo = dir.path + "/disk.yaml";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  EventLoop loop([](mp::LogLevel, const std::string&) {});
  loop.start();
  ConfigReader reader(loop);
  Answers answers;
  loop.run_sync([&] { reader.read(fifo, [&](mp::config::LoadResult) { answers.add(); }); });
  // A second request queued behind the one in progress (a plain file, so that
  // nothing blocks if the reader gets to it before stop()).
  std::ofstream(dir.path + "/good.yaml") << kYaml;
  loop.run_sync([&] {
    reader.read(dir.path + "/good.yaml", [&](mp::config::LoadResult) { answers.add(); });
  });
  // stop() waits for the read in progress (blocked on the FIFO): let it end.
  std::thread writer([&] { std::ofstream(fifo) << kYaml; });
  reader.stop();
  // If stop() came before the reader opened the FIFO, the writer still waits
  // for a reader: this one lets it go.
  int fd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  writer.join();
  if (fd >= 0) ::close(fd);
  const int at_stop = answers.now();
  CHECK(at_stop <= 2);  // what was read before stop() returned may have answered
  loop.run_sync([&] { reader.read(fifo, [&](mp::config::LoadResult) { answers.add(); }); });
  loop.run_sync([] {});
  CHECK(answers.now() == at_stop);
  loop.stop();
}
