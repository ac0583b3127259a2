#!/usr/bin/env bash
# Fails when a tracked C++ file differs from what clang-format makes of it
# (the repository's .clang-format), and lists the files. The C nbdkit filters
# (container/filters/, tests/sanitizer/) keep nbdkit's own GNU style and are
# not checked. Fix with: clang-format -i FILE...
set -euo pipefail
cd "$(dirname "$0")/.."
bad=()
while IFS= read -r -d '' f; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files -z '*.cc' '*.h')
if ((${#bad[@]})); then
  printf 'check-format.sh: not clang-formatted: %s\n' "${bad[@]}" >&2
  echo "check-format.sh: run clang-format -i on the files above" >&2
  exit 1
fi
echo "check-format.sh: $(git ls-files '*.cc' '*.h' | wc -l) C++ files clang-formatted"
