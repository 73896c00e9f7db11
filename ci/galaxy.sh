#!/usr/bin/env bash
# Galaxy checks against a REAL Galaxy server (galaxy-web-apps + galaxy-web-client 26.1.2 from PyPI, SQLite, local
# job runner) on loopback, offline:
#   1. planemo lint of every tool, shed_lint of both tool shed repositories, IWC lint of every workflow;
#   2. a fresh Galaxy with every tool of galaxy-tools/ and the weights data manager installed (tool_conf.xml,
#      data_manager_conf.xml, the scfoundation_models data table), the freshly built scfoundation on its PATH;
#   3. as an admin does: the data manager installs scfoundation-tiny@1.0 from test-data/registry.json through the
#      API, the data table is reloaded and checked (row, sha256, file, offered by the tool form);
#   4. a browser check (Playwright + Debian's headless Chromium): upload, embedding form with the installed model,
#      run, green history, screenshots under $SCF_CI_WORK/galaxy/screenshots;
#   5. every <test> of every tool (data manager included) with galaxy-tool-test (galaxy-tool-util) against that
#      server; the tools' tests select the installed model from the data table;
#   6. every workflow of workflows/ end to end with planemo test --engine external_galaxy.
# Installs (cached under ${SCF_CI_CACHE:-~/.cache/scfoundation-ci}/galaxy): the Galaxy venv, a planemo/playwright
# venv and, if missing, the chromium Debian package. Per-run scratch: ${SCF_CI_WORK:-.ci-work}/galaxy.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
ROOT=$PWD
T0=$SECONDS
GALAXY_VERSION=26.1.2
CACHE=$SCF_CI_CACHE/galaxy
# SCF_INSTALL_ONLY=1 (ci/prefetch.sh): install, then stop; its logs go elsewhere, so a run can follow at once.
W=$SCF_CI_WORK/galaxy$([ "${SCF_INSTALL_ONLY:-}" = 1 ] && echo -install || true)   # || true: set -e
BIN=$SCF_BIN_DIR
SERVER_VENV=$CACHE/server-$GALAXY_VERSION
TOOLS_VENV=$CACHE/tools
PARALLEL=${SCF_GALAXY_PARALLEL:-4}          # tool tests run at once
START_TIMEOUT=${SCF_GALAXY_START_TIMEOUT:-420}
TEST_TIMEOUT=${SCF_GALAXY_TEST_TIMEOUT:-1800} # bound on the tool tests, and on each workflow test

log() { printf '[galaxy %4ds] %s\n' $((SECONDS - T0)) "$*"; }
die() { echo "ci/galaxy.sh: $*" >&2; exit 1; }

# (Installing alone, from ci/prefetch.sh during the Rust build, needs no binary yet.)
[ -x "$BIN/scfoundation" ] || [ "${SCF_INSTALL_ONLY:-}" = 1 ] || die "$BIN/scfoundation not built (cargo build --release, or set SCF_BIN_DIR)"
mkdir -p "$CACHE"
rm -rf "$W"
mkdir -p "$W"/{config,tool-data,logs,results,screenshots}

# ---------------------------------------------------------------------------------------------------------------
# ci/env.sh's ensure_venv (stamped, flock-serialised), its output into a log file.
venv_logged() {  # DIR CHECK LOG PIP_ARGS...
  local dir=$1 check=$2 logf=$3
  shift 3
  ensure_venv "$dir" "$check" "$@" > "$logf" 2>&1
}
ensure_chromium() {
  [ -x "${SCF_CHROMIUM:-/usr/bin/chromium}" ] && return 0
  local sudo=""
  [ "$(id -u)" != 0 ] && sudo="sudo -n"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    chromium fonts-liberation
}
log "installing what is missing (cache: $CACHE)"
venv_logged "$SERVER_VENV" "import galaxy.webapps" "$W/logs/install-server.log" --prefer-binary -c ci/galaxy/server-constraints.txt \
  "galaxy-web-apps==$GALAXY_VERSION" "galaxy-web-client==$GALAXY_VERSION" & p_server=$!
venv_logged "$TOOLS_VENV" "import galaxy.tool_util, planemo, h5py, playwright" "$W/logs/install-tools.log" -c ci/galaxy/constraints.txt \
  planemo==0.75.47 "galaxy-tool-util==$GALAXY_VERSION" "galaxy-util==$GALAXY_VERSION" edam-ontology==1.25.3 \
  h5py==3.16.0 playwright==1.65.2 & p_tools=$!
ensure_chromium > "$W/logs/install-chromium.log" 2>&1 & p_chromium=$!
for p in server:$p_server tools:$p_tools chromium:$p_chromium; do
  wait "${p#*:}" || { tail -n 40 "$W/logs/install-${p%%:*}.log" >&2; die "installing the ${p%%:*} part failed"; }
