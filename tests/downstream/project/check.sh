#!/usr/bin/env bash
# Run inside a copy of project/, with the venv holding bindlab's wheel first on PATH.
set -euo pipefail
python -c 'import harness, bindlab; assert harness.WHO == "downstream", harness.__file__; print("import harness ->", harness.__file__); print("bindlab", bindlab.__version__, "from", bindlab.__file__)'
out=$(python -m pytest -q -rA 2>&1) || { echo "$out"; echo "downstream: pytest failed" >&2; exit 1; }
echo "$out" | tail -n 12
echo "$out" | grep -qF "bl_scenarios/split.toml::flow[tcp 198.18.0.1:40000 -> 192.0.2.10:80]" \
    || { echo "downstream: the opted-in scenario file was not collected" >&2; exit 1; }
if echo "$out" | grep -q "foo.toml"; then echo "downstream: scenarios/foo.toml was collected" >&2; exit 1; fi
echo "$out" | grep -Eq "^5 passed, 1 deselected" \
    || { echo "downstream: expected 5 passed, 1 deselected (scale)" >&2; exit 1; }
bindlab rfc -q -f json -o rfc.json || { echo "downstream: bindlab rfc failed" >&2; exit 1; }
passes=$(python -c 'import json; d = json.load(open("rfc.json")); print(sum(r["status"] == "pass" for s in d["scenarios"] for r in s["rows"]))')
echo "bindlab rfc from the wheel: $passes passing rows"
[ "$passes" -ge 42 ] || { echo "downstream: fewer than 42 passing rfc rows" >&2; exit 1; }
