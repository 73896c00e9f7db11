#!/usr/bin/env python3
"""Offline Galaxy tool-test harness (no Galaxy server, no network).

Runs the <tests> of Galaxy tool XML files the way a Galaxy server would for
`planemo test`, using only galaxy-tool-util / galaxy-util:

  * tool loading with macro/token expansion (galaxy.tool_util.parser.get_tool_source),
  * test parsing incl. nested <conditional>/<section>/<repeat> syntax and Galaxy's
    test-case validation (galaxy.tool_util.verify.parse.parse_tool_test_descriptions),
  * a parameter dictionary built like lib/galaxy/tools/evaluation.py: defaults,
    conditionals (__current_case__), sections, repeats, data/collection inputs,
    select params incl. from_data_table / from_file options (.fields.*), booleans
    (truevalue/falsevalue), Galaxy's sanitizer, output datasets, configfiles
    (<configfile>, <inputs>), <environment_variables>, $__tool_directory__ ...
  * Cheetah rendering (galaxy.util.template.fill_template) + Galaxy's line joining,
  * execution with bash in a Galaxy-like job directory, stdio checks
    (galaxy.tool_util.output_checker), expect_exit_code / expect_failure,
  * output verification with galaxy.tool_util.verify (compare=, assert_contents incl.
    has_h5_keys/has_h5_attribute, md5/checksum, extra_files, ftype, metadata),
    assert_stdout/assert_stderr/assert_command, output collections (discover_datasets),
  * data managers (tool_type="manage_data"): the JSON param file is written into the
    output before the run, and afterwards the data_tables JSON is applied through
    data_manager_conf.xml to a scratch copy of the data table (moves, value
    translations), like Galaxy's data manager post-processing.

Usage: python galaxy_test_harness.py TOOL_DIR [TOOL_DIR ...] [--tool X.xml|ID ...] [--keep] [-v]
       [--test-data DIR] [--tool-data-table-conf FILE ...] [--tool-data-path DIR]
       [--path-prepend DIR ...] [--slots N] [--timeout S]
Exit status: 0 all tests passed; 1 a test failed or a tool has no tests; 2 usage error.
"""

import argparse
import functools
import gzip
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

try:
    import galaxy.tool_util  # noqa: F401
except ImportError:  # pragma: no cover
    sys.exit("galaxy-tool-util is not importable: run setup.sh and use <venv>/bin/python")
from galaxy.tool_util.data import BundleProcessingOptions, ToolDataTableManager
from galaxy.tool_util.data.bundles.models import convert_data_tables_xml
from galaxy.tool_util.loader_directory import find_possible_tools_from_path
from galaxy.tool_util.output_checker import check_output, DETECTED_JOB_STATE
from galaxy.tool_util.parser import get_tool_source
from galaxy.tool_util.parser.interface import TestCollectionDef
from galaxy.tool_util.parser.parameter_validators import static_tool_validators
from galaxy.tool_util.verify import verify, verify_job_metadata
from galaxy.tool_util.verify.interactor import get_metadata_to_test, verify_collection
from galaxy.tool_util.verify.parse import parse_tool_test_descriptions
from galaxy.util import mapped_chars, parse_xml, string_as_bool, unicodify
from galaxy.util.template import fill_template

# --------------------------------------------------------------------------------------
# Datatypes: a small extension -> parent map (Galaxy's datatype class hierarchy, trimmed)
# --------------------------------------------------------------------------------------
DATATYPE_PARENT = {
    "txt": "data", "binary": "data", "tabular": "txt", "csv": "txt", "tsv": "tabular",
    "interval": "tabular", "bed": "interval", "gff": "interval", "gtf": "gff", "vcf": "tabular",
    "sam": "tabular", "json": "txt", "data_manager_json": "json", "xml": "txt", "html": "txt",
    "sequences": "txt", "fasta": "sequences", "fastq": "sequences", "fastqsanger": "fastq",
    "mtx": "txt", "h5": "binary", "h5ad": "h5", "loom": "h5", "mudata": "h5", "npy": "binary",
    "npz": "binary", "safetensors": "binary", "onnx": "binary", "bam": "binary", "png": "binary",
    "jpg": "binary", "pdf": "binary", "zip": "binary", "tar": "binary", "pickle": "binary",
    "zarr": "data", "yaml": "txt", "svg": "xml", "newick": "txt",
}
EXT_BY_SUFFIX = {
    ".csv": "csv", ".tsv": "tabular", ".tabular": "tabular", ".tab": "tabular", ".txt": "txt",
    ".h5ad": "h5ad", ".h5": "h5", ".hdf5": "h5", ".loom": "loom", ".h5mu": "mudata",
    ".json": "json", ".npy": "npy", ".npz": "npz", ".safetensors": "safetensors", ".onnx": "onnx",
    ".fasta": "fasta", ".fa": "fasta", ".fastq": "fastqsanger", ".fq": "fastqsanger",
    ".bam": "bam", ".sam": "sam", ".bed": "bed", ".vcf": "vcf", ".gff": "gff", ".gff3": "gff",
    ".gtf": "gtf", ".xml": "xml", ".html": "html", ".png": "png", ".jpg": "jpg", ".pdf": "pdf",
    ".zip": "zip", ".tar": "tar", ".mtx": "mtx", ".yml": "yaml", ".yaml": "yaml", ".pkl": "pickle",
    ".svg": "svg", ".nwk": "newick",
}
TABULAR_LIKE = {"tabular", "csv", "tsv", "interval", "bed", "vcf", "sam", "txt"}


def datatype_ancestors(ext):
    seen = []
    while ext and ext not in seen:
        seen.append(ext)
        ext = DATATYPE_PARENT.get(ext, "data" if ext != "data" else None)
    return seen


def ext_matches(ext, formats):
    """Galaxy-like 'is ext acceptable for formats' (datatype subclassing)."""
    anc = datatype_ancestors(ext)
    return any(f in anc or f == "data" for f in formats)


def sniff_ext(path, fallback="data"):
    """Crude sniffing, used for auto_format outputs and unnamed test inputs."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return fallback
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    if head[:2] == b"\x1f\x8b":
        return "binary"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            with open(path) as f:
                json.load(f)
            return "json"
        except Exception:
            pass
    lines = [line for line in text.splitlines() if line and not line.startswith("#")][:5]
    if lines and all("\t" in line for line in lines):
        return "tabular"
    if lines and len({line.count(",") for line in lines}) == 1 and lines[0].count(",") > 0:
        return "csv"
    return "txt" if text else fallback


def guess_ext(filename, formats):
    base = filename[:-3] if filename.endswith(".gz") else filename
    ext = EXT_BY_SUFFIX.get(os.path.splitext(base)[1].lower())
    if ext and (not formats or ext_matches(ext, formats)):
        return ext
    if formats and formats[0] != "data":
        return formats[0]
    return ext or "data"


def dataset_metadata(path, ext):
    """A subset of the metadata Galaxy's datatypes would set (for $input.metadata.* and tests)."""
    md: Dict[str, Any] = {}
    try:
        if ext in TABULAR_LIKE or ext in DATATYPE_PARENT and "tabular" in datatype_ancestors(ext):
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
            comments = [line for line in lines if line.startswith("#")]
            data = [line for line in lines if line and not line.startswith("#")]
            sep = "," if ext == "csv" else "\t"
            md["data_lines"] = len(data)
            md["comment_lines"] = len(comments)
            if ext != "txt":
                md["columns"] = max((len(line.split(sep)) for line in data), default=0)
                if ext == "csv" and data:
                    md["column_names"] = data[0].split(sep)
                    md["data_lines"] = len(data) - 1
        elif "h5" in datatype_ancestors(ext):
            import h5py  # optional

            with h5py.File(path, "r") as h:
                if ext == "h5ad":
                    obs = h["obs"]["_index"] if "obs" in h and "_index" in h["obs"] else None
                    var = h["var"]["_index"] if "var" in h and "_index" in h["var"] else None
                    md["obs_size"] = len(obs) if obs is not None else -1
                    md["var_size"] = len(var) if var is not None else -1
                    md["shape"] = (md["obs_size"], md["var_size"])
                    for grp in ("layers", "obsm", "varm", "uns", "obsp", "varp"):
                        if grp in h:
                            md[f"{grp}_names"] = list(h[grp].keys())
                            md[f"{grp}_count"] = len(h[grp].keys())
    except Exception:
        pass
    return md


