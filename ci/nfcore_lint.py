"""nf-core modules lint for every module, offline.

The one check that needs nf-test (test_snapshot_exists: the .snap file nf-test writes on its first run)
cannot pass here and is reported by name; every other failure fails.
"""
import sys
from pathlib import Path

from nf_core.modules.lint import ModuleLint

NEEDS_NFTEST = {"test_snapshot_exists"}

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
modules = sorted(
    str(p.parent.relative_to(root / "modules" / "scfoundation"))
    for p in (root / "modules" / "scfoundation").rglob("main.nf")
)
bad = 0
for m in modules:
    ml = ModuleLint(str(root), no_pull=True, hide_progress=True)
    ml.lint(module=m, print_results=False)
    fails = [r for r in ml.failed if r.lint_test not in NEEDS_NFTEST]
    skipped = sorted({r.lint_test for r in ml.failed if r.lint_test in NEEDS_NFTEST})
    print(f"{m}: {len(ml.passed)} passed, {len(ml.warned)} warned, {len(fails)} failed; "
          f"not checkable offline: {', '.join(skipped) or 'none'}")
    for r in ml.warned:
        print(f"  WARN {r.lint_test}: {r.message}")
    for r in fails:
        print(f"  FAIL {r.lint_test}: {r.message}")
    bad += len(fails)
if not modules:
    print("no modules found", file=sys.stderr)
    sys.exit(1)
sys.exit(1 if bad else 0)
