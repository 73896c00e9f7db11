//! Registry documents: arbitrary JSON values (recursive, any nesting), values shaped like the
//! registry format (`{"models": [{"name", "version", "files": [{"name", "urls", "url", "sha256",
//! "size", "format"}]}]}` and the other layouts `entries_of` accepts) with hostile field values,
//! number literals no `serde_json::Value` can hold (1e400, 2^64, -0), truncated text, deep nesting
//! and random bytes.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Number, Value};

use super::Bytes;

#[derive(Clone, Debug)]
pub enum JsonCase {
    /// Text from a generated value (with raw number literals spliced in), possibly cut short.
    Doc {
        text: String,
    },
    Raw(Bytes),
}

impl JsonCase {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            JsonCase::Doc { text } => text.as_bytes().to_vec(),
            JsonCase::Raw(b) => b.0.clone(),
        }
    }
}

/// A string placeholder replaced by the raw literal after serialisation.
fn raw_number(lit: &str) -> Value {
    Value::String(format!("@@RAW{lit}@@"))
}

fn splice_raw(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\"@@RAW") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 6..];
        match after.find("@@\"") {
            Some(j) => {
                out.push_str(&after[..j]);
                rest = &after[j + 3..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

const KEYS: &[&str] = &[
    "models",
    "entries",
    "name",
    "version",
    "files",
    "urls",
    "url",
    "sha256",
    "size",
    "format",
    "description",
    "license",
    "base_dir",
    "source",
    "",
];

const HOSTILE_NAMES: &[&str] = &[
    "m",
    "scfoundation",
    "scfoundation-tiny",
    "1.0",
    "2",
    "../../evil",
    "..",
    ".",
    "",
    "a/b",
    "a\\b",
    "/abs",
    "\u{0}",
    "nul\u{0}byte",
    "tab\there",
    "manifest.json",
    "m.ckpt.part",
    "m.ckpt",
    "model.safetensors",
    "con",
    "NAME@1",
    "m@",
    "@",
    " ",
    "\n",
    ".hidden",
    "\u{e9}t\u{e9}",
    "\u{202e}txt.exe",
    "a+b",
];

const URLS: &[&str] = &[
    "https://example.org/m.ckpt",
    "https://example.org/",
    "https://example.org/a/..",
    "https://example.org/a/.",
    "https://example.org/x?y=/z#f",
    "file:///etc/passwd",
    "../relative/m.ckpt",
    "m.ckpt",
    "",
    "/",
    "?",
    "#",
    "http://[::1",
    "https://example.org/%2e%2e",
    "https://example.org/\u{0}",
];

const NUM_LITERALS: &[&str] = &[
    "0",
    "-1",
    "1.5",
    "1e400",
    "-1e400",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1e19",
    "-0",
    "0.0",
    "1E2",
    "123456789012345678901234567890",
];

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(HOSTILE_NAMES).prop_map(str::to_string),
        2 => "[a-z0-9._+-]{1,12}",
        1 => "\\PC{0,12}",
        1 => (1usize..400).prop_map(|n| "x".repeat(n)),
    ]
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => hostile_string(),
        1 => select(KEYS).prop_map(str::to_string),
        1 => select(URLS).prop_map(str::to_string),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        select(NUM_LITERALS).prop_map(raw_number),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => number(),
        3 => json_string().prop_map(Value::String),
    ]
}

/// Any JSON value, nested up to 6 levels.
pub fn any_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((json_string(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn sha256() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[0-9a-f]{64}".prop_map(Value::String),
        1 => "[0-9A-F]{64}".prop_map(Value::String),
        1 => "[0-9a-f]{0,70}".prop_map(Value::String),
        1 => "[g-z0-9]{64}".prop_map(Value::String),
        1 => "[0-9a-f\u{e9}]{63}".prop_map(Value::String),
        1 => leaf(),
    ]
}

fn size() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any::<u64>().prop_map(Value::from),
        2 => select(NUM_LITERALS).prop_map(raw_number),
        1 => any::<i64>().prop_map(Value::from),
        1 => leaf(),
    ]
}

/// Sets `key` to the value when present; occasionally an arbitrary value instead.
fn field(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v);
    }
}

