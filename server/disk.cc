// The disk's identity and capability rules (see disk.h).
#include "server/disk.h"

#include <algorithm>

#include "server/path_factory.h"

namespace mp {

namespace {

std::string describe(bool has, const std::string& text) {
  return has ? "export description " + config::quote(text) : std::string("no export description");
}

// Start-up and reconnect ask the same question of the description: an NBD
// path must tell the same one as the disk, "none" included.
bool same_description(const PathCaps& disk, const PathCaps& caps) {
  return caps.has_description == disk.has_description && caps.description == disk.description;
}

}  // namespace

DiskBuilder::DiskBuilder(const config::Config& cfg) {
  disk_.identity = cfg.identity;
  if (!disk_.identity.empty()) identity_from_ = "the config's identity:";
  disk_.has_description = !cfg.export_description.empty();
  disk_.description = cfg.export_description;
  if (disk_.has_description)
    description_from_ = "the config's export-description: is " + config::quote(disk_.description);
}

std::string DiskBuilder::add(const std::string& name, const PathCaps& k) {
  PathCaps& d = disk_;
  if (!k.identity.empty()) {
    if (d.identity.empty()) {
      d.identity = k.identity;
      identity_from_ = "path " + name;
    } else if (k.identity != d.identity) {
      return "path " + name + " reaches LU " + k.identity + " but " + identity_from_ +
             " names LU " + d.identity +
             ": every path must reach the same LU (check the target and LUN in the URI, or the "
             "identity: in the config)";
    }
  }
  if (k.has_export_name) {
    if (!d.has_export_name) {
      d.has_export_name = true;
      d.export_name = k.export_name;
      export_from_ = name;
    } else if (k.export_name != d.export_name) {
      return "path " + name + " has export name '" + k.export_name + "' but path " + export_from_ +
             " has '" + d.export_name + "': every NBD path must name the same export";
    }
    if (description_from_.empty()) {
      description_from_ = "path " + name + " has " + describe(k.has_description, k.description);
      d.has_description = k.has_description;
      d.description = k.description;
    } else if (!same_description(d, k)) {
      return "path " + name + " has " + describe(k.has_description, k.description) + " but " +
             description_from_ +
             ": every NBD path must serve the same disk (check the URIs and the servers, or the "
             "export-description: in the config)";
    }
  }
  if (first_.empty()) {
    // The first path's capabilities, under the names merged above.
    PathCaps named = std::move(d);
    d = k;
    d.identity = std::move(named.identity);
    d.has_export_name = named.has_export_name;
    d.export_name = std::move(named.export_name);
    d.has_description = named.has_description;
    d.description = std::move(named.description);
    first_ = name;
    return "";
  }
  if (k.size != d.size)
    return "path " + name + " has size " + std::to_string(k.size) + " but path " + first_ +
           " has size " + std::to_string(d.size) + ": every path must reach the same disk";
  d.read_only |= k.read_only;
  d.can_flush &= k.can_flush;
  d.can_fua &= k.can_fua;
  d.can_trim &= k.can_trim;
  d.can_zero &= k.can_zero;
  d.can_fast_zero &= k.can_fast_zero;
  d.can_cache &= k.can_cache;
  d.can_multi_conn &= k.can_multi_conn;
  d.is_rotational |= k.is_rotational;
  d.min_block = std::max(d.min_block, k.min_block);
  d.pref_block = std::max(d.pref_block, k.pref_block);
  d.max_request = std::min(d.max_request, k.max_request);
  return "";
}

std::string probe_disk(const config::Config& cfg,
                       const std::function<void(const std::string&)>& unreachable, PathCaps* disk) {
  DiskBuilder b(cfg);
  for (const auto& p : cfg.paths) {
    PathCaps k;
    std::string err;
    if (!probe_path(p, cfg.timeouts.connect, &k, &err)) {
      unreachable("path " + p.name + " (" + config::redacted_uri(p.uri) +
                  ") is unreachable at start-up: " + err);
      continue;
    }
    if (std::string why = b.add(p.name, k); !why.empty()) return why;
  }
  if (b.empty()) return "no path is reachable: start at least one upstream server, or fix the URIs";
  *disk = b.disk();
  return "";
}

std::string refusal(const PathCaps& disk, const PathCaps& caps) {
  if (caps.size != disk.size)
    return "size " + std::to_string(caps.size) + " differs from the disk's size " +
           std::to_string(disk.size);
  if (caps.read_only && !disk.read_only) return "it is read-only but the disk is writable";
  if ((disk.can_flush && !caps.can_flush) || (disk.can_fua && !caps.can_fua) ||
      (disk.can_trim && !caps.can_trim) || (disk.can_zero && !caps.can_zero) ||
      (disk.can_fast_zero && !caps.can_fast_zero) || (disk.can_cache && !caps.can_cache))
    return "it lacks a capability (flush, FUA, trim, zero, fast-zero or cache) the disk "
           "advertises";
  if (caps.min_block > disk.min_block)
    return "its block size " + std::to_string(caps.min_block) +
           " is larger than the disk's block size " + std::to_string(disk.min_block);
  if (!caps.identity.empty() && !disk.identity.empty() && caps.identity != disk.identity)
    return "its LU identifier " + caps.identity + " differs from the disk's " + disk.identity +
           ": it reaches another LU";
  if (caps.has_export_name && disk.has_export_name && caps.export_name != disk.export_name)
    return "its export name '" + caps.export_name + "' differs from the disk's '" +
           disk.export_name + "'";
  // Once the disk knows its NBD description (from a path, or pinned), every
  // NBD path must tell the same one.
  if (caps.has_export_name && (disk.has_export_name || disk.has_description) &&
      !same_description(disk, caps)) {
    auto shown = [](const PathCaps& c) {
      return c.has_description ? config::quote(c.description) : std::string("none");
    };
    return "its export description " + shown(caps) + " differs from the disk's " + shown(disk) +
           ": it may serve another disk";
  }
  return "";
}

void adopt_identity(PathCaps& disk, const PathCaps& caps) {
  if (disk.identity.empty()) disk.identity = caps.identity;
  if (caps.has_export_name && !disk.has_export_name) {
    disk.has_export_name = true;
    disk.export_name = caps.export_name;
    disk.has_description = caps.has_description;  // the pinned one, if any (checked by refusal)
    disk.description = caps.description;
  }
}

}  // namespace mp
