# shellcheck shell=bash
# Helpers around mp_workload.py (the integrity workload), sourced by
# functions.sh. The workload runs in the background, tracked like a server.

declare -gA _MP_WL_PID=()

# start_workload NAME URI [mp_workload.py options]
start_workload() {
  local name=$1 uri=$2
  shift 2
  _mp_check_main_shell start_workload
  "$MP_PYTHON" "$MP_SOURCE/tests/integration/mp_workload.py" "$uri" \
    --progress "$MP_TMP/$name.progress" "$@" </dev/null \
    >"$MP_TMP/$name.json" 2>"$MP_TMP/$name.wlog" &
  _MP_WL_PID[$name]=$!
  _mp_track "$!"
  mp_log "started workload '$name' (pid $!)"
}

# workload_progress_over NAME N: the workload completed more than N operations.
workload_progress_over() {
  [[ -s $MP_TMP/$1.progress ]] && (($(<"$MP_TMP/$1.progress") > $2))
}

# wait_workload NAME: waits for it to end; its status is checked by
# assert_workload_clean.
wait_workload() {
  local name=$1
  _mp_check_main_shell wait_workload
  _MP_WL_STATUS=0
  wait "${_MP_WL_PID[$name]:?no workload named $name}" || _MP_WL_STATUS=$?
  cat "$MP_TMP/$name.wlog" >&2
  mp_log "workload '$name': $(<"$MP_TMP/$name.json")"
}

# workload_stat NAME KEY: one number from the workload's JSON report.
workload_stat() {
  "$MP_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "$MP_TMP/$1.json" "$2"
}

# assert_workload_clean NAME: no client-visible error, no wrong data, and
# every block verified at the end.
assert_workload_clean() {
  local name=$1 errors wrong verified
  [[ -s $MP_TMP/$name.json ]] || fail "workload '$name' wrote no report (status $_MP_WL_STATUS)"
  errors=$(workload_stat "$name" errors)
  wrong=$(workload_stat "$name" wrong)
  verified=$(workload_stat "$name" verified)
  ((errors == 0)) || fail "workload '$name': $errors client-visible errors"
  ((wrong == 0)) || fail "workload '$name': $wrong reads returned wrong data"
  ((verified > 0)) || fail "workload '$name' verified no block"
  ((_MP_WL_STATUS == 0)) || fail "workload '$name' exited with status $_MP_WL_STATUS"
}