# --------------------------------------------------------------------------------------
# Sanitizer (lib/galaxy/tools/parameters/sanitize.py semantics)
# --------------------------------------------------------------------------------------
class Sanitizer:
    VALID_DEFAULT = string.ascii_letters + string.digits + " -=_.()/+*^,:?!"

    def __init__(self, elem=None):
        self.sanitize = True
        self.invalid_char = "X"
        self.valid = list(self.VALID_DEFAULT)
        self.mapping = dict(mapped_chars)
        if elem is None:
            return
        self.invalid_char = elem.get("invalid_char", "X")
        self.sanitize = string_as_bool(elem.get("sanitize", "True"))
        for valid_elem in elem.findall("valid"):
            self.valid = self._valid_by_name(valid_elem.get("initial", "default"))
            for action in valid_elem:
                vals = self._valid_by_name(action.get("preset", "none"))
                if action.get("value") is not None:
                    vals.append(action.get("value"))
                if action.tag.lower() == "add":
                    self.valid.extend(v for v in vals if v not in self.valid)
                elif action.tag.lower() == "remove":
                    self.valid = [v for v in self.valid if v not in vals]
        for mapping_elem in elem.findall("mapping"):
            initial = mapping_elem.get("initial", "default")
            self.mapping = dict(mapped_chars) if initial == "default" else {}
            for action in mapping_elem:
                preset = dict(mapped_chars) if action.get("preset") == "default" else {}
                src, tgt = action.get("source"), action.get("target")
                if action.tag.lower() == "add":
                    self.mapping.update(preset)
                    if src is not None and tgt is not None:
                        self.mapping[src] = tgt
                elif action.tag.lower() == "remove":
                    for k in list(preset):
                        self.mapping.pop(k, None)
                    if src is not None:
                        self.mapping.pop(src, None)

    def _valid_by_name(self, names):
        rval: List[str] = []
        for name in names.split(","):
            name = name.strip()
            value = ""
            if name.startswith("string."):
                const = name[7:]
                if const in ("letters", "lowercase", "uppercase"):
                    const = f"ascii_{const}"
                value = getattr(string, const, "")
            elif name == "default":
                value = self.VALID_DEFAULT
            rval.extend(c for c in value if c not in rval)
        return rval

    def text(self, value):
        out = []
        for c in str(value):
            if c in self.valid:
                out.append(c)
            elif c in self.mapping:
                out.append(self.mapping[c])
            else:
                out.append(self.invalid_char)
        return "".join(out)

    def param(self, value):
        if not self.sanitize:
            return value
        if isinstance(value, list):
            return [self.text(v) for v in value]
        return self.text(value)


# --------------------------------------------------------------------------------------
# Tool input model (a light version of galaxy.tools.parameters.basic/grouping)
# --------------------------------------------------------------------------------------
class HarnessError(Exception):
    pass


class Param:
    kind = "param"

    def __init__(self, source, tool):
        self.source = source
        self.elem = source.elem()
        self.tool = tool
        self.name = source.parse_name()
        self.type = source.get("type")
        self.optional = source.parse_optional()
        self.multiple = source.get_bool("multiple", False) or (
            self.type == "select" and source.get("display") == "checkboxes"
        )
        self.label = source.parse_label() or self.name
        self.sanitizer = Sanitizer(source.parse_sanitizer_elem())
        if self.type == "boolean":
            self.truevalue = source.get("truevalue", "true")
            self.falsevalue = source.get("falsevalue", "false")
        if self.type == "data":
            self.formats = source.parse_extensions()
        self.separator = ","
        self.static_options = []
        self.dynamic = None
        if self.type in ("select", "data_column", "drill_down"):
            try:
                self.static_options = source.parse_static_options()
            except Exception:
                self.static_options = []
            options_elem = self.elem.find("options")
            if options_elem is not None:
                self.dynamic = DynamicOptions(options_elem, self)
                self.separator = options_elem.get("separator", ",")
            elif self.elem.get("dynamic_options"):
                self.dynamic = DynamicOptions(None, self)
        try:
            self.validators = static_tool_validators(source.parse_validators())
        except Exception:
            self.validators = []

    # options as (label, value, selected) ----------------------------------------------
    def options(self, other_values, job):
        if self.dynamic is not None:
            return self.dynamic.get_options(other_values, job)
        return list(self.static_options)

    def default(self, other_values, job):
        t, s = self.type, self.source
        if t == "boolean":
            return string_as_bool(s.get("checked", "false"))
        if t in ("integer", "float"):
            v = s.get("value")
            if v in (None, ""):
                return None
            return int(float(v)) if t == "integer" else float(v)
        if t == "select":
            opts = self.options(other_values, job)
            if opts is None:
                return None
            selected = [o[1] for o in opts if o[2]]
            if not selected:
                return opts[0][1] if (opts and not self.optional and not self.multiple) else None
            return selected if (self.multiple and len(selected) > 1) else selected[0]
        if t in ("data", "data_collection"):
            return None
        if t == "genomebuild":
            return s.get("value", "?")
        if t == "color":
            return s.get("value", "#000000")
        if t == "data_column":
            v = s.get("value")
            return v if v is not None else (None if self.optional else "1")
        v = s.get("value")
        if v is None and t == "text" and not self.optional:
            return ""
        return v

    def from_test(self, v, job):
        """Convert a value from the expanded test inputs to the Galaxy raw value."""
        t = self.type
        if t == "text":
            return v if not isinstance(v, list) else ",".join(map(str, v))
        if isinstance(v, list) and t not in ("select", "data", "data_column", "drill_down"):
            v = v[0] if v else None
        if t == "boolean":
            if isinstance(v, list):
                v = v[0]
            if isinstance(v, bool) or v is None:
                return v
            return string_as_bool(v)
        if t in ("integer", "float"):
            if v in (None, ""):
                return None
            return int(float(v)) if t == "integer" else float(v)
        if t in ("select", "data_column", "drill_down"):
            if not isinstance(v, list):
                v = [v]
            v = [str(x) for x in v]
            return v if self.multiple else (v[0] if v else None)
        return v

    def to_param_dict_string(self, value):
        t = self.type
        if t == "boolean":
            return self.truevalue if value else self.falsevalue
        if t in ("select", "data_column", "drill_down"):
            if value is None:
                return "None"
            value = [str(v) for v in value] if isinstance(value, list) else str(value)
            if self.tool.sanitize:
                value = self.sanitizer.param(value)
            return self.separator.join(value) if isinstance(value, list) else value
        if value is None:
            value = ""
        elif not isinstance(value, str):
            value = str(value)
        if self.tool.sanitize:
            value = self.sanitizer.param(value)
        return value

    def display_text(self, value, other_values, job):
        if self.type in ("select", "data_column", "drill_down"):
            opts = self.options(other_values, job) or []
            vals = value if isinstance(value, list) else [value]
            labels = [next((o[0] for o in opts if o[1] == v), str(v)) for v in vals if v is not None]
            return ", ".join(labels)
        if self.type == "boolean":
            return "Yes" if value else "No"
        return "" if value is None else str(value)


class Conditional:
    kind = "conditional"

    def __init__(self, source, tool):
        self.name = source.parse_name()
        self.test_param = Param(source.parse_test_input_source(), tool)
        self.cases = [(value, build_inputs(page.parse_input_sources(), tool))
                      for value, page in source.parse_when_input_sources()]

    def current_case(self, value):
        str_value = self.test_param.to_param_dict_string(value) if isinstance(value, bool) else value
        if isinstance(str_value, list):
            str_value = str_value[0] if str_value else None
        for i, (case_value, _) in enumerate(self.cases):
            if str_value == case_value:
                return i
        raise HarnessError(f"conditional '{self.name}': no <when> matches value {str_value!r}")


class Section:
    kind = "section"

    def __init__(self, source, tool):
        self.name = source.parse_name()
        self.inputs = build_inputs(source.parse_nested_inputs_source().parse_input_sources(), tool)


class Repeat:
    kind = "repeat"

    def __init__(self, source, tool):
        self.name = source.parse_name()
        self.min = int(source.get("min", 0) or 0)
        self.max = float(source.get("max", "inf") or "inf")
        self.default = int(source.get("default", 0) or 0)
        self.inputs = build_inputs(source.parse_nested_inputs_source().parse_input_sources(), tool)


def build_inputs(input_sources, tool):
    inputs = []
    for s in input_sources:
        t = s.parse_input_type()
        if t == "conditional":
            inputs.append(Conditional(s, tool))
        elif t == "section":
            inputs.append(Section(s, tool))
        elif t == "repeat":
            inputs.append(Repeat(s, tool))
        elif t == "param":
            inputs.append(Param(s, tool))
    return inputs


