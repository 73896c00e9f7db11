"""nf-core modules lint for every module, offline.

Checks that need a real `nextflow inspect` (docker_tag, singularity_tag) or nf-test snapshots
(test_snapshot_exists) cannot pass here and are reported, by name, as skipped; every other failure fails.
"""
import sys
from pathlib import Path

from nf_core.modules.lint import ModuleLint

NEEDS_NEXTFLOW_OR_NFTEST = {"docker_tag", "singularity_tag", "test_snapshot_exists"}

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
modules = sorted(
    str(p.parent.relative_to(root / "modules" / "scfoundation"))
    for p in (root / "modules" / "scfoundation").glob("*/*/main.nf")
)
bad = 0
for m in modules:
    ml = ModuleLint(str(root), no_pull=True, hide_progress=True)
    ml.lint(module=m, print_results=False)
    fails = [r for r in ml.failed if r.lint_test not in NEEDS_NEXTFLOW_OR_NFTEST]
    skipped = sorted({r.lint_test for r in ml.failed if r.lint_test in NEEDS_NEXTFLOW_OR_NFTEST})
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
