# Sourced by the check scripts: starts `runlens serve` in the background and learns its
# address, as a user would, from the line it prints.
#
#   serve_start DIR [serve arguments…]
#
# Runs "$RUNLENS_BIN" serve with the arguments, stdout in DIR/serve.out and stderr in
# DIR/serve.err; sets `pid` (the process) and `addr` (the runlens.v1 address) once it says
# "listening on", or prints its stderr and exits 1 if it has not within 10 s. The caller
# kills "$pid" (its EXIT trap).
serve_start() {
  local dir=$1
  shift
  "$RUNLENS_BIN" serve "$@" >"$dir/serve.out" 2>"$dir/serve.err" &
  pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$dir/serve.out" 2>/dev/null && break
    sleep 0.1
  done
  addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$dir/serve.out")
  [ -n "$addr" ] || { echo "runlens serve did not start:"; cat "$dir/serve.err"; exit 1; }
}