# --------------------------------------------------------------------------------------
# Dynamic options: from_data_table / from_file / filters (dynamic_options.py semantics)
# --------------------------------------------------------------------------------------
class DynamicOptions:
    def __init__(self, elem, param):
        self.param = param
        self.elem = elem
        self.unsupported = None
        self.columns: Dict[str, int] = {}
        self.filters = []
        self.table_name = self.from_file = None
        if elem is None:
            self.unsupported = "dynamic_options code"
            return
        self.table_name = elem.get("from_data_table")
        self.from_file = elem.get("from_file")
        self.fsep = elem.get("separator", "\t") if self.from_file else "\t"
        for attr in ("from_dataset", "from_parameter", "from_url"):
            if elem.get(attr):
                self.unsupported = attr
        if not (self.table_name or self.from_file or self.unsupported):
            self.unsupported = "options without a source"
        self.column_elems = elem.findall("column")
        for col in self.column_elems:
            self.columns[col.get("name")] = int(col.get("index"))
        self.filters = elem.findall("filter")

    def _base_rows(self, job):
        if self.table_name:
            tables = job.data_tables
            if tables is None or self.table_name not in tables:
                raise HarnessError(
                    f"param '{self.param.name}': data table '{self.table_name}' is not configured "
                    f"(give --tool-data-table-conf or ship tool_data_table_conf.xml.test)")
            table = tables[self.table_name]
            columns = dict(table.columns)
            if self.column_elems:
                columns = dict(self.columns)
            return [list(r) for r in table.get_fields()], columns
        path = self.from_file
        if not os.path.isabs(path):
            candidates = [os.path.join(d, path) for d in job.tool_data_paths]
            candidates += [c + ".sample" for c in candidates]
            path = next((c for c in candidates if os.path.exists(c)), candidates[0] if candidates else path)
        rows = []
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.startswith("#") or not line.strip():
                        continue
                    rows.append(line.rstrip("\r\n").split(self.fsep))
        return rows, dict(self.columns)

    def rows_and_columns(self, other_values, job):
        rows, columns = self._base_rows(job)
        if "value" not in columns:
            raise HarnessError(f"param '{self.param.name}': options need a 'value' column")
        columns.setdefault("name", columns["value"])
        for f in self.filters:
            rows = self._apply_filter(f, rows, columns, other_values, job)
        return rows, columns

    def _apply_filter(self, f, rows, columns, other_values, job):
        ftype = f.get("type")

        def col(name="column"):
            c = f.get(name)
            if c is None:
                return None
            return columns[c] if c in columns else int(c)

        keep = string_as_bool(f.get("keep", "True"))
        if ftype == "static_value":
            c, v = col(), f.get("value")
            return [r for r in rows if (len(r) > c and r[c] == v) == keep]
        if ftype == "regexp":
            c, rx = col(), re.compile(f.get("value"))
            return [r for r in rows if (len(r) > c and rx.match(r[c]) is not None) == keep]
        if ftype == "param_value":
            c = col()
            ref = lookup_path(other_values, f.get("ref"))
            attr = f.get("ref_attribute")
            if ref is None:
                return rows
            if attr:
                for a in attr.split("."):
                    ref = getattr(ref, a, None)
            refs = [str(x) for x in ref] if isinstance(ref, (list, tuple)) else [str(ref)]
            return [r for r in rows if (len(r) > c and r[c] in refs) == keep]
        if ftype == "unique_value":
            c, seen, out = col(), set(), []
            for r in rows:
                if r[c] not in seen:
                    seen.add(r[c])
                    out.append(r)
            return out
        if ftype == "sort_by":
            c = col()
            return sorted(rows, key=lambda r: r[c], reverse=string_as_bool(f.get("reverse_sort_order", "False")))
        if ftype == "remove_value":
            v = f.get("value")
            if v is None and f.get("ref"):
                v = str(lookup_path(other_values, f.get("ref")))
            vc = columns["value"]
            return [r for r in rows if r[vc] != v]
        if ftype == "add_value":
            width = max([len(r) for r in rows] + [max(columns.values()) + 1])
            new = [""] * width
            new[columns["value"]] = f.get("value")
            new[columns["name"]] = f.get("name", f.get("value"))
            idx = int(f.get("index", len(rows)))
            rows = list(rows)
            rows.insert(idx if idx >= 0 else len(rows), new)
            return rows
        if ftype == "multiple_splitter":
            cols = [int(c) for c in f.get("column").split(",")]
            sep = f.get("separator", ",")
            out = []
            for r in rows:
                r = list(r)
                for c in cols:
                    r[c] = r[c].split(sep)
                out.append(r)
            return out
        if ftype == "data_meta":
            ref = lookup_path(other_values, f.get("ref"))
            key, c = f.get("key"), col()
            vals = None
            ds = getattr(ref, "dataset_value", None)
            if ds is not None:
                vals = ds.dbkey if key == "dbkey" else ds.metadata.get(key)
            if vals is None:
                job.notes.append(f"options filter data_meta key={key} not evaluable offline; not applied")
                return rows
            vals = [str(v) for v in vals] if isinstance(vals, (list, tuple)) else [str(vals)]
            return [r for r in rows if (len(r) > c and r[c] in vals) == keep]
        job.notes.append(f"options filter type={ftype} not supported offline; not applied")
        return rows

    def get_options(self, other_values, job):
        if self.unsupported:
            return None
        rows, columns = self.rows_and_columns(other_values, job)
        opts = []
        for r in rows:
            if len(r) <= max(columns["value"], columns["name"]):
                continue
            opts.append((str(r[columns["name"]]), str(r[columns["value"]]), False))
        return opts

    def field_for_value(self, field, value, other_values, job):
        rows, columns = self.rows_and_columns(other_values, job)
        if field not in columns:
            raise HarnessError(f"param '{self.param.name}': no column '{field}' (columns: {sorted(columns)})")
        values = value if isinstance(value, list) else [value]
        return [str(r[columns[field]]) for r in rows if str(r[columns["value"]]) in values]


def lookup_path(values, ref):
    """Resolve 'a|b' / 'a.b' / 'name' references in the (possibly nested) param dict."""
    if not ref:
        return None
    cur: Any = values
    for part in re.split(r"[|.]", ref):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            found = find_nested(values, ref.split("|")[-1])
            return found
    return cur


def find_nested(values, name):
    if isinstance(values, dict):
        if name in values:
            return values[name]
        for v in values.values():
            r = find_nested(v, name)
            if r is not None:
                return r
    elif isinstance(values, list):
        for v in values:
            r = find_nested(v, name)
            if r is not None:
                return r
    return None


# --------------------------------------------------------------------------------------
# Runtime value objects and Cheetah wrappers (lib/galaxy/tools/wrappers.py semantics)
# --------------------------------------------------------------------------------------
class DatasetValue:
    """Stands in for an HDA."""

    _ids = iter(range(1, 10**9))

    def __init__(self, path, ext, name, job, dbkey="?", metadata=None, identifier=None, hid=None):
        self.id = next(self._ids)
        self.hid = hid
        self.path = path
        self.ext = ext
        self.name = name
        self.dbkey = dbkey or "?"
        self.identifier = identifier
        self.extra_files_path = os.path.join(os.path.dirname(path), f"dataset_{self.id}_files")
        md = dataset_metadata(path, ext) if os.path.exists(path) else {}
        md.update(metadata or {})
        self.metadata = md
        self.info = ""
        self.tags: List[str] = []


class MetadataWrapper:
    def __init__(self, md):
        self._md = md

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._md.get(name)

    def get(self, key, default=None):
        return self._md.get(key, default)

    def element_is_set(self, name):
        return self._md.get(name) is not None

    def items(self):
        return iter(self._md.items())

    def __iter__(self):
        return iter(self._md)

    def __bool__(self):
        return bool(self._md)


class ToolParameterValueWrapper:
    value: Any = None

    def __bool__(self):
        return bool(self.value)


@functools.total_ordering
class InputValueWrapper(ToolParameterValueWrapper):
    def __init__(self, param, value):
        self.input = param
        self.value = value

    def _cast(self, other):
        p = self.input
        if p.type == "boolean" and isinstance(other, str):
            if other in (p.truevalue, p.falsevalue):
                return str(self), other
            return bool(self), string_as_bool(other)
        if p.optional and self.value is None:
            return (str(self), other) if isinstance(other, str) else (None, other)
        cast = {"text": str, "integer": int, "float": float, "boolean": bool}.get(p.type, str)
        return cast(self), other

    def __eq__(self, other):
        a, b = self._cast(other)
        return a == b

    def __ne__(self, other):
        return not self == other

    def __gt__(self, other):
        a, b = self._cast(other)
        return a > b

    __hash__ = None  # type: ignore[assignment]

    def __str__(self):
        return self.input.to_param_dict_string(self.value)

    def __iter__(self):
        return iter([str(self)])

    def __int__(self):
        return int(float(self))

    def __float__(self):
        return float(str(self))

    def __getattr__(self, key):
        if key.startswith("__") or key in ("input", "value"):
            raise AttributeError(key)
        return getattr(self.value, key)

    def get_display_text(self, quote=True):
        import shlex

        t = self.input.display_text(self.value, {}, None)
        return shlex.quote(t) if quote else t


class SelectToolParameterWrapper(ToolParameterValueWrapper):
    class FieldWrapper:
        def __init__(self, outer):
            self._outer = outer

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            o = self._outer
            if o.input.dynamic is None or o.input.dynamic.unsupported:
                raise HarnessError(f"param '{o.input.name}': .fields.{name} needs data-table/from_file options")
            vals = o.input.dynamic.field_for_value(name, o.value, o._other_values, o._job)
            return o.input.separator.join(vals)

    def __init__(self, param, value, other_values, job):
        self.input = param
        self.value = value
        self._other_values = other_values
        self._job = job
        self.fields = self.FieldWrapper(self)

    @property
    def value_label(self):
        return self.input.display_text(self.value, self._other_values, self._job)

    def get_display_text(self, quote=True):
        import shlex

        t = self.value_label
        return shlex.quote(t) if quote else t

    def __eq__(self, other):
        if isinstance(other, str):
            if other == "" and self.value in (None, []):
                return True
            return str(self) == other
        return self is other

    def __ne__(self, other):
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __str__(self):
        return self.input.to_param_dict_string(self.value)

    def __add__(self, x):
        return f"{self}{x}"

    def __iter__(self):
        if not self.input.multiple:
            raise Exception("Tried to iterate over a non-multiple parameter.")
        return iter(self.value or [])

    def __getattr__(self, key):
        if key.startswith("__") or key in ("input", "value", "_other_values", "_job"):
            raise AttributeError(key)
        return getattr(self.input, key)


class DatasetFilenameWrapper(ToolParameterValueWrapper):
    def __init__(self, dataset: Optional[DatasetValue], identifier=None, io_type="input"):
        self.dataset_value = dataset
        self.value = dataset
        self._identifier = identifier
        self.io_type = io_type
        self.metadata = MetadataWrapper(dataset.metadata if dataset else {})

    def __str__(self):
        return self.dataset_value.path if self.dataset_value else "None"

    def __bool__(self):
        return self.dataset_value is not None

    @property
    def element_identifier(self):
        if self._identifier is not None:
            return self._identifier
        return self.name

    @property
    def file_ext(self):
        return self.ext

    @property
    def name_and_ext(self):
        return f"{self.element_identifier}.{self.file_ext}"

    def get_staging_path(self, invalid_chars=("/",)):
        ident = str(self.element_identifier).lstrip(".")
        for c in invalid_chars:
            ident = ident.replace(c, "_")
        return f"{ident[:254 - len(self.file_ext)]}.{self.file_ext}"

    def is_of_type(self, *exts):
        return self.dataset_value is not None and ext_matches(self.dataset_value.ext, exts)

    @property
    def is_collection(self):
        return False

    def get_file_name(self, sync_cache=True):
        return str(self)

    @property
    def file_name(self):
        return str(self)

    @property
    def files_path(self):
        return self.extra_files_path

    def __getattr__(self, key):
        if key.startswith("__") or key in ("dataset_value", "value", "_identifier", "io_type", "metadata"):
            raise AttributeError(key)
        ds = self.dataset_value
        if ds is None:
            return {"ext": "data", "extension": "data", "name": None}.get(key)
        if key in ("ext", "extension"):
            return ds.ext
        if key in ("name", "dbkey", "extra_files_path", "id", "hid", "info", "tags"):
            return getattr(ds, key)
        if key == "dataset":
            return self
        if key == "groups":
            return set()
        raise AttributeError(f"dataset wrapper has no attribute '{key}' in the offline harness")


