# sh_helpers.sh: what the shell tests (cli.sh, train.sh) share.  Source it
# after `set -uo pipefail` with the kiln binary as $1; it moves to the
# repository root and sets KILN, PY, tmp (removed on exit), out, err, fails.
#   expect CODE "what" -- command...   runs it, output in $out / $err
#   contains FILE TEXT                 TEXT must appear in FILE
#   same_bytes WHAT A B                the two files must be identical
#   finish NAME                        prints the verdict and exits
KILN=$(realpath "$1")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${KILN_PY:-/usr/bin/python3} # KILN_PY: another python3 with numpy (a GPU machine's)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
out="$tmp/stdout"
err="$tmp/stderr"

expect() { # expect CODE DESCRIPTION -- command...
  local want=$1 what=$2
  shift 3
  "$@" >"$out" 2>"$err"
  local got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: $what: exit $got, expected $want"
    sed 's/^/    /' "$err" | tail -n 8
    fails=$((fails + 1))
    return 1
  fi
  echo "ok: $what"
}

contains() { # contains FILE TEXT
  if ! grep -qF -- "$2" "$1"; then
    echo "FAIL: expected '$2' in:"
    sed 's/^/    /' "$1" | tail -n 12
    fails=$((fails + 1))
  fi
}

same_bytes() { # same_bytes WHAT A B: the two files are identical
  if cmp -s "$2" "$3"; then
    echo "ok: $1: bit for bit"
  else
    echo "FAIL: $1: $2 and $3 differ"
    fails=$((fails + 1))
  fi
}

finish() { # finish NAME
  if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
  fi
  echo "all $1 checks passed"
}
