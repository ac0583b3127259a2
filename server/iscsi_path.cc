// IscsiPath: one iSCSI LU as a Path: its connections (iscsi_conn.h), connect, submit and split,
// retire, and abandoned writes waiting for a LUN RESET (limbo).
//
// Auto-reconnect is off: a dead context is dead, and the engine reconnects
// the path with its own back-off, through connect(). Everything runs holding
// the loop lock (server/loop_lock.h), which serialises every libiscsi call:
// handlers on the loop thread, and submit() also on an nbdkit worker that
// took the lock. The callback rules are in iscsi_conn.h.
#include "server/iscsi_path.h"

#include <iscsi/iscsi.h>

#include <algorithm>
#include <asio/post.hpp>
#include <cerrno>
#include <functional>

#include "server/iscsi_conn.h"
#include "server/loop_lock.h"

namespace mp {

namespace {

constexpr const char* kInitiator = "iqn.2026-11.org.nbd-multipath:initiator";

// Deterministic per path name, so that a path's reconnects reinstate its own
// session and two paths to one target never take each other's.
std::uint32_t isid_qualifier(const std::string& name) {
  return static_cast<std::uint32_t>(std::hash<std::string>{}(name)) & 0xffffff;
}

}  // namespace

IscsiPath::IscsiPath(asio::io_context& io, config::Path cfg, PathListener& listener,
                     std::chrono::milliseconds abort_timeout)
    : io_(io), cfg_(std::move(cfg)), listener_(listener), abort_timeout_(abort_timeout) {}

IscsiPath::~IscsiPath() {
  for (auto& c : conns_.take_all()) {
    c->owner = nullptr;
    c->close_now();
  }
  for (Cmd* c : limbo_) delete c;
}

unsigned IscsiPath::retired_connections() const {
  return conns_.retired_count();
}

void IscsiPath::connect() {
  disconnect();
  auto c = std::make_shared<Conn>(this);
  conns_.start(c);
  std::string err;
  c->ctx = iscsi_create_context(kInitiator);
  iscsi_url* url = nullptr;
  if (!c->ctx) {
    err = "cannot create a libiscsi context";
  } else if (!(url = iscsi_parse_full_url(c->ctx, cfg_.uri.c_str()))) {
    err = std::string("bad iSCSI URI: ") + iscsi_get_error(c->ctx);
  } else {
    lun_ = url->lun;
    iscsi_set_noautoreconnect(c->ctx, 1);
    iscsi_set_isid_random(c->ctx, isid_qualifier(cfg_.name), 0);
    iscsi_set_session_type(c->ctx, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(c->ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    iscsi_set_targetname(c->ctx, url->target);
    const std::string user = cfg_.chap_user.empty() ? url->user : cfg_.chap_user;
    const std::string secret = cfg_.chap_user.empty() ? url->passwd : cfg_.chap_secret;
    if (!user.empty()) iscsi_set_initiator_username_pwd(c->ctx, user.c_str(), secret.c_str());
    if (iscsi_connect_async(c->ctx, url->portal, Conn::on_connect, c.get()) != 0)
      err = std::string("connect failed: ") + iscsi_get_error(c->ctx);
  }
  if (url) iscsi_destroy_url(url);
  if (!err.empty()) {
    c->phase = Conn::Phase::Dead;
    post_locked(io_, [c, err] {
      if (c->owner && c->owner->conns_.is_current(c)) c->owner->listener_.path_down(*c->owner, err);
    });
    return;
  }
  c->after_io();
}

void IscsiPath::conn_ready(Conn& c) {
  if (!conns_.is_current(c)) return;
  caps_ = c.setup.caps;
  caps_.can_flush = caps_.can_fua = caps_.can_zero = true;
  listener_.path_connected(*this, caps_);
}

void IscsiPath::conn_dead(Conn& c, const std::string& reason) {
  if (conns_.is_current(c)) listener_.path_down(*this, reason);
}

void IscsiPath::resolve_limbo() {
  auto all = std::move(limbo_);
  limbo_.clear();
  for (Cmd* c : all) {
    c->result = PathResult::RemoteError;
    c->err = ECANCELED;
    finish(c);
  }
}

void IscsiPath::finish(Cmd* c) {
  CommandSink* sink = c->sink;
  c->sink = nullptr;
  PathResult r = c->result;
  int err = c->err;
  if (SplitJoin* s = c->split) sink = s->add(r, err);
  c->split = nullptr;
  if (c->task && c->conn) {
    c->orphan = true;  // freed when libiscsi calls back, or with the context
    c->conn->orphans.push_back(c);
  } else {
    delete c;
  }
  if (sink) sink->command_done(r, err);
}

void IscsiPath::disconnect() {
  auto c = conns_.retire();
  if (!c) return;
  c->retire();
  // Sinks hear of cancelled commands from the loop, not from inside the
  // caller's disconnect().
  post_locked(io_, [c] { c->after_io(); });
}

bool IscsiPath::submit(const Command& cmd, CommandSink* sink) {
  Conn* c = conns_.current();
  if (!c || c->phase != Conn::Phase::Ready || !c->ctx || cmd.op == Op::Cache) return false;
  const std::uint32_t bs = caps_.min_block;
  if (cmd.offset % bs || cmd.count % bs) return false;  // the plugin refuses these first
  // The largest chunk per command, in blocks.
  std::uint64_t max_blocks = caps_.max_request / bs;
  if (cmd.op == Op::Zero) max_blocks = c->setup.max_ws ? c->setup.max_ws : 0xffff;
  if (cmd.op == Op::Trim) max_blocks = c->setup.max_unmap ? c->setup.max_unmap : 0xffff;
  std::uint64_t blocks = cmd.count / bs;
  std::uint64_t lba = cmd.offset / bs;
  if (blocks == 0 && cmd.op != Op::Flush) {
    // Nothing to do, and WRITE SAME or UNMAP of 0 blocks would mean "to the end".
    auto* x = new Cmd{c, sink, nullptr, c->next_id++, cmd.op, lba, 0, cmd.flags, nullptr};
    c->done.push_back(x);
    post_locked(io_, [self = c->shared_from_this()] { self->after_io(); });
    return true;
  }
  std::uint32_t n =
      cmd.op == Op::Flush ? 1 : static_cast<std::uint32_t>((blocks + max_blocks - 1) / max_blocks);
  if (n == 0) n = 1;
  auto send_part = [&](std::uint32_t i, CommandSink* part_sink, SplitJoin* join, int*) {
    std::uint64_t first = i * max_blocks;
    auto len = static_cast<std::uint32_t>(std::min<std::uint64_t>(max_blocks, blocks - first));
    auto* x = new Cmd{c,
                      part_sink,
                      join,
                      c->next_id++,
                      cmd.op,
                      lba + first,
                      len,
                      cmd.flags,
                      cmd.data ? cmd.data + first * bs : nullptr};
    if (!c->issue(x)) {
      delete x;
      return false;
    }
    c->inflight.emplace(x->id, x);
    return true;
  };
  if (!send_in_parts(n, sink, send_part)) return false;
  c->send_queued();
  c->arm();
  return true;
}

}  // namespace mp