class DatasetListWrapper(list, ToolParameterValueWrapper):
    def __init__(self, wrappers):
        list.__init__(self, wrappers)
        self.value = list(wrappers)

    def __str__(self):
        return ",".join(map(str, self))

    def __bool__(self):
        return any(bool(w) for w in self)

    @property
    def is_collection(self):
        return False


class DatasetCollectionWrapper(ToolParameterValueWrapper):
    def __init__(self, name, collection_type, elements):
        # elements: list of (identifier, DatasetFilenameWrapper | DatasetCollectionWrapper)
        self._name = name
        self.collection_type = collection_type
        self._elements = elements
        self.value = elements

    @property
    def name(self):
        return self._name

    @property
    def is_collection(self):
        return True

    @property
    def is_input_supplied(self):
        return self._elements is not None

    def keys(self):
        return [i for i, _ in self._elements or []]

    def __iter__(self):
        return iter([w for _, w in self._elements or []])

    def __len__(self):
        return len(self._elements or [])

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._elements[key][1]
        for i, w in self._elements or []:
            if i == key:
                return w
        raise KeyError(key)

    def __getattr__(self, key):
        if key.startswith("__") or key in ("_elements", "_name", "collection_type", "value"):
            raise AttributeError(key)
        for i, w in self._elements or []:
            if i == key:
                return w
        raise AttributeError(f"collection has no element '{key}'")

    def __bool__(self):
        return bool(self._elements)

    @property
    def all_paths(self):
        out = []
        for w in self:
            out.extend(w.all_paths if isinstance(w, DatasetCollectionWrapper) else [str(w)])
        return out

    def paths_as_file(self, sep="\n"):
        fd, path = tempfile.mkstemp(prefix="gx_file_list", dir=CURRENT_JOB_DIR[0])
        os.write(fd, sep.join(self.all_paths).encode())
        os.close(fd)
        return path

    def __str__(self):
        return ",".join(self.all_paths)


CURRENT_JOB_DIR = [None]


class RawObjectWrapper:
    def __init__(self, obj):
        self.obj = obj

    def __str__(self):
        return str(self.obj)

    def __getattr__(self, key):
        raise AttributeError(f"$__app__/$__user__.{key} is not available in the offline harness")


# --------------------------------------------------------------------------------------
# The job: one test of one tool
# --------------------------------------------------------------------------------------
class ToolSpec:
    def __init__(self, path, root, args, table_cache):
        self.path = os.path.abspath(path)
        self.dir = os.path.dirname(self.path)
        self.root = os.path.abspath(root)
        self.source = get_tool_source(self.path)
        self.id = self.source.parse_id()
        self.name = self.source.parse_name()
        self.version = self.source.parse_version()
        self.profile = self.source.parse_profile()
        self.tool_type = self.source.parse_tool_type() or "default"
        self.sanitize = self.source.parse_sanitize()
        self.python_template_version = self.source.parse_python_template_version()
        pages = self.source.parse_input_pages()
        srcs = []
        if pages.inputs_defined:
            for page in pages.page_sources:
                srcs.extend(page.parse_input_sources())
        self.inputs = build_inputs(srcs, self)
        self.outputs, self.output_collections = self.source.parse_outputs(None)
        self.test_data_dirs = self._test_data_dirs(args)
        self.table_confs, self.tool_data_paths = self._data_table_confs(args)
        key = tuple(self.table_confs) + tuple(self.tool_data_paths)
        if key not in table_cache:
            table_cache[key] = (
                ToolDataTableManager(self.tool_data_paths[0], config_filename=list(self.table_confs))
                if self.table_confs else None
            )
        self.data_tables = table_cache[key]

    def _ancestors(self):
        d = self.dir
        while True:
            yield d
            if d == self.root or os.path.dirname(d) == d or not d.startswith(self.root):
                break
            d = os.path.dirname(d)

    def _test_data_dirs(self, args):
        if args.test_data:
            return [os.path.abspath(d) for d in args.test_data]
        return [os.path.join(d, "test-data") for d in self._ancestors() if os.path.isdir(os.path.join(d, "test-data"))]

    def _data_table_confs(self, args):
        tool_data_paths = [os.path.abspath(p) for p in (args.tool_data_path or [])]
        if args.tool_data_table_conf:
            confs = [os.path.abspath(c) for c in args.tool_data_table_conf]
        else:
            confs = []
            for suffix in (".test", ".sample"):
                for d in self._ancestors():
                    c = os.path.join(d, "tool_data_table_conf.xml" + suffix)
                    if os.path.exists(c):
                        confs = [c]
                        break
                if confs:
                    break
        for c in confs:
            p = os.path.join(os.path.dirname(c), "tool-data")
            if p not in tool_data_paths:
                tool_data_paths.append(p)
        for d in self._ancestors():
            p = os.path.join(d, "tool-data")
            if p not in tool_data_paths:
                tool_data_paths.append(p)
        return confs, tool_data_paths

    def find_test_file(self, name):
        for d in self.test_data_dirs:
            p = os.path.join(d, name)
            if os.path.exists(p):
                return p
        if os.path.isabs(name) and os.path.exists(name):
            return name
        raise HarnessError(f"test data file '{name}' not found in {self.test_data_dirs or ['(no test-data dir)']}")


