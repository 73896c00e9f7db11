#!/usr/bin/env python3
"""What ci/galaxy.sh does through the Galaxy API, as an administrator would (standard library only).

  wait URL --pid PID --timeout S        wait until the server answers /api/version (fails early if PID exits)
  user URL --bootstrap-key-env V --email E --password-env V   create a user (an admin through admin_users)
                                        with the bootstrap key and print the user's new API key; the bootstrap
                                        key itself cannot run tools
  install-model URL --key-env V --model NAME@VERSION --display-name N --registry FILE
                                        run the weights data manager (POST /api/tools), wait for its job,
                                        reload the scfoundation_models data table and check the new row: the
                                        sha256 the registry pins, a file at the path with that sha256, and the
                                        model offered by the embedding tool's form
  check-tests URL --key-env V --tool ID... --results JSON...
                                        every <test> of those tools (per /api/tools/tests_summary) has a
                                        result, and all passed; prints 'N passed, N failed' and each failure
"""

import argparse
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request


def die(msg):
    print(f"galaxy_admin: {msg}", file=sys.stderr)
    sys.exit(1)


def call(url, path, key=None, method="GET", body=None, timeout=120):
    headers = {"content-type": "application/json"}
    if key:
        headers["x-api-key"] = key
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url.rstrip('/')}/api/{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        die(f"{method} /api/{path}: HTTP {e.code}: {e.read()[:2000].decode(errors='replace')}")
    return json.loads(raw) if raw else None


def env(name):
    value = os.environ.get(name)
    if not value:
        die(f"environment variable {name} is not set")
    return value


def cmd_wait(a):
    deadline = time.monotonic() + a.timeout
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        if a.pid:
            try:
                os.kill(a.pid, 0)
            except ProcessLookupError:
                die(f"the Galaxy server (pid {a.pid}) exited during start-up")
        try:
            with urllib.request.urlopen(f"{a.url.rstrip('/')}/api/version", timeout=10) as r:
                v = json.loads(r.read())
            print(f"Galaxy {v['version_major']}.{v.get('version_minor', '')} answers at {a.url} "
                  f"after {time.monotonic() - t0:.0f}s")
            return
        except (OSError, ValueError):
            time.sleep(2)
    die(f"the Galaxy server did not answer at {a.url} within {a.timeout}s")


def cmd_user(a):
    bootstrap = env(a.bootstrap_key_env)
    user = call(a.url, "users", bootstrap, "POST",
                {"username": a.email.split("@")[0], "email": a.email, "password": env(a.password_env)})
    key = call(a.url, f"users/{user['id']}/api_key", bootstrap, "POST")
    me = call(a.url, "users/current", key)
    if not me.get("is_admin"):
        die(f"user {a.email} is not an admin (admin_users in galaxy.yml)")
    print(key)


def wait_job(url, key, job_id, timeout):
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        job = call(url, f"jobs/{job_id}?full=true", key)
        state = job["state"]
        if state in ("ok", "error", "failed", "deleted", "deleting", "stopped"):
            return job
        time.sleep(2)
    die(f"job {job_id} not finished after {timeout}s (state {state})")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cmd_install_model(a):
    key = env(a.key_env)
    name, _, version = a.model.partition("@")
    with open(a.registry) as f:
        reg = json.load(f)
    entries = [m for m in (reg["models"] if isinstance(reg, dict) else reg)
               if m["name"] == name and m["version"] == version]
    if not entries:
        die(f"{a.model} is not in {a.registry}")
    expected_sha = entries[0]["files"][0]["sha256"]

    t0 = time.monotonic()
    history = call(a.url, "histories", key, "POST", {"name": "scFoundation weights (data manager)"})
    run = call(a.url, "tools", key, "POST", {
        "tool_id": "data_manager_scfoundation_weights",
        "history_id": history["id"],
        "inputs": {"model_id": a.model, "display_name": a.display_name, "source|kind": "registry"},
    })
    job = wait_job(a.url, key, run["jobs"][0]["id"], a.timeout)
    if job["state"] != "ok":
        die(f"the data manager job ended in state {job['state']}\n--- stdout\n{job.get('tool_stdout')}\n"
            f"--- stderr\n{job.get('tool_stderr')}")
    print(f"data manager job ok ({time.monotonic() - t0:.0f}s): {job.get('tool_stdout', '').strip()}")

    # As an admin does after installing reference data: reload the table, then look at it.
    table = call(a.url, "tool_data/scfoundation_models/reload", key)
    cols = table["columns"]
    rows = [dict(zip(cols, r)) for r in table["fields"]]
    row = next((r for r in rows if r["value"] == a.model and r["name"] == a.display_name), None)
    if row is None:
        die(f"no row for {a.model} ('{a.display_name}') in scfoundation_models after the data manager: {rows}")
    if row["sha256"] != expected_sha:
        die(f"table row sha256 {row['sha256']} != registry sha256 {expected_sha}")
    if not os.path.isabs(row["path"]) or not os.path.isfile(row["path"]):
        die(f"table row path {row['path']!r} is not an installed file")
    actual = sha256_file(row["path"])
    if actual != expected_sha:
        die(f"installed file {row['path']} has sha256 {actual}, expected {expected_sha}")
    print(f"scfoundation_models: {a.model} '{a.display_name}' sha256 {expected_sha[:12]}... at {row['path']}")

    # The tools see it: the embedding form offers the model.
    form = call(a.url, f"tools/scfoundation_embed/build?history_id={history['id']}", key)
    cond = next(i for i in form["inputs"] if i["name"] == "model_source")
    cached = next(c for c in cond["cases"] if c["value"] == "cached")
    options = next(i for i in cached["inputs"] if i["name"] == "cached_model")["options"]
    if not any(o[1] == a.model and o[0] == a.display_name for o in options):
        die(f"the embedding tool does not offer {a.model}: options {options}")
    print(f"scfoundation_embed offers it: {[o[0] for o in options]}")


def cmd_check_tests(a):
    key = env(a.key_env)
    summary = call(a.url, "tools/tests_summary", key)
    expected = {}
    for tool in a.tool:
        if tool not in summary:
            die(f"Galaxy knows no tests of {tool} (tests_summary: {sorted(summary)})")
        for _version, s in summary[tool].items():
            expected[tool] = expected.get(tool, 0) + s["count"]
    results = []
    for path in a.results:
        if not os.path.exists(path):
            die(f"no test results at {path}")
        with open(path) as f:
            results.extend(json.load(f).get("tests", []))
    passed, failed = [], []
    for t in results:
        data = t.get("data", {})
        (passed if data.get("status") == "success" else failed).append((t["id"], data))
    for test_id, data in failed:
        job = data.get("job") or {}
        print(f"FAILED {test_id}: status {data.get('status')}")
        for problem in data.get("output_problems") or []:
            print(f"    {str(problem)[:1500]}")
        if data.get("execution_problem"):
            print(f"    execution problem: {str(data['execution_problem'])[:1500]}")
        for stream in ("tool_stdout", "tool_stderr"):
            if job.get(stream):
                print(f"    {stream}: {job[stream][-1500:]}")
    per_tool, seen = {}, {}
    for test_id, data in passed + failed:
        tool = re.sub(r"(/[^/]*)?-\d+$", "", test_id)  # TOOL/VERSION-INDEX (galaxy-tool-test) or TOOL-INDEX
        seen[tool] = seen.get(tool, 0) + 1
        if data.get("status") == "success":
            per_tool[tool] = per_tool.get(tool, 0) + 1
    missing = {t: n - seen.get(t, 0) for t, n in expected.items() if seen.get(t, 0) < n}
    for tool, n in expected.items():
        print(f"  {tool}: {per_tool.get(tool, 0)}/{n} passed")
    print(f"Galaxy tool tests: {len(passed)} passed, {len(failed)} failed")
    if missing:
        die(f"tests without a result: {missing}")
    if failed:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("wait")
    p.add_argument("url")
    p.add_argument("--pid", type=int)
    p.add_argument("--timeout", type=int, default=300)
    p = sub.add_parser("user")
    p.add_argument("url")
    p.add_argument("--bootstrap-key-env", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--password-env", required=True)
    p = sub.add_parser("install-model")
    p.add_argument("url")
    p.add_argument("--key-env", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--display-name", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--timeout", type=int, default=300)
    p = sub.add_parser("check-tests")
    p.add_argument("url")
    p.add_argument("--key-env", required=True)
    p.add_argument("--tool", action="append", required=True)
    p.add_argument("--results", action="append", required=True)
    a = ap.parse_args()
    {"wait": cmd_wait, "user": cmd_user, "install-model": cmd_install_model, "check-tests": cmd_check_tests}[a.cmd](a)


if __name__ == "__main__":
    main()
