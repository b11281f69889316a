# Shell helpers shared by stack.sh and registry/registry.sh (sourced; the caller defines log, die, HOST).
# shellcheck shell=bash

have() { command -v "$1" >/dev/null 2>&1; }

# pids_with_arg PGREP_REGEX EXACT_ARG: live processes one of whose argv entries
# equals EXACT_ARG (zombies have an empty cmdline and never match).
pids_with_arg() {
  local pid
  for pid in $(pgrep -f -- "$1" 2>/dev/null || true); do
    [[ $pid == "$$" ]] && continue
    if tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -Fxq -- "$2"; then
      echo "$pid"
    fi
  done
}

# shellcheck disable=SC2016
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null; }

port_owner() {
  local out
  out=$(ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'users:.*' | head -n1 || true)
  printf '%s' "${out:-unknown process}"
}

# wait_gone SECONDS FUNC: wait until FUNC prints no pids.
wait_gone() {
  local deadline=$((SECONDS + $1))
  while [[ -n $($2) ]]; do
    (( SECONDS < deadline )) || return 1
    sleep 0.2
  done
}

# kill_pids SIGNAL_FIRST GRACE_SECONDS FUNC
kill_pids() {
  local sig=$1 grace=$2 fn=$3 pids
  pids=$($fn)
  [[ -n $pids ]] || return 0
  # shellcheck disable=SC2086
  kill -s "$sig" $pids 2>/dev/null || true
  if ! wait_gone "$grace" "$fn"; then
    pids=$($fn)
    log "still running after ${grace}s, sending SIGKILL to ${pids//$'\n'/ }"
    # shellcheck disable=SC2086
    [[ -n $pids ]] && kill -s KILL $pids 2>/dev/null || true
    wait_gone 15 "$fn" || die "could not kill process(es) ${pids//$'\n'/ }"
  fi
}