class Job:
    def __init__(self, tool: ToolSpec, test, args, workdir):
        self.tool = tool
        self.test = test
        self.args = args
        self.dir = workdir
        self.working = os.path.join(workdir, "working")
        self.outputs_dir = os.path.join(workdir, "outputs")
        self.inputs_dir = os.path.join(workdir, "inputs")
        self.configs = os.path.join(workdir, "configs")
        self.home = os.path.join(workdir, "home")
        self.tmp = os.path.join(workdir, "tmp")
        for d in (self.working, self.outputs_dir, self.inputs_dir, self.configs, self.home, self.tmp):
            os.makedirs(d, exist_ok=True)
        self.data_tables = tool.data_tables
        self.tool_data_paths = tool.tool_data_paths
        self.notes: List[str] = []
        self.hid = 0
        self.input_datasets: List[DatasetValue] = []
        self.required = {value: extra for value, extra in (test.required_files or [])}

    # ---- inputs ---------------------------------------------------------------------
    def stage(self, value, extra, formats, identifier=None):
        extra = extra or {}
        try:
            src = self.tool.find_test_file(value)
        except HarnessError:
            if extra.get("location"):
                raise HarnessError(f"input '{value}' has location={extra['location']}: remote inputs cannot be "
                                   f"fetched offline; put a copy named '{os.path.basename(value)}' in test-data")
            raise
        ftype = extra.get("ftype")
        self.hid += 1
        dest = os.path.join(self.inputs_dir, f"dataset_{self.hid}.dat")
        if os.path.isdir(src):
            shutil.copytree(src, dest)
        elif src.endswith(".gz") and not (ftype or "").endswith(".gz"):
            with gzip.open(src, "rb") as fi, open(dest, "wb") as fo:
                shutil.copyfileobj(fi, fo)
        else:
            shutil.copyfile(src, dest)
        name = os.path.basename(value)
        if name.endswith(".gz") and not (ftype or "").endswith(".gz"):
            name = name[:-3]
        for att in extra.get("edit_attributes", []) or []:
            if att.get("type") == "name":
                name = str(att.get("value"))
        ext = ftype or guess_ext(value, formats)
        if formats and not ext_matches(ext, formats):
            self.notes.append(f"input '{value}' has format '{ext}', not one of {formats} (Galaxy may reject or convert it)")
        md = {}
        for k, v in (extra.get("metadata") or {}).items():
            md[k] = v
        ds = DatasetValue(dest, ext, name, self, dbkey=extra.get("dbkey", "?"), metadata=md,
                          identifier=identifier, hid=self.hid)
        self.input_datasets.append(ds)
        return ds

    def collection_from_def(self, cdef: TestCollectionDef, name):
        elements = []
        for el in cdef.elements:
            ident, d = el["element_identifier"], el["element_definition"]
            if isinstance(d, TestCollectionDef):
                elements.append((ident, self.collection_from_def(d, ident)))
            else:
                ds = self.stage(d["value"], d.get("attributes") or {}, [], identifier=ident)
                elements.append((ident, DatasetFilenameWrapper(ds, identifier=ident)))
        return DatasetCollectionWrapper(name, cdef.collection_type, elements)

    # ---- state ------------------------------------------------------------------------
    def build_state(self, inputs, prefix, test_inputs, state, root_state):
        """Fill `state` (raw values) for `inputs`; test values keyed like 'cond|x', 'rep_0|y'."""
        for inp in inputs:
            key = prefix + inp.name
            if inp.kind == "section":
                sub: Dict[str, Any] = {}
                state[inp.name] = sub
                self.build_state(inp.inputs, key + "|", test_inputs, sub, root_state)
            elif inp.kind == "conditional":
                sub = {}
                state[inp.name] = sub
                tp = inp.test_param
                tkey = f"{key}|{tp.name}"
                if tkey in test_inputs:
                    value = tp.from_test(test_inputs[tkey], self)
                else:
                    value = tp.default(root_state, self)
                sub[tp.name] = value
                idx = inp.current_case(value)
                sub["__current_case__"] = idx
                self.build_state(inp.cases[idx][1], key + "|", test_inputs, sub, root_state)
            elif inp.kind == "repeat":
                found = set()
                for k in test_inputs:
                    m = re.match(re.escape(key) + r"_(\d+)\|", k)
                    if m:
                        found.add(int(m.group(1)))
                n = max([i + 1 for i in found] + [max(inp.default, inp.min)])
                if n > inp.max:
                    raise HarnessError(f"repeat '{inp.name}': {n} instances > max {inp.max}")
                items = []
                for i in range(n):
                    sub = {"__index__": i}
                    self.build_state(inp.inputs, f"{key}_{i}|", test_inputs, sub, root_state)
                    items.append(sub)
                state[inp.name] = items
            else:
                state[inp.name] = self.param_value(inp, key, test_inputs, root_state)

    def param_value(self, p: Param, key, test_inputs, root_state):
        given = key in test_inputs
        if p.type == "data":
            if not given or test_inputs[key] in (None, [], [None]):
                if not p.optional:
                    raise HarnessError(f"required data input '{key}' not given in the test")
                return [] if p.multiple else None
            vals = test_inputs[key]
            vals = vals if isinstance(vals, list) else [vals]
            dss = [self.stage(v, self.required.get(v, {}), p.formats) for v in vals if v is not None]
            return dss if p.multiple else dss[0]
        if p.type == "data_collection":
            if not given:
                if not p.optional:
                    raise HarnessError(f"required collection input '{key}' not given in the test")
                return None
            return self.collection_from_def(test_inputs[key], os.path.basename(key))
        value = p.from_test(test_inputs[key], self) if given else p.default(root_state, self)
        if p.type == "select" and value is None and not p.optional:
            opts = p.options(root_state, self)
            if opts is not None and not opts:
                raise HarnessError(f"parameter '{key}' has no options (empty data table or .loc file?)")
        if p.type in ("select",) and value is not None:
            opts = p.options(root_state, self)
            if opts is not None:
                valid = [o[1] for o in opts]
                for v in (value if isinstance(value, list) else [value]):
                    if v not in valid:
                        raise HarnessError(f"parameter '{key}': an invalid option ({v!r}) was selected "
                                           f"(valid options: {', '.join(valid) or 'none'})")
            elif given:
                self.notes.append(f"options of '{key}' cannot be computed offline; value taken as is")
        if value is None and not p.optional and p.type in ("integer", "float", "select") and given:
            raise HarnessError(f"parameter '{key}' requires a value")
        if value is not None and p.validators and not (isinstance(value, list) and not value):
            for v in (value if isinstance(value, list) else [value]):
                for validator in p.validators:
                    try:
                        validator.statically_validate(v)
                    except ValueError as e:
                        raise HarnessError(f"parameter '{key}' failed validation: {e}")
        return value

    # ---- wrapping (evaluation.py __walk_inputs / wrap_input) ---------------------------
    def wrap(self, inputs, values, param_dict):
        for inp in inputs:
            if inp.kind == "repeat":
                for d in values[inp.name]:
                    self.wrap(inp.inputs, d, param_dict)
            elif inp.kind == "conditional":
                sub = values[inp.name]
                self.wrap([inp.test_param], sub, param_dict)
                self.wrap(inp.cases[sub["__current_case__"]][1], sub, param_dict)
            elif inp.kind == "section":
                self.wrap(inp.inputs, values[inp.name], param_dict)
            else:
                v = values[inp.name]
                if inp.type == "data" and inp.multiple:
                    values[inp.name] = DatasetListWrapper([DatasetFilenameWrapper(d) for d in v or []])
                elif inp.type == "data":
                    values[inp.name] = DatasetFilenameWrapper(v)
                elif inp.type == "data_collection":
                    values[inp.name] = v if v is not None else DatasetCollectionWrapper(None, None, None)
                elif inp.type in ("select", "data_column", "drill_down"):
                    if inp.multiple and v is not None and not isinstance(v, list):
                        v = [v]
                    values[inp.name] = SelectToolParameterWrapper(inp, v, param_dict, self)
                else:
                    values[inp.name] = InputValueWrapper(inp, v)

    # ---- outputs ----------------------------------------------------------------------
    def output_format(self, out, param_dict):
        fmt = out.format
        if out.format_source:
            src = lookup_path(param_dict, out.format_source)
            if isinstance(src, (DatasetListWrapper, list)) and src:
                src = src[0]
            if isinstance(src, DatasetCollectionWrapper) and len(src):
                src = list(src)[0]
            if isinstance(src, DatasetFilenameWrapper) and src:
                fmt = src.ext
        elif fmt == "input" and self.input_datasets:
            fmt = self.input_datasets[0].ext
        for when in out.change_format or []:
            if when.get("input"):
                try:
                    check = fill_template(when["input"], context=param_dict).strip()
                except Exception:
                    check = None
                if check == when.get("value"):
                    fmt = when.get("format")
                    break
            elif when.get("input_dataset"):
                ds = lookup_path(param_dict, when["input_dataset"])
                if ds is not None and str(getattr(ds, when.get("check_attribute") or "ext", None)) == when.get("value"):
                    fmt = when.get("format")
                    break
        return fmt

    def output_filtered(self, out, param_dict):
        for f in getattr(out, "filters", None) or []:
            try:
                if not eval(f.text.strip(), {}, dict(param_dict)):
                    return True
            except Exception as e:
                self.notes.append(f"output '{out.name}' filter ({f.text.strip()}) failed: {e}; output kept (as Galaxy)")
        return False

    def on_string(self):
        names = [f"data {d.hid}" for d in self.input_datasets]
        if not names:
            return ""
        if len(names) == 1:
            return names[0]
        if len(names) == 2:
            return f"{names[0]} and {names[1]}"
        return f"{', '.join(names[:-1])}, and others"

    def label_for(self, out, param_dict):
        on = self.on_string()
        ctx = dict(param_dict)
        ctx["on_string"] = on
        ctx["tool"] = type("T", (), {"name": self.tool.name, "id": self.tool.id, "version": self.tool.version})()
        if out.label:
            try:
                return fill_template(out.label, context=ctx).strip()
            except Exception:
                return out.label
        return f"{self.tool.name} on {on}" if on else self.tool.name


def render_command(template, param_dict, python_template_version):
    command_line = fill_template(template, context=param_dict, python_template_version=python_template_version)
    command_line = "\n".join(line.strip() for line in command_line.split("\n"))
    return command_line.replace("\n", " ").replace("\r", " ").strip()


def json_wrap(inputs, values, profile, handle_files):
    out = {}
    for inp in inputs:
        v = values[inp.name]
        if inp.kind == "repeat":
            out[inp.name] = [json_wrap(inp.inputs, d, profile, handle_files) for d in v]
        elif inp.kind == "conditional":
            d = json_wrap(inp.cases[v["__current_case__"]][1], v, profile, handle_files)
            d.update(json_wrap([inp.test_param], v, profile, handle_files))
            out[inp.name] = d
        elif inp.kind == "section":
            out[inp.name] = json_wrap(inp.inputs, v, profile, handle_files)
        else:
            t = inp.type
            if t in ("data", "data_collection"):
                if handle_files in (None, "skip"):
                    continue
                ws = list(v) if isinstance(v, (DatasetListWrapper, DatasetCollectionWrapper)) else [v]

                def one(w):
                    if handle_files == "paths":
                        return None if not w else str(w)
                    return {"element_identifier": [w.element_identifier] if t == "data" else w.element_identifier,
                            "ext": w.ext, "staging_path": w.get_staging_path(), "source_path": str(w),
                            "metadata_files": []}
                if t == "data_collection" and handle_files == "paths":
                    out[inp.name] = v.all_paths if v else []
                else:
                    vals = [one(w) for w in ws]
                    out[inp.name] = vals if (inp.multiple or t == "data_collection") else vals[0]
            elif t in ("text", "color", "hidden"):
                out[inp.name] = None if (inp.optional and v.value is None) else str(v)
            elif t == "float":
                out[inp.name] = None if str(v) == "" else float(v.value)
            elif t == "integer":
                out[inp.name] = None if str(v) == "" else int(v.value)
            elif t == "boolean":
                out[inp.name] = None if (inp.optional and v.value is None) else bool(v.value)
            elif t in ("select", "drill_down"):
                if inp.multiple:
                    out[inp.name] = [str(x) for x in (v.value or [])]
                else:
                    out[inp.name] = None if v.value is None else str(v.value)
            elif t == "data_column":
                vals = v.value if isinstance(v.value, list) else [v.value]
                out[inp.name] = [int(x) for x in vals if x is not None]
            else:
                out[inp.name] = str(v)
    return out


