// The Path interface: one upstream (an NBD server or an iSCSI LU) that the engine can send
// commands to. Implementations: NbdPath, IscsiPath, and FakePath in tests.
//
// Threading: every method is called holding the loop lock
// (server/loop_lock.h): on the event-loop thread, and submit() also on an
// nbdkit worker that took the lock while the loop was idle. Every callback
// (CommandSink, PathListener) runs holding it too, never from inside a
// library callback, so the engine may submit again from any callback.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace mp {

enum class Op : std::uint8_t { Read, Write, Flush, Trim, Zero, Cache };
const char* to_string(Op op);
inline bool is_write(Op op) {
  return op == Op::Write || op == Op::Trim || op == Op::Zero;
}

// Command flags (a subset of NBD's, same meaning).
inline constexpr std::uint32_t kFua = 1;       // durable before the reply
inline constexpr std::uint32_t kMayTrim = 2;   // zero: punching a hole is fine
inline constexpr std::uint32_t kFastZero = 4;  // zero: fail with ENOTSUP unless fast
// read: a health probe. A path may check readiness its own way as well (an
// iSCSI path sends TEST UNIT READY, which sees an LU taken offline).
inline constexpr std::uint32_t kProbe = 8;

struct Command {
  Op op = Op::Read;
  std::uint64_t offset = 0;
  std::uint32_t count = 0;
  std::uint32_t flags = 0;
  // Read destination or write source. Owned by the engine's attempt, never by
  // nbdkit, and valid until the sink hears the command's completion.
  std::byte* data = nullptr;
};

// How a command ended, as far as the path can tell.
enum class PathResult : std::uint8_t {
  Ok,
  RemoteError,    // the server replied with an error on a healthy connection
  TransportDead,  // the connection died (reset, EOF, closed): the server can no longer act on it
};

class CommandSink {
 public:
  // Called exactly once for every command submit() accepted. `err` is an errno
  // (0 with Ok).
  virtual void command_done(PathResult result, int err) = 0;

 protected:
  ~CommandSink() = default;
};

// What every path connection tells about the export.
struct PathCaps {
  std::uint64_t size = 0;
  bool read_only = false;
  bool can_flush = false;
  bool can_fua = false;
  bool can_trim = false;
  bool can_zero = false;
  bool can_fast_zero = false;
  bool can_cache = false;
  bool can_multi_conn = false;
  bool is_rotational = false;
  std::uint32_t min_block = 1;
  std::uint32_t pref_block = 4096;
  std::uint32_t max_request = 32u << 20;  // largest payload per command; larger ones are split
  // Who the disk is, to refuse a path to another one. iSCSI: the LU's
  // identifier from VPD page 0x83 ("naa.60000..."). NBD: the export name.
  std::string identity;
  std::string export_name;
  bool has_export_name = false;  // an NBD path
  // NBD: the export description (NBD_INFO_DESCRIPTION) when the server sent
  // one. All NBD paths must agree on it, including on having none.
  std::string description;
  bool has_description = false;
};

class Path;

class PathListener {
 public:
  // A connect() finished: the new connection is ready to take commands.
  virtual void path_connected(Path& path, const PathCaps& caps) = 0;
  // The current connection failed to connect, or died. `reason` is one phrase.
  virtual void path_down(Path& path, const std::string& reason) = 0;

 protected:
  ~PathListener() = default;
};

class Path {
 public:
  virtual ~Path() = default;

  virtual const std::string& name() const = 0;
  virtual const std::string& uri() const = 0;

  // Starts a new current connection. Any previous one must have been retired
  // with disconnect(). The listener hears path_connected or path_down.
  virtual void connect() = 0;
  // Sends a command on the current connection. Returns false (and never calls
  // the sink) when there is no ready connection.
  virtual bool submit(const Command& cmd, CommandSink* sink) = 0;
  // Retires the current connection. Commands in flight on it still complete
  // through their sinks, late (the server replied) or with TransportDead (the
  // connection died); it is closed as soon as nothing is in flight on it.
  virtual void disconnect() = 0;
  // Retired connections still open because commands are in flight on them.
  virtual unsigned retired_connections() const = 0;
};

using PathPtr = std::unique_ptr<Path>;

}  // namespace mp
