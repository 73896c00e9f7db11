#!/usr/bin/env bash
# nextflow.sh - drop-in `nextflow` command that runs a REAL Nextflow assembled from
# the io.nextflow jars on Maven Central (the official launcher downloads its jar from
# nextflow.io, which is not reachable here).
#
# First use: generates a pom.xml, runs Maven (dependency:copy-dependencies) to fetch
# io.nextflow:nextflow:$NXF_MVN_VERSION and its runtime dependencies into
#   ${NXF_MVN_CACHE:-$HOME/.cache/nextflow-mvn}/<version>/lib
# (local Maven repo: ${NXF_MVN_CACHE}/m2), smoke-tests it and writes a classpath file.
# Later uses: read the classpath file and exec java directly; Maven is not invoked.
#
# Environment (all optional):
#   NXF_MVN_VERSION        Nextflow version to assemble (default 25.04.4, see below)
#   NXF_MVN_NFLANG_VERSION version of io.nextflow:nf-lang to use (default: 25.04.0 for
#                          25.04.x, which is the only 25.04 nf-lang on Maven Central)
#   NXF_MVN_CACHE          cache root (default $HOME/.cache/nextflow-mvn)
#   NXF_MVN_REPO           local Maven repository (default $NXF_MVN_CACHE/m2)
#   NXF_MVN_CMD            maven executable (default mvn)
#   NXF_MVN_OPTS           extra arguments for mvn (e.g. "-s my-settings.xml")
#   NXF_MVN_REFRESH=1      force re-resolution (same as `nextflow.sh -download`)
#   NXF_JAVA_HOME          Java to use (strict); else JAVA_CMD, JAVA_HOME, PATH, /usr/lib/jvm/*
#   NXF_OPTS, NXF_JVM_ARGS extra JVM options (as with the official launcher)
#   NXF_HOME               Nextflow home (default $HOME/.nextflow); always exported,
#                          otherwise Nextflow switches its plugin system to "dev" mode
#   NXF_OFFLINE            default true here (no plugin downloads / update checks)
#   NXF_PLUGINS_DEFAULT    default false here (no implicit nf-amazon/nf-tower/... loading)
#
# Why 25.04.4: it is the newest stable io.nextflow:nextflow on Maven Central whose
# nf-commons/nf-httpfs are also there (25.05.0-edge is there, but its nf-commons,
# nf-httpfs and nf-lang are not). Gaps of 25.04.4 on Maven Central, handled here:
#   io.nextflow:nf-lang:25.04.4  -> replaced by io.nextflow:nf-lang:25.04.0 (same minor)
#   io.seqera:lib-trace:0.1.0    -> excluded; a 1-class stub (io.seqera.util.trace.TraceUtils,
#                                   only used by nextflow.util.SimpleHttpClient) is compiled.
#   `nextflow lint` NPE of 25.04.4 (nextflow-io/nextflow#6199, fixed in 25.04.5, not on
#   Maven Central) -> a patched nextflow.script.control.LazyErrorCollector is compiled and
#   put first on the classpath.
# Java: 17..24 for 25.04 (Groovy 4.0.26 cannot read Java 25 classes); a Java 25 JAVA_HOME is
# skipped in favour of another JDK (PATH, /usr/lib/jvm/*) unless NXF_JAVA_HOME forces it.
set -euo pipefail

NXF_MVN_VERSION="${NXF_MVN_VERSION:-25.04.4}"
_home="${HOME:-/tmp}"
NXF_MVN_CACHE="${NXF_MVN_CACHE:-$_home/.cache/nextflow-mvn}"
NXF_MVN_REPO="${NXF_MVN_REPO:-$NXF_MVN_CACHE/m2}"
NXF_MVN_CMD="${NXF_MVN_CMD:-mvn}"
NXF_MVN_OPTS="${NXF_MVN_OPTS:-}"
NXF_MVN_DEP_PLUGIN="${NXF_MVN_DEP_PLUGIN:-org.apache.maven.plugins:maven-dependency-plugin:3.6.1}"
case "$NXF_MVN_VERSION" in
  25.04.*) _nflang_default=25.04.0 ;;
  *)       _nflang_default="$NXF_MVN_VERSION" ;;
