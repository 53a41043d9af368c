#!/usr/bin/env bash
# One short VM smoke run: boot Debian's generic kernel (bookworm: 6.1) with virtme-ng, run a
# handful of core scenarios inside it, check that their verdicts came back in the results
# file. Installs what it needs (apt: qemu-system-x86 kmod busybox-static; pip: virtme-ng).
# Exit 0 on success; "SKIP: ..." and exit 0 only when a VM genuinely cannot run here.
#
#   ci/vm-smoke.sh                       results in results/vm-smoke/
#   BINDLAB_VM_SMOKE_KERNEL=/path/bzImage ci/vm-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BINDLAB_VENV:-$PWD/.venv}
PY=$VENV/bin/python
KERNEL=${BINDLAB_VM_SMOKE_KERNEL:-linux-image-amd64}
OUT=${BINDLAB_VM_SMOKE_DIR:-$PWD/results/vm-smoke}
SUBSET="tcp_specific or udp_specific or conflict_without_reuse or closed_port"
EXPECTED_TESTS=8

say() { printf '# vm-smoke: %s\n' "$*"; }
skip() { printf 'SKIP: vm-smoke: %s\n' "$*"; exit 0; }
fail() { printf 'FAIL: vm-smoke: %s\n' "$*" >&2; exit 1; }

[ "$(uname -m)" = x86_64 ] || skip "bindlab vm boots x86_64 kernels; this is $(uname -m)"
[ "$(id -u)" -eq 0 ] || skip "not root: cannot install qemu, and the guest must run the suite as root"
[ -x "$PY" ] || fail "no $PY: run ci/run setup first"

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v busybox >/dev/null || missing+=(busybox-static)
command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || missing+=(kmod)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || skip "no apt-get to install ${missing[*]}"
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || true
    for p in "${missing[@]}"; do
        apt-cache show "$p" >/dev/null 2>&1 || skip "apt has no package $p here"
    done
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
        fail "apt-get install ${missing[*]} failed"
fi
if ! "$PY" -c 'import virtme_ng' 2>/dev/null; then
    say "pip install virtme-ng"
    "$VENV/bin/pip" install -q --disable-pip-version-check virtme-ng || fail "pip install virtme-ng failed"
fi
if [[ $KERNEL == linux-image-* ]] && ! apt-cache show "$KERNEL" >/dev/null 2>&1; then
    apt-get update -q >/dev/null || true
    apt-cache show "$KERNEL" >/dev/null 2>&1 ||
        skip "apt knows no package $KERNEL (not a Debian system?); set BINDLAB_VM_SMOKE_KERNEL=/path/to/bzImage"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
say "bindlab vm --kernel $KERNEL -- pytest scenarios/test_core_dispatch.py -k '$SUBSET'"
start=$(date +%s)
rc=0
"$PY" -m bindlab.vm.boot --kernel "$KERNEL" --timeout 900 --results-dir "$OUT" -- \
    pytest scenarios/test_core_dispatch.py -q -k "$SUBSET" || rc=$?
say "vm run took $(($(date +%s) - start)) s, exit $rc"
[ "$rc" -eq 0 ] || fail "bindlab vm exited $rc (see $OUT/*.console.log and *.vm.json)"

"$PY" - "$OUT" "$EXPECTED_TESTS" <<'EOF' || fail "results check failed"
import glob, sys
from bindlab.results import Results

out, expected = sys.argv[1], int(sys.argv[2])
files = [f for f in glob.glob(f"{out}/*.json") if not f.endswith(".vm.json")]
if len(files) != 1:
    sys.exit(f"expected one results file in {out}, found {files}")
res = Results.load(files[0])
tests = res.tests
bad = {k: t.outcome for k, t in tests.items() if t.outcome != "passed"}
verdicts = sum(len(t.verdicts) for t in tests.values())
if len(tests) != expected or bad or verdicts == 0:
    sys.exit(f"{files[0]}: {len(tests)} tests (want {expected}), not passed: {bad}, {verdicts} verdicts")
vm = res.kernel.get("vm", {})
print(f"# vm-smoke: {res.kernel['release']} ({vm.get('accel')}, {vm.get('fs')}, boot "
      f"{vm.get('boot_seconds')} s): {len(tests)} passed, {verdicts} verdicts in {files[0]}")
EOF
