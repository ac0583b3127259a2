# bash completion for nbd-multipath-ctl(8)                  -*- shell-script -*-
#
# Commands, `show` targets and argument kinds come from `nbd-multipath-ctl
# help` (the command table the server uses), read once per shell, so this
# file never lists a command the tool does not know. Path and group names
# come from the server: `--json show paths` / `show groups` over the socket
# the command line names (--socket, --disk, else $NBD_MULTIPATH_CTL), with a
# one-second limit; no server, no names.
# Needs nothing from the bash-completion package.

# _nbd_multipath_ctl_table CTL: fills _nbd_multipath_ctl_usage with the
# usage column of `CTL help` ("show paths", "fail PATH", "reload [--dry-run]").
_nbd_multipath_ctl_table() {
    [[ ${#_nbd_multipath_ctl_usage[@]} -gt 0 ]] && return 0
    local line in=
    _nbd_multipath_ctl_usage=()
    while IFS= read -r line; do
        if [[ $line == Commands: ]]; then
            in=1
        elif [[ -n $in && $line == "  "[![:space:]]* ]]; then
            line=${line#  }
            _nbd_multipath_ctl_usage+=("${line%%  *}")
        elif [[ -n $in ]]; then
            break
        fi
    done < <("$1" help 2>/dev/null)
}

# _nbd_multipath_ctl_names CTL WHAT CONN...: the names in `CTL CONN --json
# show WHAT` (the "name" of each top-level object).
_nbd_multipath_ctl_names() {
    local ctl=$1 what=$2
    shift 2
    "$ctl" "$@" --timeout 1 --json show "$what" 2>/dev/null |
        sed -n 's/^    "name": "\(.*\)",\{0,1\}$/\1/p'
}

_nbd_multipath_ctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    local ctl=${COMP_WORDS[0]}
    COMPREPLY=()

    case $prev in
    -s | --socket)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
        return 0
        ;;
    -d | --disk)
        local d names=()
        for d in /run/nbd-multipath/*/ctl.sock; do
            [[ -S $d ]] && d=${d%/ctl.sock} && names+=("${d##*/}")
        done
        COMPREPLY=($(compgen -W "${names[*]}" -- "$cur"))
        return 0
        ;;
    --timeout)
        return 0
        ;;
    esac

    # The options before the command, kept for asking the server; then the
    # command's words.
    local i w conn=() words=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if ((${#words[@]} == 0)); then
            case $w in
            -s | --socket | -d | --disk | --timeout)
                ((i + 1 < COMP_CWORD)) && [[ $w != --timeout ]] && conn+=("$w" "${COMP_WORDS[i + 1]}")
                ((i++))
                continue
                ;;
            -*) continue ;;
            esac
        fi
        [[ $w == --json ]] || words+=("$w")
    done

    if [[ $cur == -* ]]; then
        if ((${#words[@]} == 0)); then
            COMPREPLY=($(compgen -W "-s --socket -d --disk --json --timeout -h --help --version" -- "$cur"))
        else
            local extra="--json --help"
            [[ ${words[0]} == reload ]] && extra+=" --dry-run"
            COMPREPLY=($(compgen -W "$extra" -- "$cur"))
        fi
        return 0
    fi

    _nbd_multipath_ctl_table "$ctl"
    local u cmds=() shows=() spec=
    for u in "${_nbd_multipath_ctl_usage[@]}"; do
        w=${u%% *}
        [[ " ${cmds[*]} " == *" $w "* ]] || cmds+=("$w")
        if [[ $w == show ]]; then
            shows+=("${u#show }")
        elif ((${#words[@]})) && [[ $w == "${words[0]}" && $u == *" "* ]]; then
            spec=${u#* }
        fi
    done

    if ((${#words[@]} == 0)); then
        COMPREPLY=($(compgen -W "${cmds[*]}" -- "$cur"))
    elif [[ ${words[0]} == show ]]; then
        ((${#words[@]} == 1)) && COMPREPLY=($(compgen -W "${shows[*]}" -- "$cur"))
    elif ((${#words[@]} == 1)); then
        case $spec in
        PATH) COMPREPLY=($(compgen -W "$(_nbd_multipath_ctl_names "$ctl" paths "${conn[@]}")" -- "$cur")) ;;
        GROUP) COMPREPLY=($(compgen -W "$(_nbd_multipath_ctl_names "$ctl" groups "${conn[@]}")" -- "$cur")) ;;
        *"|"*) COMPREPLY=($(compgen -W "${spec//|/ }" -- "$cur")) ;;
        esac
    fi
    return 0
}

complete -F _nbd_multipath_ctl nbd-multipath-ctl
