// The disk's identity and capability rules (server/disk.h): the same rules
// at start-up (DiskBuilder) and at reconnect (refusal).
#include <doctest/doctest.h>

#include "server/disk.h"

namespace {

mp::PathCaps nbd(std::uint64_t size, const char* description = nullptr) {
  mp::PathCaps c;
  c.size = size;
  c.can_flush = c.can_fua = c.can_trim = c.can_zero = true;
  c.has_export_name = true;
  if (description) {
    c.has_description = true;
    c.description = description;
  }
  return c;
}

mp::PathCaps lu(std::uint64_t size, const char* id) {
  mp::PathCaps c;
  c.size = size;
  c.can_flush = true;
  c.min_block = 512;
  c.identity = id;
  return c;
}

bool has(const std::string& text, const char* part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("DiskBuilder: the first path names the disk, the others must agree") {
  mp::config::Config cfg;
  mp::DiskBuilder b(cfg);
  CHECK(b.empty());
  CHECK(b.add("p1", nbd(1 << 20, "disk-1")) == "");
  mp::PathCaps other = nbd(1 << 20, "disk-1");
  other.can_trim = false;
  other.min_block = 512;
  CHECK(b.add("p2", other) == "");
  CHECK_FALSE(b.empty());
  // Capabilities: what every path can do; the largest block size.
  CHECK(b.disk().can_flush);
  CHECK_FALSE(b.disk().can_trim);
  CHECK(b.disk().min_block == 512);
  CHECK(b.disk().description == "disk-1");

  std::string size = b.add("p3", nbd(2 << 20, "disk-1"));
  CHECK(has(size, "path p3 has size 2097152 but path p1 has size 1048576"));
  std::string desc = b.add("p4", nbd(1 << 20, "disk-2"));
  CHECK(has(desc,
            "path p4 has export description 'disk-2' but path p1 has export description "
            "'disk-1'"));
  CHECK(has(b.add("p5", nbd(1 << 20)), "path p5 has no export description"));
}

TEST_CASE("DiskBuilder: pinned identity and description win over the first path") {
  mp::config::Config cfg;
  cfg.identity = "naa.600";
  cfg.export_description = "pinned";
  mp::DiskBuilder b(cfg);
  CHECK(has(b.add("lu1", lu(1 << 20, "naa.700")), "the config's identity: names LU naa.600"));
  CHECK(b.add("lu2", lu(1 << 20, "naa.600")) == "");
  CHECK(has(b.add("n1", nbd(1 << 20, "first")), "the config's export-description: is 'pinned'"));
  CHECK(b.add("n2", nbd(1 << 20, "pinned")) == "");
  CHECK(b.disk().identity == "naa.600");
  CHECK(b.disk().description == "pinned");
}

TEST_CASE("refusal: a reconnected path must still reach the same disk") {
  mp::PathCaps disk = nbd(1 << 20, "disk-1");
  CHECK(mp::refusal(disk, nbd(1 << 20, "disk-1")) == "");
  CHECK(has(mp::refusal(disk, nbd(2 << 20, "disk-1")), "size 2097152 differs"));
  CHECK(has(mp::refusal(disk, nbd(1 << 20, "disk-2")), "export description 'disk-2' differs"));
  CHECK(has(mp::refusal(disk, nbd(1 << 20)), "export description none differs"));
  mp::PathCaps weaker = nbd(1 << 20, "disk-1");
  weaker.can_fua = false;
  CHECK(has(mp::refusal(disk, weaker), "lacks a capability"));
  mp::PathCaps lu_disk = lu(1 << 20, "naa.600");
  CHECK(has(mp::refusal(lu_disk, lu(1 << 20, "naa.601")), "reaches another LU"));

  // The first NBD path to connect names an iSCSI-started disk's export.
  mp::adopt_identity(lu_disk, nbd(1 << 20, "late"));
  CHECK(lu_disk.has_export_name);
  CHECK(lu_disk.description == "late");
}
