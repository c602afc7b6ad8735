"""Show that each test docs/claims.md names fails when the feature behind its claim is taken out.

    python scripts/revert_claims.py                 # every revert in tests/claim_reverts.py
    python scripts/revert_claims.py --tier fast      # only those whose tests are all fast
    python scripts/revert_claims.py -k masking       # only reverts whose name contains a word (-k again: or another)
    python scripts/revert_claims.py --list           # what would run, and nothing else

Each revert replaces one piece of source (found exactly once) with a version lacking the feature,
runs the tests it names in one pytest process, and puts the file back whatever happens. A revert is
caught when every test it names fails; one test that passes is a claim without a test that can fail.
The integration tier's reverts take most of an hour on 2 cores: run them before a release, not per change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.claim_reverts import REVERTS, Revert  # noqa: E402


def integration_tests() -> set[str]:
    """The integration tier's test functions, as pytest collects them."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "--collect-only", "-m", "integration"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return {line.split("[")[0].split("@")[0] for line in proc.stdout.splitlines() if "::" in line}


def outcomes(junit: Path) -> dict[str, tuple[bool, str]]:
    """Test function id -> (whether every instance of it passed, the first failure's message):
    a parametrised test fails if one of its cases does."""
    found: dict[str, tuple[bool, str]] = {}
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "").replace(".", "/") + ".py"
        key = f"{module}::{case.get('name', '').split('[')[0].split('@')[0]}"
        bad = [child for child in case if child.tag in ("failure", "error", "skipped")]
        ok, said = found.get(key, (True, ""))
        message = " ".join((bad[0].get("message") or bad[0].tag).split())[:160] if bad else ""
        found[key] = (ok and not bad, said or message)
    return found


def machine_has(needs: str) -> bool:
    """Whether this machine has the hardware a revert needs to change anything."""
    if needs == "avx512bf16":
        import bitsandbytes.nn.modules as bnb_modules

        return bnb_modules.has_avx512bf16()
    return not needs


def run(revert: Revert, timeout: int) -> dict:
    if not machine_has(revert.needs):
        return {"name": revert.name, "caught": None, "why": f"not run: this machine lacks {revert.needs}"}
    path = REPO / revert.file
    original = path.read_bytes()
    text = original.decode()
    found = text.count(revert.old)
    if found != 1:
        return {"name": revert.name, "caught": False, "why": f"{revert.file}: the piece occurs {found} times, not once"}
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        start = time.monotonic()
        try:
            path.write_text(text.replace(revert.old, revert.new))
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:randomly", "-p", "no:cacheprovider",
                 "-o", "addopts=", f"--junitxml={junit}", *revert.tests],
                cwd=REPO, capture_output=True, text=True, timeout=timeout,
                env={**os.environ, "PYTHONPATH": str(REPO)},  # this checkout's sweep, in every process the tests start
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"name": revert.name, "caught": False, "why": f"pytest ran past {timeout} s"}
        finally:
            path.write_bytes(original)
        seconds = round(time.monotonic() - start, 1)
        if not junit.exists():
            return {"name": revert.name, "caught": False, "why": proc.stdout[-1500:] + proc.stderr[-1500:]}
        results = outcomes(junit)
    missing = [t for t in revert.tests if t not in results]
    survived = [t for t in revert.tests if t in results and results[t][0]]
    why = ", ".join([f"{t} passed" for t in survived] + [f"{t} did not run" for t in missing])
    failed = {t: results[t][1] for t in revert.tests if t in results and not results[t][0]}
    return {
        "name": revert.name,
        "caught": not survived and not missing,
        "why": why,
        "seconds": seconds,
        "failed": failed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=["fast", "integration", "all"], default="all")
    parser.add_argument("-k", dest="words", action="append", help="only reverts whose name contains this (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the reverts and exit")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds for one revert's pytest")
    args = parser.parse_args()
    slow = integration_tests()
    chosen = [
        r
        for r in REVERTS
        if (not args.words or any(word in r.name for word in args.words))
        and (args.tier == "all" or (args.tier == "integration") == any(t in slow for t in r.tests))
    ]
    if args.list:
        for r in chosen:
            print(f"{r.name}: {r.file} -> {', '.join(t.split('::')[1] for t in r.tests)}")
        return 0
    results = []
    for r in chosen:
        result = run(r, args.timeout)
        results.append(result)
        status = {True: "caught", False: "MISSED", None: "skipped"}[result["caught"]]
        print(f"{status:7} {r.name} ({result.get('seconds', '-')} s) {result['why']}", flush=True)
        for test, message in result.get("failed", {}).items():
            print(f"        {test.split('::')[1]}: {message}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    missed = [r["name"] for r in results if r["caught"] is False]
    caught = sum(r["caught"] is True for r in results)
    print(f"{caught} of {len(results)} reverts caught" + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