fn file_entry() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.6, hostile_string().prop_map(Value::String)),
        prop::option::weighted(
            0.8,
            prop::collection::vec(
                prop_oneof![3 => select(URLS).prop_map(|s| Value::String(s.into())), 1 => leaf()],
                0..3,
            )
            .prop_map(Value::Array),
        ),
        prop::option::weighted(0.3, select(URLS).prop_map(|s| Value::String(s.into()))),
        prop::option::weighted(0.6, sha256()),
        prop::option::weighted(0.6, size()),
        prop::option::weighted(
            0.4,
            prop_oneof![
                select(&["ckpt", "safetensors", "npy", ""][..])
                    .prop_map(|s| Value::String(s.into())),
                leaf()
            ],
        ),
        prop::option::weighted(0.1, (json_string(), any_value())),
    )
        .prop_map(|(name, urls, url, sha, size, format, junk)| {
            let mut m = Map::new();
            field(&mut m, "name", name);
            field(&mut m, "urls", urls);
            field(&mut m, "url", url);
            field(&mut m, "sha256", sha);
            field(&mut m, "size", size);
            field(&mut m, "format", format);
            if let Some((k, v)) = junk {
                m.insert(k, v);
            }
            Value::Object(m)
        })
}

fn model_entry() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(
            0.9,
            prop_oneof![4 => hostile_string().prop_map(Value::String), 1 => leaf()],
        ),
        prop::option::weighted(
            0.9,
            prop_oneof![4 => hostile_string().prop_map(Value::String), 1 => leaf()],
        ),
        prop::option::weighted(
            0.9,
            prop_oneof![
                6 => prop::collection::vec(file_entry(), 0..4).prop_map(Value::Array),
                1 => any_value(),
            ],
        ),
        prop::option::weighted(0.2, json_string().prop_map(Value::String)),
        prop::option::weighted(0.2, leaf()),
    )
        .prop_map(|(name, version, files, description, license)| {
            let mut m = Map::new();
            field(&mut m, "name", name);
            field(&mut m, "version", version);
            field(&mut m, "files", files);
            field(&mut m, "description", description);
            field(&mut m, "license", license);
            Value::Object(m)
        })
}

/// A registry document in one of the layouts `entries_of` accepts (or almost).
fn registry_value() -> impl Strategy<Value = Value> {
    let models = prop::collection::vec(model_entry(), 0..4);
    (models, 0u8..7, any_value()).prop_map(|(models, layout, other)| {
        let list = Value::Array(models.clone());
        match layout {
            0 | 1 => serde_json::json!({ "models": list }),
            2 => serde_json::json!({ "entries": list }),
            3 => list,
            4 => models.into_iter().next().unwrap_or(other),
            5 => Value::Object(
                models
                    .into_iter()
                    .enumerate()
                    .map(|(i, m)| (format!("m@{i}"), m))
                    .collect(),
            ),
            _ => serde_json::json!({ "models": { "models": list }, "entries": other }),
        }
    })
}

fn deep() -> impl Strategy<Value = String> {
    (
        1usize..3000,
        select(&["[", "{\"models\": ", "{\"a\":"][..]),
        any::<bool>(),
    )
        .prop_map(|(n, open, closed)| {
            let close = match open {
                "[" => "]",
                _ => "}",
            };
            let mut s = open.repeat(n);
            s.push_str("[]");
            if closed {
                s.push_str(&close.repeat(n));
            }
            s
        })
}

fn to_text(v: &Value, pretty: bool, cut: Option<usize>) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .expect("a Value serialises");
    let mut text = splice_raw(&text);
    if let Some(c) = cut {
        let mut c = c % (text.len() + 1);
        while !text.is_char_boundary(c) {
            c -= 1;
        }
        text.truncate(c);
    }
    text
}

pub fn json_case() -> impl Strategy<Value = JsonCase> {
    let doc = |v: BoxedStrategy<Value>| {
        (
            v,
            any::<bool>(),
            prop::option::weighted(0.1, any::<usize>()),
        )
            .prop_map(|(v, pretty, cut)| JsonCase::Doc {
                text: to_text(&v, pretty, cut),
            })
    };
    prop_oneof![
        6 => doc(registry_value().boxed()),
        2 => doc(any_value().boxed()),
        1 => deep().prop_map(|text| JsonCase::Doc { text }),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| JsonCase::Raw(Bytes(b))),
    ]
}
