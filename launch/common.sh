# shellcheck shell=bash
# Helpers sourced by the launch/*.sh scripts; not run on its own.
#
# A script sets DRY_RUN=1 (its --dry-run flag) to have `run` print each command, shell-quoted,
# instead of running it.

DRY_RUN="${DRY_RUN:-0}"

# Prints the header comment of script $1 (line 2 up to the first blank line) without the '# '.
usage() {
  awk 'NR == 1 { next } /^$/ { exit } { sub(/^# ?/, ""); print }' "$1"
}

# Stops with a one-line error and exit status 2.
die() {
  echo "error: $*" >&2
  echo "Run with --help to see the flags." >&2
  exit 2
}

# Prints the arguments as one shell command line, quoting only those that need it.
quote_args() {
  local out=() arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=("$arg")
    else
      out+=("${arg@Q}")
    fi
  done
  echo "${out[*]}"
}

# Runs the command, or prints it when DRY_RUN=1.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    quote_args "$@"
  else
    "$@"
  fi
}

# Checks that NAME and ZONE are set (one-line error otherwise) and appends the gcloud flags that
# locate the TPU VM (--zone, and --project when PROJECT is set) to the array named $1.
tpu_target_flags() {
  local -n flags_ref="$1"
  [[ -n "$NAME" ]] || die "--name (or TPU_NAME) is required"
  [[ -n "$ZONE" ]] || die "--zone (or TPU_ZONE) is required"
  flags_ref+=("--zone=$ZONE")
  if [[ -n "$PROJECT" ]]; then
    flags_ref+=("--project=$PROJECT")
  fi
}
