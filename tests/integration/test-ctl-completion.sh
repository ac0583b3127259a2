#!/usr/bin/env bash
# bash completion for nbd-multipath-ctl (ctl/nbd-multipath-ctl.bash): sourced
# into a clean bash, it completes options, every command of `help` (and no
# other), show targets, on|off, reload --dry-run, and path and group names
# asked from a running server through the socket given on the command line.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit
mp_require_ctl
COMPLETION=${MP_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}/ctl/nbd-multipath-ctl.bash
[[ -f $COMPLETION ]] || fail "no completion file at $COMPLETION"
bash -n "$COMPLETION" || fail "$COMPLETION does not parse"

# complete_line WORD...: what completing the last WORD offers (sorted, one a
# line), in a fresh non-interactive bash as a user's shell would run it: no
# errexit, no nounset. The tool is $MP_CTL, as if typed by its path.
complete_line() {
  env -i PATH="$PATH" HOME="$MP_TMP" bash --norc --noprofile -c '
    source "$1" || exit 99
    complete -p nbd-multipath-ctl >/dev/null || exit 98
    shift
    COMP_WORDS=("$@")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="$*"
    COMP_POINT=${#COMP_LINE}
    _nbd_multipath_ctl || exit 97
    printf "%s\n" "${COMPREPLY[@]}" | sort
  ' complete_line "$COMPLETION" "$MP_CTL" "$@"
}

# expect WANT WORD...: the completion of WORD... is exactly WANT (words,
# space-separated).
expect() {
  local want got
  want=$(tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort)
  shift
  got=$(complete_line "$@") || fail "completing '$*' failed (status $?)"
  [[ $got == "$want" ]] ||
    fail "completing '$*': expected [$(echo $want)], got [$(echo $got)]"
}

# Every command `help` lists, and nothing else.
commands=$("$MP_CTL" help | sed -n '/^Commands:/,/^$/s/^  \([a-z-]*\).*/\1/p' | sort -u | tr '\n' ' ')
[[ $commands == *"show "* && $commands == *"switch-group "* ]] || fail "cannot read the commands from help: $commands"
expect "$commands" ""
expect "show switch-group" s
expect "fail fail-queued" fai
expect "paths groups topology stats events config" show ""
expect "topology" show t
expect "" show paths ""
expect "on off" queueing ""
expect "--dry-run" reload --d
expect "--json" --j
expect "--socket" --so
expect "--json --help" fail --
mkdir "$MP_TMP/dir"
: >"$MP_TMP/dir/ctl.sock"
expect "$MP_TMP/dir/ctl.sock" --socket "$MP_TMP/dir/c"
# No server behind the socket: no names, and no error on the terminal.
expect "" -s "$MP_TMP/nothing.sock" fail ""
out=$(complete_line -s "$MP_TMP/nothing.sock" fail "" 2>&1)
[[ -z $out ]] || fail "completing without a server printed: $out"

# Names from a running server, through -s / --socket.
make_image "$MP_TMP/disk.img" 4M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
CTL_SOCK=$MP_TMP/ctl.sock
cat >"$MP_TMP/mp.yaml" <<YAML
paths:
  - { name: alpha, uri: "$(upstream_uri a)", group: fast }
  - { name: beta, uri: "$(upstream_uri b)", group: slow }
groups:
  - { name: fast, priority: 10 }
  - { name: slow, priority: 0 }
durability: { shared-cache: true }
control: { socket: "$CTL_SOCK" }
YAML
start_multipath mp config="$MP_TMP/mp.yaml"
wait_for "both paths active" 10 ctl_paths_active "$CTL_SOCK" alpha beta
expect "alpha beta" -s "$CTL_SOCK" fail ""
expect "beta" --socket "$CTL_SOCK" --json drain b
expect "alpha" -s "$CTL_SOCK" reinstate al
expect "fast slow" -s "$CTL_SOCK" switch-group ""
expect "" -s "$CTL_SOCK" fail alpha ""

shutdown_multipath mp