# --------------------------------------------------------------------------------------
# Output collection discovery (discover_datasets)
# --------------------------------------------------------------------------------------
def discover(descriptions, working):
    found = []
    for desc in descriptions or []:
        pattern = getattr(desc, "pattern", None)
        if pattern is None:
            continue
        base = os.path.join(working, desc.directory) if desc.directory else working
        if not os.path.isdir(base):
            continue
        paths = []
        for dirpath, _, files in os.walk(base):
            for fn in files:
                paths.append(os.path.relpath(os.path.join(dirpath, fn), base))
            if not getattr(desc, "recurse", False):
                break
        for rel in paths:
            target = rel if desc.match_relative_path else os.path.basename(rel)
            m = re.match(pattern, target)
            if not m:
                continue
            gd = m.groupdict()
            designation = gd.get("designation") or gd.get("name") or os.path.splitext(target)[0]
            ext = gd.get("ext") or desc.default_ext or "data"
            found.append({"identifier": designation, "path": os.path.join(base, rel), "ext": ext,
                          "sort": gd.get(desc.sort_key, designation) if hasattr(desc, "sort_key") else designation,
                          "desc": desc})
    def sort_key(f):
        d = f["desc"]
        k = f["sort"] if getattr(d, "sort_key", "filename") != "filename" else os.path.basename(f["path"])
        if getattr(d, "sort_comp", "lexical") == "numeric":
            try:
                return float(k)
            except (TypeError, ValueError):
                return float("inf")
        return str(k)
    reverse = any(getattr(f["desc"], "sort_reverse", False) for f in found)
    return sorted(found, key=sort_key, reverse=reverse)


# --------------------------------------------------------------------------------------
# Data manager post-processing (data_manager_conf.xml)
# --------------------------------------------------------------------------------------
class _OutData:
    def __init__(self, path, ext, extra_files_path):
        self.path, self.ext, self.extra_files_path = path, ext, extra_files_path

    def get_file_name(self, sync_cache=True):
        return self.path

    def extra_files_path_exists(self):
        return os.path.exists(self.extra_files_path)


def find_data_manager_conf(tool: ToolSpec):
    for d in tool._ancestors():
        conf = os.path.join(d, "data_manager_conf.xml")
        if not os.path.exists(conf):
            continue
        root = parse_xml(conf).getroot()
        for dm in root.findall("data_manager"):
            tf = dm.get("tool_file")
            if tf and os.path.abspath(os.path.join(d, tf)) == tool.path:
                return conf, dm
    return None, None


def data_manager_post_process(tool: ToolSpec, job: Job, outputs, tables_confs):
    conf, dm_elem = find_data_manager_conf(tool)
    if dm_elem is None:
        return ["no data_manager_conf.xml entry references this tool; data table update not checked"]
    description = convert_data_tables_xml(dm_elem)
    json_out = [o for o in outputs.values() if o.ext == "data_manager_json"]
    if not json_out:
        raise AssertionError("data manager has no output of format data_manager_json")
    with open(json_out[0].path) as f:
        produced = json.load(f)
    tables = produced.get("data_tables")
    if not isinstance(tables, dict) or not tables:
        raise AssertionError(f"data manager JSON has no 'data_tables' dict: {str(produced)[:200]}")
    declared = set(description.data_table_names)
    undeclared = set(tables) - declared
    if undeclared and not description.undeclared_tables:
        raise AssertionError(f"data manager wrote tables not declared in {os.path.basename(conf)}: {sorted(undeclared)}")
    # scratch copy of the data tables, loc files pointing into the job dir
    scratch = os.path.join(job.dir, "dm_tool_data")
    os.makedirs(scratch, exist_ok=True)
    confs = tables_confs or []
    if not confs:
        raise AssertionError("no tool_data_table_conf.xml(.sample/.test) found for the data manager's tables")
    lines = ["<tables>"]
    for c in confs:
        for t in parse_xml(c).getroot().findall("table"):
            if t.get("name") not in declared:
                continue
            loc = os.path.join(scratch, f"{t.get('name')}.loc")
            open(loc, "a").close()
            for fe in t.findall("file"):
                t.remove(fe)
            attrs = " ".join(f'{k}="{v}"' for k, v in t.attrib.items())
            cols = t.find("columns")
            inner = f"<columns>{cols.text}</columns>" if cols is not None else "".join(
                f'<column name="{c.get("name")}" index="{c.get("index")}"/>' for c in t.findall("column"))
            lines.append(f'<table {attrs}>{inner}<file path="{loc}"/></table>')
    lines.append("</tables>")
    scratch_conf = os.path.join(scratch, "tool_data_table_conf.xml")
    with open(scratch_conf, "w") as f:
        f.write("\n".join(lines))
    manager = ToolDataTableManager(scratch, config_filename=[scratch_conf])
    missing = declared - set(manager.data_tables)
    if missing:
        raise AssertionError(f"tables {sorted(missing)} declared in data_manager_conf.xml are not in {confs}")
    for name, entries in tables.items():
        if name not in manager.data_tables:
            continue
        table = manager[name]
        rows = entries.get("add", []) if isinstance(entries, dict) else entries
        rows = rows if isinstance(rows, list) else [rows]
        for row in rows:
            absent = [c for c in table.get_column_name_list() if c and c not in row and c not in table.empty_field_values]
            if absent:
                raise AssertionError(f"data table '{name}' entry {row} lacks columns {absent}")
    dm_data = os.path.join(job.dir, "galaxy_data_manager_data")
    os.makedirs(dm_data, exist_ok=True)
    out_data = {n: _OutData(o.path, o.ext, o.extra_files_path) for n, o in outputs.items()}
    updated = manager.process_bundle(out_data, description, None,
                                     BundleProcessingOptions(what=f"data manager {tool.id}", data_manager_path=dm_data,
                                                             target_config_file=scratch_conf))
    notes = []
    for name in updated:
        table = manager[name]
        cols = table.get_column_name_list()
        for fields in table.get_fields():
            row = dict(zip(cols, fields))
            notes.append(f"data table '{name}' gets row: " + ", ".join(f"{k}={v}" for k, v in row.items()))
            for k in ("path", "len_path"):
                if k in row and not os.path.exists(row[k]):
                    raise AssertionError(f"data table '{name}': column {k} -> {row[k]} does not exist after moves")
    return notes


# --------------------------------------------------------------------------------------
# Running one test
# --------------------------------------------------------------------------------------
class Output:
    def __init__(self, name, path, ext, label, extra_files_path, definition=None):
        self.name, self.path, self.ext, self.label = name, path, ext, label
        self.extra_files_path = extra_files_path
        self.definition = definition
        self.wrapper: Optional[DatasetFilenameWrapper] = None


