#!/usr/bin/env python3
"""Makes skipped tests visible in the test log (`make test-rust`, `make test-go`).

cargo reports a test that skipped itself as passed, and `go test` names skips only with -v;
either way a skip's reason stays out of the log. Two uses:

  test_skips.py rust DIR     lists the skips the Rust tests recorded in DIR (tests/common's
                             skip() writes one "test<TAB>reason" line per skip).
  go test -json ... | test_skips.py go LABEL
                             prints what `go test` prints without -v (each failing test's
                             output, each package's result line), then lists the skipped tests.

Either ends with "N tests skipped:" and a line per skip, or "no tests skipped". It never
fails a run: whether a test may skip is the test's own decision.
"""

import collections
import json
import pathlib
import sys


def summary(label, skips):
    """skips: (test, reason) pairs, in the order seen."""
    skips = list(dict.fromkeys(skips))
    tests = {t for t, _ in skips}
    if not skips:
        print(f"{label}: no tests skipped")
        return
    print(f"{label}: {len(tests)} test{'s' if len(tests) != 1 else ''} skipped:")
    for test, reason in skips:
        print(f"  {test}: {reason}")


def rust(folder):
    skips = []
    for f in sorted(pathlib.Path(folder).glob("*.txt")):
        for line in f.read_text().splitlines():
            test, _, reason = line.partition("\t")
            skips.append((test, reason))
    summary("Rust (cargo test)", sorted(skips))


def go(label):
    # Output lines per (package, test) until the test ends; a failing subtest's lines wait
    # for its parent's end, to be printed under it.
    lines = collections.defaultdict(list)
    children = collections.defaultdict(list)
    skips = []
    for raw in sys.stdin:
        try:
            e = json.loads(raw)
        except ValueError:
            sys.stdout.write(raw)
            continue
        action, test = e.get("Action"), e.get("Test")
        pkg = e.get("Package") or e.get("ImportPath", "")
        if action == "build-output":
            sys.stdout.write(e.get("Output", ""))
        elif action == "output":
            out = e.get("Output", "")
            if test:
                lines[pkg, test].append(out)
            elif out != "PASS\n":
                sys.stdout.write(out)
        elif test and action in ("pass", "fail", "skip"):
            own = [l for l in lines.pop((pkg, test), []) if not l.startswith("=== ")]
            if action == "skip":
                # The reason is the last line logged before the "--- SKIP" line.
                said = [l.strip() for l in own if not l.lstrip().startswith("--- SKIP")]
                skips.append((f"{pkg} {test}", said[-1] if said else "(no reason given)"))
            if action == "fail":
                # The "--- FAIL" line comes after the test's log in the stream; go test prints
                # it first, and a subtest's lines indented under its parent's.
                head = [l for l in own if l.startswith(f"--- FAIL: {test} (")]
                block = head + [l for l in own if l not in head] + children.pop((pkg, test), [])
                if "/" in test:
                    children[pkg, test.rsplit("/", 1)[0]].extend("    " + l for l in block)
                else:
                    sys.stdout.write("".join(block))
            else:
                children.pop((pkg, test), None)
        sys.stdout.flush()
    summary(label, skips)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "rust":
        rust(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "go":
        go(sys.argv[2])
    else:
        sys.exit("usage: test_skips.py rust DIR | test_skips.py go LABEL (go test -json on stdin)")