done
CHROMIUM=${SCF_CHROMIUM:-/usr/bin/chromium}
log "installed: Galaxy $("$SERVER_VENV/bin/python" -c 'import galaxy.version as v; print(v.VERSION)'), $("$TOOLS_VENV/bin/planemo" --version | tail -1), $("$CHROMIUM" --version 2>/dev/null | head -1)"
[ "${SCF_INSTALL_ONLY:-}" = 1 ] && exit 0

# ---------------------------------------------------------------------------------------------------------------
log "lint"
"$TOOLS_VENV/bin/planemo" lint --report_level warn --skip BioToolsValid -r galaxy-tools/
# version_bumped asks the main tool shed (not reachable here).
"$TOOLS_VENV/bin/planemo" shed_lint --report_level warn --skip version_bumped --ensure_metadata -r galaxy-tools/
WORKFLOWS=(workflows/*/*.ga)
[ -e "${WORKFLOWS[0]}" ] || die "no workflow under workflows/"
for wf in "${WORKFLOWS[@]}"; do "$TOOLS_VENV/bin/planemo" workflow_lint --iwc "$(dirname "$wf")"; done

# ---------------------------------------------------------------------------------------------------------------
# The server's configuration: everything under $W, tools from the checkout.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
export GX_BOOTSTRAP_KEY GX_PASSWORD GX_KEY
GX_BOOTSTRAP_KEY=$(secret)
GX_PASSWORD=$(secret)
EMAIL=ci@scfoundation.test
C=$W/config
{
  echo '<toolbox monitor="false">'
  echo '  <section id="scfoundation" name="scFoundation">'
  for t in galaxy-tools/scfoundation/scfoundation_*.xml; do echo "    <tool file=\"$ROOT/$t\"/>"; done
  echo '  </section>'
  echo '</toolbox>'
} > "$C/tool_conf.xml"
sed "s|<data_managers>|<data_managers tool_path=\"$ROOT/galaxy-tools/data_manager_scfoundation_weights\">|" \
  galaxy-tools/data_manager_scfoundation_weights/data_manager_conf.xml > "$C/data_manager_conf.xml"
grep -q "tool_path=\"$ROOT/" "$C/data_manager_conf.xml" || die "could not set tool_path in data_manager_conf.xml"
# The shipped .sample, pointed at this server's tool-data directory (as a tool shed install does).
sed "s|<file path=\"tool-data/scfoundation_models.loc\"/>|<file path=\"$W/tool-data/scfoundation_models.loc\"/>|" \
  galaxy-tools/data_manager_scfoundation_weights/tool_data_table_conf.xml.sample > "$C/tool_data_table_conf.xml"
grep -q "$W/tool-data/scfoundation_models.loc" "$C/tool_data_table_conf.xml" || die "could not set the .loc path"
cp galaxy-tools/data_manager_scfoundation_weights/tool-data/scfoundation_models.loc.sample "$W/tool-data/scfoundation_models.loc"
cat > "$C/galaxy.yml" <<EOF
galaxy:
  data_dir: $W/data
  database_connection: sqlite:///$W/data/universe.sqlite?isolation_level=IMMEDIATE
  database_auto_migrate: true
  tool_config_file: $C/tool_conf.xml
  data_manager_config_file: $C/data_manager_conf.xml
  tool_data_table_config_path: $C/tool_data_table_conf.xml
  tool_data_path: $W/tool-data
  galaxy_data_manager_data_path: $W/tool-data
  galaxy_infrastructure_url: $URL
  id_secret: $(secret)
  bootstrap_admin_api_key: $GX_BOOTSTRAP_KEY
  admin_users: $EMAIL
  enable_mulled_containers: false
  conda_auto_init: false
  conda_auto_install: false
  watch_tools: false
  watch_tool_data_dir: false
  cleanup_job: onsuccess
  job_handler_monitor_sleep: 0.5
  job_runner_monitor_sleep: 0.5
  workflow_monitor_sleep: 0.5
  job_config:
    runners:
      local:
        load: galaxy.jobs.runners.local:LocalJobRunner
        workers: 4
    execution:
      default: local
      environments:
        local:
          runner: local
          env:
            # The site's model registry, as an admin sets it for the data manager's downloads.
            - name: SCFOUNDATION_REGISTRY
              value: $ROOT/test-data/registry.json
EOF

SERVER_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    # The server leads its own process group (setsid), which also holds its running jobs.
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    log "Galaxy server stopped"
  fi
  if [ "$rc" != 0 ] && [ -f "$W/logs/server.log" ]; then
    echo "---- end of the Galaxy server log, without access lines ($W/logs/server.log) ----" >&2
    grep -v '^INFO: *127\.0\.0\.1:' "$W/logs/server.log" | tail -n 60 | cut -c1-400 >&2
  fi
  log "Galaxy step $([ "$rc" = 0 ] && echo passed || echo FAILED) in $((SECONDS - T0))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting Galaxy on $URL (data: $W/data)"
(cd "$W" && PATH="$BIN:$PATH" exec setsid "$SERVER_VENV/bin/galaxy-web" -c "$C/galaxy.yml" -b "127.0.0.1:$PORT") \
  > "$W/logs/server.log" 2>&1 < /dev/null &
SERVER_PID=$!
PY=$TOOLS_VENV/bin/python
ADMIN="$PY ci/galaxy/galaxy_admin.py"
$ADMIN wait "$URL" --pid "$SERVER_PID" --timeout "$START_TIMEOUT"
GX_KEY=$($ADMIN user "$URL" --bootstrap-key-env GX_BOOTSTRAP_KEY --email "$EMAIL" --password-env GX_PASSWORD)
log "user $EMAIL (admin) and its API key created with the bootstrap key"

# ---------------------------------------------------------------------------------------------------------------
log "data manager: install scfoundation-tiny@1.0 from test-data/registry.json through the API"
MODEL_NAME="scFoundation tiny (test registry)"
$ADMIN install-model "$URL" --key-env GX_KEY --model scfoundation-tiny@1.0 --display-name "$MODEL_NAME" \
  --registry test-data/registry.json

# A person's path in the web client, before the tests add more rows to the table.
log "browser check: Chromium uploads, runs the embedding tool, waits for green"
timeout 600 "$PY" ci/galaxy/browser_check.py --url "$URL" --email "$EMAIL" --password-env GX_PASSWORD \
  --key-env GX_KEY --input test-data/pbmc_tiny.h5ad --model scfoundation-tiny@1.0 --model-name "$MODEL_NAME" \
  --chromium "$CHROMIUM" --out "$W/screenshots"

# Every <test> of every tool the server has (the six tools and the data manager), PARALLEL at a time, each in
# its own history; the tools' tests pick the installed model from the data table (--with-reference-data: they use
# a data table). timeout(1) bounds the client; the trap stops the server.
TOOL_IDS=(scfoundation_embed scfoundation_geneembed scfoundation_enhance scfoundation_pretrain scfoundation_annotate_train
  scfoundation_annotate_predict scfoundation_genemodules data_manager_scfoundation_weights)
log "tool tests: galaxy-tool-test, $PARALLEL at a time"
rc=0
timeout "$TEST_TIMEOUT" "$TOOLS_VENV/bin/galaxy-tool-test" -u "$URL" -k "$GX_KEY" -a "$GX_KEY" --with-reference-data \
  --parallel-tests "$PARALLEL" --history-per-test-case -j "$W/results/tool-tests.json" \
  > "$W/logs/tool-tests.log" 2>&1 || rc=$?
check=()
for t in "${TOOL_IDS[@]}"; do check+=(--tool "$t"); done
$ADMIN check-tests "$URL" --key-env GX_KEY "${check[@]}" --results "$W/results/tool-tests.json" || {
  [ "$rc" = 124 ] && echo "galaxy-tool-test did not finish within ${TEST_TIMEOUT}s (SCF_GALAXY_TEST_TIMEOUT)" >&2
  echo "---- $W/logs/tool-tests.log (tail)" >&2
  tail -n 30 "$W/logs/tool-tests.log" >&2
  die "tool tests failed"
}
[ "$rc" = 0 ] || { tail -n 30 "$W/logs/tool-tests.log" >&2; die "galaxy-tool-test exited with $rc$([ "$rc" = 124 ] && echo ": not finished within ${TEST_TIMEOUT}s")"; }

# ---------------------------------------------------------------------------------------------------------------
for wf in "${WORKFLOWS[@]}"; do
  name=$(basename "$wf" .ga)
  log "workflow $wf: planemo test --engine external_galaxy"
  (cd "$(dirname "$wf")" && timeout "$TEST_TIMEOUT" "$TOOLS_VENV/bin/planemo" test --engine external_galaxy \
    --galaxy_url "$URL" --galaxy_user_key "$GX_KEY" --galaxy_admin_key "$GX_KEY" \
    --test_output "$W/results/workflow-$name.html" --test_output_json "$W/results/workflow-$name.json" \
    --summary minimal "$(basename "$wf")") > "$W/logs/workflow-$name.log" 2>&1 || {
    grep -v '^\s*$' "$W/logs/workflow-$name.log" | tail -n 40 >&2
    die "workflow test $wf failed (report: $W/results/workflow-$name.html)"
  }
  grep -E 'passed|failed' "$W/logs/workflow-$name.log" | tail -n 3
done

