#!/usr/bin/env python3
"""Browser check: a person's path through the real Galaxy web client, driven by Playwright with
Debian's headless Chromium.

Logs in, starts a new history, uploads the input through the upload dialog (type auto-detect), opens
the *scFoundation cell embedding* form, selects the model the data manager installed (from the data
table; the form must show its display name), runs it, and waits for both history items to turn green. Saves PNG screenshots of the filled form and of the finished history.
Fails (exit 1) if the upload or the job fails, a wait runs out, or the output is not an h5ad with
obsm/X_scfoundation; the API is used only to check the result, never to drive the run.

Usage: browser_check.py --url URL --email E --password-env VAR --key-env VAR --input FILE --out DIR
       [--chromium /usr/bin/chromium] [--timeout SECONDS]
"""

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

HISTORY_ITEM = '#current-history-panel [data-hid="{hid}"]'


def api(url, key, path):
    req = urllib.request.Request(f"{url}/api/{path}", headers={"x-api-key": key})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def fail(msg, page=None, out=None):
    if page is not None and out:
        try:
            page.screenshot(path=os.path.join(out, "failure.png"), full_page=True)
            print(f"browser_check: screenshot of the failure: {os.path.join(out, 'failure.png')}", file=sys.stderr)
        except PlaywrightError:
            pass
    print(f"browser_check: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def wait_history_item(page, hid, timeout_s, out, what):
    """Waits for history item `hid` to reach a final state; fails unless it is 'ok' (green)."""
    sel = HISTORY_ITEM.format(hid=hid)
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        el = page.query_selector(sel)
        state = el.get_attribute("data-state") if el else None
        if state == "ok":
            return
        if state in ("error", "failed_metadata", "discarded", "deferred"):
            fail(f"{what} (history item {hid}) ended in state '{state}'", page, out)
        page.wait_for_timeout(1000)
    fail(f"{what} (history item {hid}) not green after {timeout_s}s (last state: {state})", page, out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--email", required=True)
    ap.add_argument("--password-env", required=True, help="environment variable holding the password")
    ap.add_argument("--key-env", required=True, help="environment variable holding the user's API key (result check)")
    ap.add_argument("--input", required=True)
    ap.add_argument("--model", required=True, help="value (NAME@VERSION) of the installed model to run with")
    ap.add_argument("--model-name", help="its display name, which the form must show")
    ap.add_argument("--out", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--timeout", type=int, default=300, help="seconds for each of upload and job")
    args = ap.parse_args()
    url = args.url.rstrip("/")
    key = os.environ[args.key_env]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.monotonic()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            # Log in as a person does.
            page.goto(f"{url}/login/start")
            page.fill("#login-form-name", args.email)
            page.fill("#login-form-password", os.environ[args.password_env])
            page.click("button[name=login]")
            page.wait_for_selector("#current-history-panel", timeout=60_000)
            page.wait_for_function("() => !document.querySelector('button[name=login]')", timeout=60_000)
            # A new history, so that its first item is the upload.
            page.click('[data-description="create new history"]')
            page.wait_for_selector("#current-history-panel >> text=This history is empty")

            # Upload the file through the upload dialog (type: auto-detect, as a new user leaves it).
            page.click("#activity-upload")
            page.wait_for_selector("#btn-local", state="visible")
            page.set_input_files("input#upload-file", args.input)
            # The dialog has one Start/Close pair per tab; act on the visible (Regular) one.
            page.click("#btn-start:visible")
            page.wait_for_selector("text=100%", timeout=120_000)
            page.click("#btn-close:visible")
            wait_history_item(page, 1, args.timeout, args.out, "the upload of " + os.path.basename(args.input))
            print(f"browser_check: uploaded {os.path.basename(args.input)} ({time.monotonic() - t0:.0f}s)")

            # The embedding tool's form: the new dataset and the installed model are preselected.
            page.goto(f"{url}/?tool_id=scfoundation_embed")
            page.wait_for_selector("button#execute", state="visible")
            page.wait_for_selector('div.ui-form-element[id="form-element-input"]', state="visible")
            page.wait_for_selector('div.ui-form-element[id="form-element-input"] >> text=pbmc_tiny.h5ad')
            # The model the data manager installed: selected by its value (NAME@VERSION), its label shown.
            model_field = 'div.ui-form-element[id="form-element-model_source|cached_model"]'
            selected = page.locator(f"{model_field} [data-selected-value]").first
            if selected.get_attribute("data-selected-value") != args.model:
                page.click(f"{model_field} .multiselect")
                page.click(f"{model_field} .multiselect__option [data-option-value='{args.model}']")
            if selected.get_attribute("data-selected-value") != args.model:
                fail(f"could not select the installed model {args.model} in the form", page, args.out)
            label = page.inner_text(f"{model_field} .multiselect__single").strip()
            if args.model_name and label != args.model_name:
                fail(f"the form shows the model as {label!r}, not {args.model_name!r}", page, args.out)
            page.wait_for_timeout(500)
            form_png = os.path.join(args.out, "embed_tool_form.png")
            page.screenshot(path=form_png, full_page=True)
            page.click("button#execute")
            page.wait_for_selector(HISTORY_ITEM.format(hid=2), timeout=60_000)
            wait_history_item(page, 2, args.timeout, args.out, "the scFoundation cell embedding job")
            # Expand the finished item (its summary and peek), as a user checks a result.
            page.click(HISTORY_ITEM.format(hid=2) + " .content-title")
            page.wait_for_timeout(1500)
            hist_png = os.path.join(args.out, "history_finished.png")
            page.screenshot(path=hist_png, full_page=True)
            print(f"browser_check: job finished green ({time.monotonic() - t0:.0f}s)")
        except PlaywrightError as e:
            fail(f"browser step failed: {e}", page, args.out)
        finally:
            browser.close()

    # The output exists and is an h5ad with the embedding.
    history = json.loads(api(url, key, "histories/most_recently_used"))
    contents = json.loads(api(url, key, f"histories/{history['id']}/contents?v=dev&keys=hid,state,extension,name,id,file_size"))
    outs = [c for c in contents if c.get("hid") == 2]
    if not outs:
        fail("no output dataset in the history")
    out = outs[0]
    if out["state"] != "ok" or out["extension"] != "h5ad" or not out.get("file_size"):
        fail(f"output dataset is not a non-empty h5ad in state ok: {out}")
    import h5py  # noqa: E402  (in the tools venv; only needed here)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.h5ad")
        with open(path, "wb") as f:
            f.write(api(url, key, f"datasets/{out['id']}/display?to_ext=h5ad"))
        with h5py.File(path, "r") as h5:
            if "obsm/X_scfoundation" not in h5 or "uns/scfoundation/model_sha256" not in h5:
                fail(f"output lacks obsm/X_scfoundation or uns/scfoundation/model_sha256: {list(h5)}")
            shape = h5["obsm/X_scfoundation"].shape
            used_sha = h5["uns/scfoundation/model_sha256"][()]
            used_sha = used_sha.decode() if isinstance(used_sha, bytes) else str(used_sha)
    table = json.loads(api(url, key, "tool_data/scfoundation_models"))
    shas = {dict(zip(table["columns"], row))["sha256"] for row in table["fields"]
            if dict(zip(table["columns"], row))["value"] == args.model}
    if used_sha not in shas:
        fail(f"the output was made with weights of sha256 {used_sha}, not the installed {args.model} ({shas})")
    print(f"browser_check: ok: '{out['name']}' is an h5ad with obsm/X_scfoundation {shape}, made with "
          f"{args.model} (sha256 {used_sha[:12]}...); "
          f"screenshots {form_png}, {hist_png} ({time.monotonic() - t0:.0f}s)")


if __name__ == "__main__":
    main()