def run_test(tool: ToolSpec, test, args, base_tmp):
    t0 = time.time()
    label = f"{tool.id}#{test.test_index + 1}"
    if getattr(test, "name", None) and test.name != f"Test-{test.test_index + 1}":
        label += f" ({test.name})"
    workdir = tempfile.mkdtemp(prefix=f"{tool.id}_{test.test_index + 1}_", dir=base_tmp)
    CURRENT_JOB_DIR[0] = workdir
    failures: List[str] = []
    info: Dict[str, Any] = {"workdir": workdir}
    job = None
    try:
        if test.error:
            raise HarnessError(f"invalid test definition: {test.exception}")
        job = Job(tool, test, args, workdir)
        test_inputs = dict(test.inputs)
        unused_keys = set(test_inputs)
        state: Dict[str, Any] = {}
        job.build_state(tool.inputs, "", test_inputs, state, state)
        used = set()

        def mark(inputs, prefix, values):
            for inp in inputs:
                key = prefix + inp.name
                if inp.kind == "section":
                    mark(inp.inputs, key + "|", values[inp.name])
                elif inp.kind == "conditional":
                    used.add(f"{key}|{inp.test_param.name}")
                    sub = values[inp.name]
                    mark(inp.cases[sub["__current_case__"]][1], key + "|", sub)
                elif inp.kind == "repeat":
                    for i, sub in enumerate(values[inp.name]):
                        mark(inp.inputs, f"{key}_{i}|", sub)
                else:
                    used.add(key)
        mark(tool.inputs, "", state)
        unused_keys -= used
        if unused_keys:
            job.notes.append(f"test params not used by the selected cases: {sorted(unused_keys)}")

        # ---- param dict ----------------------------------------------------------------
        param_dict: Dict[str, Any] = {}
        param_dict["__datatypes_config__"] = param_dict["GALAXY_DATATYPES_CONF_FILE"] = os.path.join(workdir, "registry.xml")
        param_dict["__galaxy_url__"] = "http://localhost:8080"
        param_dict["__history_id__"] = "f2db41e1fa331b3e"
        param_dict["__user__"] = RawObjectWrapper("test@bx.psu.edu")
        param_dict["__user_id__"] = "1"
        param_dict["__user_email__"] = "test@bx.psu.edu"
        param_dict["__user_name__"] = "test"
        param_dict.update(state)
        job.wrap(tool.inputs, param_dict, param_dict)

        outputs: Dict[str, Output] = {}
        output_coll_defs = {}
        for name, out in tool.outputs.items():
            if name in tool.output_collections:
                continue
            if job.output_filtered(out, param_dict):
                continue
            ext = job.output_format(out, param_dict)
            ds_id = len(outputs) + 1
            path = os.path.join(job.outputs_dir, f"dataset_out_{ds_id}.dat")
            open(path, "w").close()
            outputs[name] = Output(name, path, ext, job.label_for(out, param_dict),
                                   os.path.join(job.outputs_dir, f"dataset_out_{ds_id}_files"), out)
        for name, coll in tool.output_collections.items():
            if job.output_filtered(coll, param_dict):
                continue
            output_coll_defs[name] = coll
            static = []
            for child_name, child in coll.outputs.items():
                ds_id = len(outputs) + 1
                path = os.path.join(job.outputs_dir, f"dataset_out_{ds_id}.dat")
                open(path, "w").close()
                ext = job.output_format(child, param_dict)
                o = Output(child_name, path, ext, child_name, os.path.join(job.outputs_dir, f"dataset_out_{ds_id}_files"), child)
                o.in_collection = name
                static.append(o)
            coll.static_outputs = static
        for name, o in outputs.items():
            ds = DatasetValue(o.path, o.ext, o.label, job)
            ds.extra_files_path = o.extra_files_path
            o.wrapper = DatasetFilenameWrapper(ds, io_type="output")
            param_dict[name] = o.wrapper
        for name, coll in output_coll_defs.items():
            elements = []
            for o in coll.static_outputs:
                ds = DatasetValue(o.path, o.ext, o.name, job)
                ds.extra_files_path = o.extra_files_path
                o.wrapper = DatasetFilenameWrapper(ds, identifier=o.name, io_type="output")
                param_dict[o.name] = o.wrapper
                elements.append((o.name, o.wrapper))
            param_dict[name] = DatasetCollectionWrapper(name, coll.structure.collection_type, elements)

        # non-job params (not sanitized in Galaxy)
        def get_data_table_entry(table_name, query_attr, query_val, return_attr):
            if job.data_tables is not None and table_name in job.data_tables:
                return job.data_tables[table_name].get_entry(query_attr, query_val, return_attr)
        param_dict["__tool_directory__"] = tool.dir
        param_dict["__get_data_table_entry__"] = get_data_table_entry
        param_dict["__local_working_directory__"] = workdir
        param_dict["__app__"] = RawObjectWrapper("app")
        param_dict["__new_file_path__"] = job.tmp
        param_dict["__tool_data_path__"] = param_dict["GALAXY_DATA_INDEX_DIR"] = tool.tool_data_paths[0] if tool.tool_data_paths else ""
        param_dict["__root_dir__"] = param_dict["GALAXY_ROOT_DIR"] = os.path.join(workdir, "galaxy_root")
        param_dict["__admin_users__"] = ""

        def _input():
            raise NameError("Unbound variable 'input'.")
        param_dict.setdefault("input", _input)

        # ---- data manager: JSON params written into the output (OutputParameterJSONTool) ---
        if tool.tool_type == "manage_data" and outputs:
            first = next(iter(outputs.values()))

            def plain(values):
                if isinstance(values, dict):
                    return {k: plain(v) for k, v in values.items() if not k.startswith("__")}
                if isinstance(values, list):
                    return [plain(v) for v in values]
                if isinstance(values, SelectToolParameterWrapper):
                    return values.value
                return str(values)
            json_params = {
                "param_dict": {k: plain(param_dict[k]) for k in state},
                "output_data": [{"out_data_name": n, "ext": o.ext, "dataset_id": i + 1, "hda_id": i + 1,
                                 "file_name": o.path, "extra_files_path": o.extra_files_path}
                                for i, (n, o) in enumerate(outputs.items())],
                "job_config": {"GALAXY_DATATYPES_CONF_FILE": param_dict["GALAXY_DATATYPES_CONF_FILE"],
                               "GALAXY_ROOT_DIR": param_dict["GALAXY_ROOT_DIR"],
                               "TOOL_PROVIDED_JOB_METADATA_FILE": os.path.join(job.working, "galaxy.json")},
            }
            with open(first.path, "w") as f:
                json.dump(json_params, f)

        # ---- configfiles ----------------------------------------------------------------
        for cf in tool.source.parse_input_configfiles():
            path = os.path.join(job.configs, f"inputs_{cf.name}.json")
            with open(path, "w") as f:
                json.dump(json_wrap(tool.inputs, param_dict, tool.profile, getattr(cf.content, "handle_files", None)), f)
            param_dict[cf.name] = path
            if cf.filename:
                os.link(path, os.path.join(job.working, cf.filename))
        for cf in tool.source.parse_file_sources():
            path = os.path.join(job.configs, f"file_sources_{cf.name}.json")
            with open(path, "w") as f:
                json.dump({"file_sources": []}, f)
            param_dict[cf.name] = path
        for cf in tool.source.parse_template_configfiles():
            path = os.path.join(job.configs, f"configfile_{cf.name}")
            try:
                text = fill_template(cf.content or "", context=param_dict,
                                     python_template_version=tool.python_template_version)
            except HarnessError:
                raise
            except Exception as e:  # noqa: BLE001
                raise HarnessError(f"Cheetah error while filling <configfile name='{cf.name}'>: {type(e).__name__}: {e}")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            if cf.filename:
                os.link(path, os.path.join(job.working, cf.filename))
            param_dict[cf.name] = path

        # ---- environment variables --------------------------------------------------------
        env = dict(os.environ)
        for ev in tool.source.parse_environment_variables():
            if ev.get("inject"):
                val = "test-api-key" if ev["inject"] == "api_key" else ""
            else:
                val = fill_template(ev["template"] or "", context=param_dict)
            env[ev["name"]] = val.strip() if ev.get("strip") else val

        # ---- command ------------------------------------------------------------------------
        command = tool.source.parse_command()
        if not command:
            raise HarnessError("tool has no <command>")
        try:
            command_line = render_command(command, param_dict, tool.python_template_version)
        except HarnessError:
            raise
        except Exception as e:  # noqa: BLE001
            raise HarnessError(f"Cheetah error while filling <command>: {type(e).__name__}: {e}")
        info["command_line"] = command_line
        script = os.path.join(workdir, "tool_script.sh")
        with open(script, "w") as f:
            f.write("#!/bin/bash\n")
            if tool.source.parse_strict_shell():
                f.write("set -e\n")
            f.write(f"cd '{job.working}'\n")
            f.write(command_line + "\n")
        version_cmd = tool.source.parse_version_command()
        env["PATH"] = os.pathsep.join([os.path.abspath(p) for p in args.path_prepend] + [env.get("PATH", "")])
        env["GALAXY_SLOTS"] = str(args.slots)
        if args.memory_mb:
            env["GALAXY_MEMORY_MB"] = str(args.memory_mb)
            env["GALAXY_MEMORY_MB_PER_SLOT"] = str(args.memory_mb // max(args.slots, 1))
        if tool.source.parse_home_target() == "job_home":
            env["HOME"] = job.home
        env["_GALAXY_JOB_HOME_DIR"] = job.home
        env["_GALAXY_JOB_TMP_DIR"] = job.tmp
        env["_GALAXY_JOB_DIR"] = workdir
        command_version = ""
        if version_cmd:
            vc = string.Template(version_cmd).safe_substitute({"__tool_directory__": tool.dir})
            vp = subprocess.run(["bash", "-c", vc], cwd=job.working, env=env, capture_output=True, text=True, timeout=60)
            command_version = (vp.stdout + vp.stderr).strip()
        timeout = test.maxseconds or args.timeout
        try:
            p = subprocess.run(["bash", script], cwd=job.working, env=env, capture_output=True, timeout=timeout)
            exit_code, stdout, stderr = p.returncode, unicodify(p.stdout), unicodify(p.stderr)
        except subprocess.TimeoutExpired as e:
            exit_code, stdout, stderr = -1, unicodify(e.stdout or b""), unicodify(e.stderr or b"")
            failures.append(f"job exceeded {timeout}s")
        info.update(stdout=stdout, stderr=stderr, exit_code=exit_code)
        exit_codes, regexes = tool.source.parse_stdio()
        state_, stdout, stderr, job_messages = check_output(regexes, exit_codes, stdout, stderr, exit_code)
        job_failed = state_ != DETECTED_JOB_STATE.OK

        # ---- collect outputs (from_work_dir, discovered datasets) ---------------------------
        for name, o in outputs.items():
            fwd = getattr(o.definition, "from_work_dir", None)
            if fwd:
                src = os.path.join(job.working, fwd)
                if os.path.exists(src):
                    shutil.move(src, o.path)
            if o.ext == "_sniff_":
                o.ext = sniff_ext(o.path)
        collections = {}
        for name, coll in output_coll_defs.items():
            elems = []
            for o in coll.static_outputs:
                fwd = getattr(o.definition, "from_work_dir", None)
                if fwd and os.path.exists(os.path.join(job.working, fwd)):
                    shutil.move(os.path.join(job.working, fwd), o.path)
                elems.append({"element_identifier": o.name, "path": o.path, "ext": o.ext})
            for d in discover(coll.structure.dataset_collector_descriptions, job.working):
                elems.append({"element_identifier": d["identifier"], "path": d["path"], "ext": d["ext"]})
            collections[name] = {"collection_type": coll.structure.collection_type or "list", "elements": elems}
        primaries = {}
        for name, o in outputs.items():
            descs = getattr(o.definition, "dataset_collector_descriptions", None) or []
            primaries[name] = discover(descs, job.working)
        info["outputs"] = {n: o.path for n, o in outputs.items()}

        # ---- verification (interactor._verify_outputs semantics) -----------------------------
        if test.expect_failure and test.outputs:
            failures.append("Cannot specify outputs in a test expecting failure.")
        if job_failed and not test.expect_failure:
            failures.append(f"job failed (exit code {exit_code}" + (f", {job_messages[0]['desc']}" if job_messages else "") + ")")
        if not job_failed and test.expect_failure:
            failures.append("Expected job to fail but the job completed successfully.")
        if test.num_outputs is not None:
            actual = len(outputs) + len(collections)
            if int(test.num_outputs) != actual:
                failures.append(f"Incorrect number of outputs - expected {test.num_outputs}, found {actual} "
                                f"(dataset(s): {','.join(outputs)} collection(s): {' '.join(collections)})")
        if test.expect_exit_code is not None and str(test.expect_exit_code) != str(exit_code):
            failures.append(f"Expected job to complete with exit code {test.expect_exit_code}, found {exit_code}")

        def get_filename(fname):
            return tool.find_test_file(fname)

        def verify_dataset_file(label_, path, ext, out_name, attributes, expected_file, extra_files_path=None, dataset_name=None):
            with open(path, "rb") as f:
                content = f.read()
            attributes = dict(attributes or {})

            def verify_extra_files(extra_files):
                for ef in extra_files:
                    if ef["type"] == "file":
                        files = [(ef["name"], ef["value"])]
                    else:
                        src_dir = get_filename(ef["value"])
                        files = [(os.path.relpath(os.path.join(r, fn), src_dir), os.path.join(ef["value"], os.path.relpath(os.path.join(r, fn), src_dir)))
                                 for r, _, fns in os.walk(src_dir) for fn in fns]
                    for rel, expected in files:
                        actual = os.path.join(extra_files_path or "", rel)
                        if not os.path.exists(actual):
                            raise AssertionError(f"{label_}: extra file '{rel}' was not produced")
                        with open(actual, "rb") as fh:
                            verify(f"{label_} extra file {rel}", fh.read(), attributes=ef.get("attributes") or {},
                                   filename=expected, get_filename=get_filename)
            if expected_file is None:
                attributes.pop("file", None)
            verify(label_, content, attributes=attributes, filename=expected_file, get_filename=get_filename,
                   keep_outputs_dir=args.update_test_data, verify_extra_files=verify_extra_files)
            md = get_metadata_to_test(attributes)
            actual_md = {"file_ext": ext, "name": dataset_name or out_name}
            for k, v in dataset_metadata(path, ext).items():
                actual_md[f"metadata_{k}"] = v
            for k, expected in md.items():
                if k not in actual_md:
                    job.notes.append(f"{label_}: metadata '{k}' cannot be verified offline (not checked)")
                    continue
                got = actual_md[k]
                if isinstance(got, (list, tuple)):
                    exp = str(expected).split(",")
                    if [str(x) for x in got] != [x.strip() for x in exp]:
                        raise AssertionError(f"{label_}: metadata [{k}] expected [{expected}] but found [{got}]")
                elif str(got) != str(expected):
                    raise AssertionError(f"{label_}: metadata [{k}] expected [{expected}] but found [{got}]")

        for i, od in enumerate(test.outputs):
            name, attributes = od["name"], od["attributes"]
            o = outputs.get(name)
            if o is None:
                failures.append(f"Tool did not produce an output with name '{name}'")
                continue
            try:
                verify_dataset_file(f"Output {name}", o.path, o.ext, name, attributes, od.get("value"),
                                    o.extra_files_path, o.label)
                disc = primaries.get(name, [])
                for key, lim in (("count", "=="), ("min", ">="), ("max", "<=")):
                    want = attributes.get(key)
                    if want is not None:
                        n = 1 + len(disc)
                        ok = {"==": n == int(want), ">=": n >= int(want), "<=": n <= int(want)}[lim]
                        if not ok:
                            raise AssertionError(f"Output '{name}': expected {key} {want} datasets, found {n}")
                for designation, (pfile, pattrs) in (attributes.get("primary_datasets") or {}).items():
                    match = [d for d in disc if d["identifier"] == designation]
                    if not match:
                        raise AssertionError(f"Failed to find primary dataset with designation [{designation}] for output [{name}]")
                    verify_dataset_file(f"Primary output {name}|{designation}", match[0]["path"], match[0]["ext"],
                                        designation, pattrs, pfile)
            except AssertionError as e:
                failures.append(str(e))

        for ocd in test.output_collections:
            name = ocd.name
            if name not in collections:
                failures.append(f"Failed to find output collection [{name}], tool outputs include [{','.join(collections)}]")
                continue
            c = collections[name]
            data_collection = {"collection_type": c["collection_type"], "elements": [
                {"element_identifier": e["element_identifier"], "element_type": "hda", "object": e} for e in c["elements"]]}

            def verify_dataset(element, element_attrib, element_outfile):
                obj = element["object"]
                verify_dataset_file(f"Output collection {name} element {element['element_identifier']}",
                                    obj["path"], obj["ext"], element["element_identifier"], element_attrib,
                                    element_outfile, None, element["element_identifier"])
            try:
                verify_collection(ocd, data_collection, verify_dataset)
            except AssertionError as e:
                failures.append(str(e))

        try:
            verify_job_metadata({"exit_code": exit_code, "stdout": stdout, "stderr": stderr,
                                 "command_line": command_line, "command_version": command_version,
                                 "job_messages": job_messages},
                                stdout_assertions=test.stdout, stderr_assertions=test.stderr,
                                command_assertions=test.command_line, command_version_assertions=test.command_version)
        except AssertionError as e:
            failures.append(f"stdio/command assertion: {e}")

        if tool.tool_type == "manage_data" and not job_failed and not failures:
            try:
                job.notes.extend(data_manager_post_process(tool, job, outputs, tool.table_confs))
            except AssertionError as e:
                failures.append(f"data manager post-processing: {e}")
            except Exception as e:  # noqa: BLE001
                failures.append(f"data manager post-processing error: {type(e).__name__}: {e}")

        if test.expect_test_failure:
            failures = [] if failures else ["Expected job to miss at least one test assumption but all were met."]
    except HarnessError as e:
        failures.append(str(e))
    except AssertionError as e:
        failures.append(str(e))
    except Exception as e:  # noqa: BLE001 - report, keep going
        import traceback

        failures.append(f"harness error: {type(e).__name__}: {e}")
        if args.verbose:
            failures.append(traceback.format_exc())
    dt = time.time() - t0
    return label, failures, info, (job.notes if job else []), dt


# --------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tool_dirs", nargs="+", metavar="TOOL_DIR", help="directory searched (recursively) for tool XML files")
    ap.add_argument("--tool", action="append", default=[], help="only this tool (file path, file name or tool id); repeatable")
    ap.add_argument("--test-data", action="append", default=[], help="test-data directory (default: test-data next to the tool or in a parent dir)")
    ap.add_argument("--tool-data-table-conf", action="append", default=[], help="tool_data_table_conf.xml file(s) (default: tool_data_table_conf.xml.test, else .sample, next to the tool or in a parent dir)")
    ap.add_argument("--tool-data-path", action="append", default=[], help="directory with .loc files for from_file options / .loc.sample fallback")
    ap.add_argument("--path-prepend", action="append", default=[], help="directory put in front of PATH for the job; repeatable")
    ap.add_argument("--slots", type=int, default=1, help="GALAXY_SLOTS (default 1)")
    ap.add_argument("--memory-mb", type=int, default=0, help="GALAXY_MEMORY_MB (default unset)")
    ap.add_argument("--timeout", type=int, default=600, help="per-test timeout in seconds unless the test sets maxseconds")
    ap.add_argument("--keep", action="store_true", help="keep job directories and print their location")
    ap.add_argument("--update-test-data", metavar="DIR", default=None, help="copy every compared output into DIR (like planemo --update_test_data)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print command lines, notes and job output for every test")
    args = ap.parse_args(argv)

    paths, roots = [], {}
    for tool_dir in args.tool_dirs:
        if not os.path.isdir(tool_dir):
            print(f"error: {tool_dir} is not a directory", file=sys.stderr)
            return 2
        for p in sorted(find_possible_tools_from_path(tool_dir, recursive=True)):
            if p not in roots:
                roots[p] = tool_dir
                paths.append(p)
    if args.tool:
        wanted = set(os.path.abspath(t) for t in args.tool) | set(args.tool)

        def selected(p):
            if os.path.abspath(p) in wanted or os.path.basename(p) in wanted:
                return True
            try:
                return get_tool_source(p).parse_id() in wanted
            except Exception:
                return False
        paths = [p for p in paths if selected(p)]
    if not paths:
        print(f"error: no tool XML found in {' '.join(args.tool_dirs)}", file=sys.stderr)
        return 1
    base_tmp = tempfile.mkdtemp(prefix="gxharness_")
    n_pass = n_fail = 0
    table_cache: Dict[Any, Any] = {}
    t_start = time.time()
    for path in paths:
        rel = os.path.relpath(path, roots[path])
        try:
            tool = ToolSpec(path, roots[path], args, table_cache)
            tests = list(parse_tool_test_descriptions(tool.source))
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {rel}: tool could not be loaded: {type(e).__name__}: {e}")
            n_fail += 1
            continue
        if not tests:
            print(f"FAIL {tool.id} ({rel}): tool has no tests")
            n_fail += 1
            continue
        for test in tests:
            label, failures, info, notes, dt = run_test(tool, test, args, base_tmp)
            if failures:
                n_fail += 1
                lines = "\n".join(failures).splitlines() or ["(no message)"]
                print(f"FAIL {label} [{dt:.1f}s]: {lines[0]}")
                for line in lines[1:]:
                    print(f"     | {line}")
            else:
                n_pass += 1
                print(f"PASS {label} [{dt:.1f}s]")
            if failures or args.verbose:
                if "command_line" in info:
                    print(f"     command: {info['command_line']}")
                for stream in ("stdout", "stderr"):
                    text = (info.get(stream) or "").strip()
                    if text:
                        tail = text.splitlines()[-15:]
                        print(f"     {stream} (last {len(tail)} lines):")
                        for line in tail:
                            print(f"       {line}")
            if notes and (failures or args.verbose):
                for n in notes:
                    print(f"     note: {n}")
            elif notes:
                unverified = [n for n in notes if any(k in n for k in ("not checked", "not applied", "cannot be", "not used"))]
                for n in unverified:
                    print(f"     note: {n}")
            if args.keep:
                print(f"     job dir: {info['workdir']}")
    if not args.keep:
        shutil.rmtree(base_tmp, ignore_errors=True)
    print(f"harness wall time: {time.time() - t_start:.1f}s")
    print(f"{n_pass} passed, {n_fail} failed")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