esac
NXF_MVN_NFLANG_VERSION="${NXF_MVN_NFLANG_VERSION:-$_nflang_default}"

_dir="$NXF_MVN_CACHE/$NXF_MVN_VERSION"
_cpfile="$_dir/classpath"

_die() { printf 'nextflow.sh: ERROR: %s\n' "$*" >&2; exit 1; }
_say() { printf 'nextflow.sh: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- java
# Nextflow 24.x/25.04 run on Java 17..24 (Groovy 4.0.26 cannot read Java 25 class files:
# "Unsupported class file major version 69"). Candidates, first usable wins:
# NXF_JAVA_HOME (strict), JAVA_CMD, JAVA_HOME, java on PATH, /usr/lib/jvm/*.
case "$NXF_MVN_VERSION" in
  2[0-4].*|25.0[1-4].*) _java_max=24 ;;
  *)                    _java_max=99 ;;
esac
# Java major version of a java binary: read <jdk>/release (cheap); else `java -version`.
_java_major() {
  local real jhome line v=""
  real="$(readlink -f "$1" 2>/dev/null || printf '%s' "$1")"
  jhome="${real%/bin/java}"
  if [[ -r "$jhome/release" ]]; then
    while IFS= read -r line; do
      [[ "$line" == JAVA_VERSION=* ]] && { v="${line#JAVA_VERSION=}"; v="${v//\"/}"; break; }
    done < "$jhome/release"
  fi
  [[ -n "$v" ]] || v="$("$1" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  v="${v#1.}"; printf '%s' "${v%%[.+-]*}"
}
_java_ok() { [[ -n "$1" && -x "$1" ]] || return 1; JAVA_MAJOR="$(_java_major "$1")"
  [[ "$JAVA_MAJOR" =~ ^[0-9]+$ ]] && (( JAVA_MAJOR >= 17 && JAVA_MAJOR <= _java_max )); }
declare -a _jcands=()
if [[ -n "${NXF_JAVA_HOME:-}" ]]; then
  _jcands=("$NXF_JAVA_HOME/bin/java")
else
  _jcands=("${JAVA_CMD:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)")
  for _j in /usr/lib/jvm/*/bin/java; do [[ -x "$_j" ]] && _jcands+=("$_j"); done
fi
JAVA_CMD=""; JAVA_MAJOR=""
for _j in "${_jcands[@]}"; do
  if _java_ok "$_j"; then JAVA_CMD="$_j"; break; fi
done
[[ -n "$JAVA_CMD" ]] || _die "no usable Java found for Nextflow $NXF_MVN_VERSION: it needs Java 17..$_java_max (tried: ${_jcands[*]:-none}; set NXF_JAVA_HOME)"

# ---------------------------------------------------------------- arguments
# Mirror the official launcher: -Dx=y before the command also become JVM properties;
# -bg runs in background; -download forces (re)assembly; self-update is unsupported.
declare -a jvmopts=()
_cmd=""; _bg=""
_commands=" clone config drop help history info inspect lint list log ls plugin pull run view node console kuberun secrets fs lineage self-update "
for _a in "$@"; do
  case "$_a" in
    -D*) [[ -z "$_cmd" ]] && jvmopts+=("$_a") ;;
    -bg) [[ -z "$_cmd" ]] && _bg=1 ;;
    -download) [[ -z "$_cmd" ]] && NXF_MVN_REFRESH=1 ;;
    -self-update|self-update) [[ -z "$_cmd" ]] && _die "self-update is not supported; set NXF_MVN_VERSION to another version published on Maven Central" ;;
    -*) ;;
    *) if [[ -z "$_cmd" && "$_commands" == *" $_a "* ]]; then _cmd="$_a"; fi ;;
  esac
done

# ---------------------------------------------------------------- assemble (cold path)
_assemble() {
  command -v "$NXF_MVN_CMD" >/dev/null 2>&1 || _die "'$NXF_MVN_CMD' not found: Maven is needed once to assemble Nextflow $NXF_MVN_VERSION"
  mkdir -p "$NXF_MVN_CACHE" "$NXF_MVN_REPO"
  local tmp log rc=0
  tmp="$(mktemp -d "$NXF_MVN_CACHE/.build-$NXF_MVN_VERSION.XXXXXX")"
  log="$tmp/mvn.log"
  _say "assembling Nextflow $NXF_MVN_VERSION from Maven Central into $_dir (one time; log: $_dir/mvn.log)"

  cat > "$tmp/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by nextflow.sh: runtime classpath of io.nextflow:nextflow:$NXF_MVN_VERSION -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.nextflow-mvn</groupId>
  <artifactId>nextflow-runtime</artifactId>
  <version>$NXF_MVN_VERSION</version>
  <packaging>pom</packaging>
  <dependencyManagement>
    <dependencies>
      <!-- io.nextflow:nf-lang:25.04.1..25.04.4 are not on Maven Central -->
      <dependency><groupId>io.nextflow</groupId><artifactId>nf-lang</artifactId><version>$NXF_MVN_NFLANG_VERSION</version></dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>io.nextflow</groupId>
      <artifactId>nextflow</artifactId>
      <version>$NXF_MVN_VERSION</version>
      <exclusions>
        <!-- io.seqera:lib-trace:0.1.0 is not on Maven Central; replaced by a stub below -->
        <exclusion><groupId>io.seqera</groupId><artifactId>lib-trace</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
EOF

  # shellcheck disable=SC2086
  ( cd "$tmp" && "$NXF_MVN_CMD" -B -ntp -U -f "$tmp/pom.xml" \
      -Dmaven.repo.local="$NXF_MVN_REPO" $NXF_MVN_OPTS \
      "$NXF_MVN_DEP_PLUGIN:copy-dependencies" \
      -DoutputDirectory="$tmp/lib" -DincludeScope=runtime \
      </dev/null >"$log" 2>&1 ) || rc=$?
  if (( rc != 0 )); then
    grep -m 1 -E '^\[ERROR\]' "$log" >&2 || tail -n 40 "$log" >&2
    cp "$log" "$NXF_MVN_CACHE/mvn-$NXF_MVN_VERSION-failed.log"; rm -rf "$tmp"
    _die "Maven could not resolve io.nextflow:nextflow:$NXF_MVN_VERSION (full log: $NXF_MVN_CACHE/mvn-$NXF_MVN_VERSION-failed.log)"
  fi
  ls "$tmp/lib/nextflow-$NXF_MVN_VERSION.jar" >/dev/null 2>&1 || _die "nextflow-$NXF_MVN_VERSION.jar missing after Maven run (log: $log)"

  # Small Java sources compiled here (javac of the same JDK) to fill the gaps:
  #  - lib-trace stub: io.seqera:lib-trace:0.1.0 is not on Maven Central
  #    (TraceUtils.rndTrace() is only used by nextflow.util.SimpleHttpClient).
  #  - 25.04.0..25.04.4 only: null-safe getErrors()/getWarnings() in nf-lang's
  #    LazyErrorCollector, the upstream fix for `nextflow lint` failing with
  #    'Cannot invoke "java.util.Collection.stream()" ... getErrors() is null'
  #    (nextflow-io/nextflow#6199, fixed in 25.04.5 which is not on Maven Central).
  local javac jar patches=""
  javac="${JAVA_CMD%/java}/javac"; [[ -x "$javac" ]] || javac="$(command -v javac || true)"
  jar="${javac%/javac}/jar"; [[ -x "$jar" ]] || jar="$(command -v jar || true)"
  _build_jar() {  # <jar name> <classpath> <src files...>
    local name="$1" jcp="$2"; shift 2
    [[ -n "$javac" && -n "$jar" ]] || return 1
    rm -rf "$tmp/classes" && mkdir -p "$tmp/classes"
    "$javac" -nowarn --release 11 -cp "$jcp" -d "$tmp/classes" "$@" >>"$log" 2>&1 \
      && "$jar" cf "$tmp/lib/$name" -C "$tmp/classes" . >>"$log" 2>&1
  }
  mkdir -p "$tmp/src/io/seqera/util/trace"
  cat > "$tmp/src/io/seqera/util/trace/TraceUtils.java" <<'EOF'
package io.seqera.util.trace;
import java.security.SecureRandom;
/** Minimal stand-in for io.seqera:lib-trace:0.1.0 (not published on Maven Central). */
public final class TraceUtils {
    private static final SecureRandom RND = new SecureRandom();
    private TraceUtils() {}
    private static String hex(int bytes) {
        byte[] b = new byte[bytes]; RND.nextBytes(b);
        StringBuilder sb = new StringBuilder(bytes * 2);
        for (byte x : b) sb.append(String.format("%02x", x));
        return sb.toString();
    }
    /** W3C trace-context 'traceparent' value: 00-[32 hex trace id]-[16 hex span id]-01 */
    public static String rndTrace() { return "00-" + hex(16) + "-" + hex(8) + "-01"; }
}
EOF
  _build_jar lib-trace-0.1.0-stub.jar "" "$tmp/src/io/seqera/util/trace/TraceUtils.java" \
    || _say "warning: could not build the lib-trace stub (javac/jar missing?); only Seqera Platform/Wave HTTP calls need it"
  if [[ "$NXF_MVN_VERSION" =~ ^25\.04\.[0-4]$ ]]; then
    mkdir -p "$tmp/src/nextflow/script/control"
    cat > "$tmp/src/nextflow/script/control/LazyErrorCollector.java" <<'EOF'
package nextflow.script.control;
import java.util.Collections;
import java.util.List;
import org.codehaus.groovy.control.CompilerConfiguration;
import org.codehaus.groovy.control.ErrorCollector;
import org.codehaus.groovy.control.messages.Message;
import org.codehaus.groovy.control.messages.WarningMessage;
/** nf-lang LazyErrorCollector + null-safe accessors (backport of nextflow-io/nextflow#6202). */
public class LazyErrorCollector extends ErrorCollector {
    public LazyErrorCollector(CompilerConfiguration configuration) { super(configuration); }
    @Override protected void failIfErrors() {}
    @Override public List<? extends Message> getErrors() {
        List<? extends Message> r = super.getErrors(); return r != null ? r : Collections.<Message>emptyList();
    }
    @Override public List<WarningMessage> getWarnings() {
        List<WarningMessage> r = super.getWarnings(); return r != null ? r : Collections.<WarningMessage>emptyList();
    }
}
EOF
    if _build_jar nxf-mvn-patches.jar "$(printf '%s:' "$tmp"/lib/groovy-[0-9]*.jar)" "$tmp/src/nextflow/script/control/LazyErrorCollector.java"; then
      patches="@LIB@/nxf-mvn-patches.jar"
    else
      _say "warning: could not build the lint patch; 'nextflow lint' may fail with a NullPointerException"
    fi
  fi
  rm -rf "$tmp/src" "$tmp/classes"

  # Ordered classpath (patches first, then Nextflow's own jars); @LIB@ = <cache>/<version>/lib,
  # so the cache directory can be moved or restored elsewhere (e.g. a CI cache).
  local f cp="$patches" lib="@LIB@"
  for f in "$tmp"/lib/nextflow-*.jar "$tmp"/lib/nf-*.jar; do cp+="${cp:+:}$lib/${f##*/}"; done
  for f in "$tmp"/lib/*.jar; do
    case "${f##*/}" in nextflow-*.jar|nf-*.jar|nxf-mvn-patches.jar) ;; *) cp+=":$lib/${f##*/}" ;; esac
  done

  # Smoke test before publishing the cache entry.
  local out
  if ! out="$(NXF_HOME="${NXF_HOME:-$_home/.nextflow}" "$JAVA_CMD" -cp "${cp//@LIB@/"$tmp/lib"}" nextflow.cli.Launcher -version 2>&1)" \
     || [[ "$out" != *"version $NXF_MVN_VERSION"* ]]; then
    printf '%s\n' "$out" >&2
    _die "assembled Nextflow does not start (kept in $tmp)"
  fi

  printf '%s\n' "$cp" > "$tmp/classpath"
  rm -rf "$_dir"
  mv "$tmp" "$_dir"
  chmod 755 "$_dir"
  _say "Nextflow $NXF_MVN_VERSION ready ($(ls "$_dir/lib" | wc -l) jars)"
}

if [[ ! -s "$_cpfile" || "${NXF_MVN_REFRESH:-}" == 1 ]]; then
  mkdir -p "$NXF_MVN_CACHE"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$NXF_MVN_CACHE/.lock-$NXF_MVN_VERSION"
    flock 9
  fi
  # another process may have finished while we waited for the lock
  if [[ ! -s "$_cpfile" || "${NXF_MVN_REFRESH:-}" == 1 ]]; then _assemble; fi
  if command -v flock >/dev/null 2>&1; then exec 9>&-; fi
  # `-download` alone: done
  if [[ "${NXF_MVN_REFRESH:-}" == 1 && $# -eq 1 && "$1" == -download ]]; then exit 0; fi
fi

# ---------------------------------------------------------------- launch (fast path)
IFS= read -r NXF_CLASSPATH_MVN < "$_cpfile"
NXF_CLASSPATH_MVN="${NXF_CLASSPATH_MVN//@LIB@/"$_dir/lib"}"   # entries are stored relative to the cache dir

export NXF_HOME="${NXF_HOME:-$_home/.nextflow}"   # must be set: otherwise plugins run in "dev" mode
export NXF_ORG="${NXF_ORG:-nextflow-io}"
export NXF_CLI="$0 $*"
export NXF_OFFLINE="${NXF_OFFLINE:-true}"
export NXF_PLUGINS_DEFAULT="${NXF_PLUGINS_DEFAULT:-false}"
export JAVA_CMD
[[ -n "${COLUMNS:-}" ]] && export COLUMNS
unset JAVA_TOOL_OPTIONS || true    # as the official launcher (nextflow-io/nextflow#1716)

declare -a java_opts=(
  -Dfile.encoding=UTF-8
  -Djava.awt.headless=true
  -Dcom.sun.security.enableAIAcaIssuers=true
)
[[ "$_cmd" != run && "$_cmd" != node ]] && java_opts+=(-XX:+TieredCompilation -XX:TieredStopAtLevel=1)
# shellcheck disable=SC2206
[[ -n "${NXF_OPTS:-}" ]] && java_opts+=($NXF_OPTS)
[[ -n "${NXF_TEMP:-}" ]] && java_opts+=("-Djava.io.tmpdir=$NXF_TEMP")
(( ${#jvmopts[@]} )) && java_opts+=("${jvmopts[@]}")
# shellcheck disable=SC2206
[[ -n "${NXF_JVM_ARGS:-}" ]] && java_opts+=($NXF_JVM_ARGS)
# the same --add-opens list as the official 25.04 launcher
for _p in java.lang java.io java.nio java.net java.util java.util.concurrent.locks \
          java.util.concurrent.atomic java.nio.file.spi sun.nio.ch sun.nio.fs \
          sun.net.www.protocol.http sun.net.www.protocol.https sun.net.www.protocol.ftp \
          sun.net.www.protocol.file jdk.internal.misc jdk.internal.vm java.util.regex; do
  java_opts+=("--add-opens=java.base/$_p=ALL-UNNAMED")
done
(( JAVA_MAJOR >= 24 )) && java_opts+=(--enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow)

if [[ -n "$_bg" ]]; then
  "$JAVA_CMD" "${java_opts[@]}" -cp "$NXF_CLASSPATH_MVN" nextflow.cli.Launcher "$@" &
  echo $! > "${NXF_PID_FILE:-.nextflow.pid}"
  disown || true
  exit 0
fi
exec "$JAVA_CMD" "${java_opts[@]}" -cp "$NXF_CLASSPATH_MVN" nextflow.cli.Launcher "$@"
