# Shared by benches/restart.sh and benches/catchup.sh; sourced, never run, with
# the caller's name: `. bins.sh NAME`. Finds the Cairn and cairn-bench binaries
# (CAIRN_BIN, CAIRN_BENCH_BIN, else release then debug builds in
# CARGO_TARGET_DIR, default ~/.cache/cairn/target), exits with a hint when one
# is missing, exports CAIRN_BIN and warns about a debug build.
bins_caller=${1:?bins.sh needs the name of the script that sources it}
target_dir=${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}
first_exe() { local f; for f in "$@"; do [ -x "$f" ] && { echo "$f"; return 0; }; done; return 1; }
cairn_bin=${CAIRN_BIN:-$(first_exe "$target_dir/release/cairn" "$target_dir/debug/cairn" || true)}
bench_bin=${CAIRN_BENCH_BIN:-$(first_exe "$target_dir/release/cairn-bench" "$target_dir/debug/cairn-bench" || true)}
[ -n "$cairn_bin" ] && [ -x "$cairn_bin" ] ||
  { echo "$bins_caller: no Cairn binary (cargo build --release -p cairn-server --bin cairn; or set CAIRN_BIN)" >&2; exit 1; }
[ -n "$bench_bin" ] && [ -x "$bench_bin" ] ||
  { echo "$bins_caller: no cairn-bench binary (cargo build --release -p cairn-bench; or set CAIRN_BENCH_BIN)" >&2; exit 1; }
export CAIRN_BIN=$cairn_bin
case "$cairn_bin$bench_bin" in */debug/*) echo "$bins_caller: WARNING: a DEBUG build: the figures mean nothing" >&2 ;; esac
