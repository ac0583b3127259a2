// The plugin's way in: a YAML file or the quick form, never both.
#include "config/config.h"

namespace mp::config {

LoadResult load(const std::string& filename, const QuickArgs& args) {
  if (filename.empty()) return from_quick_args(args);
  if (!args.paths.empty() || !args.options.empty()) {
    LoadResult r;
    r.error = "config=" + filename +
              " cannot be combined with path= or other parameters: put them in the YAML file";
    return r;
  }
  return load_file(filename);
}

}  // namespace mp::config
