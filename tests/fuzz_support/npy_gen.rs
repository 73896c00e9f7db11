//! `.npy` inputs: fully random bytes, and files built from parts (magic, version, header length
//! field that may lie, a header dict assembled from valid and hostile pieces, data of any length).

use proptest::prelude::*;
use proptest::sample::select;

use super::Bytes;

/// One `.npy` test file.
#[derive(Clone, Debug)]
pub enum NpyCase {
    /// Bytes as they are (random, or random after a valid magic).
    Raw(Bytes),
    Parts(NpyParts),
}

/// A `.npy` file from parts: `\x93NUMPY`, version byte, minor byte, header length (2 bytes for
/// version 1, 4 otherwise), the header text, the data.
#[derive(Clone, Debug)]
pub struct NpyParts {
    pub version: u8,
    pub hlen: HeaderLen,
    pub header: String,
    pub data: Bytes,
}

/// The header length field: the true length, a value, or the true length off by some bytes.
#[derive(Clone, Debug)]
pub enum HeaderLen {
    Exact,
    Value(u32),
    Off(i32),
}

impl NpyCase {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            NpyCase::Raw(b) => b.0.clone(),
            NpyCase::Parts(p) => p.bytes(),
        }
    }
}

impl NpyParts {
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = b"\x93NUMPY".to_vec();
        v.push(self.version);
        v.push(0);
        let h = self.header.as_bytes();
        let len = match self.hlen {
            HeaderLen::Exact => h.len() as i64,
            HeaderLen::Value(n) => n as i64,
            HeaderLen::Off(d) => h.len() as i64 + d as i64,
        };
        if self.version == 1 {
            v.extend_from_slice(&(len as u16).to_le_bytes());
        } else {
            v.extend_from_slice(&(len as u32).to_le_bytes());
        }
        v.extend_from_slice(h);
        v.extend_from_slice(&self.data.0);
        v
    }
}

const DESCRS: &[&str] = &[
    "", "<", "|b1", "<f2", "|O", "<U8", ">f8", "<c16", "<f4", "<f8", ">f4", "<i4", "<i8", ">i8",
    "<u4", "<u8", "<i2", ">u2", "|i1", "|u1", "<u1", "=f4", "=i2", "f4", "<f", "<f4 ", "<V8",
    "<M8[ns]", "|S3", "<f16", "<b1", "<\u{e9}4",
];

const DIMS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "7",
    "4294967296",
    "1099511627776",
    "1099511627775",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "2L",
    "0x10",
    "1e3",
    " 3 ",
    "",
    "None",
];

/// Dimensions at the edges of the size arithmetic (zero, one, beyond 32 and 64 bits).
const EDGE_DIMS: &[&str] = &[
    "0",
    "1",
    "3",
    "4294967296",
    "1099511627776",
    "9223372036854775808",
    "18446744073709551615",
];

fn quoted(s: &str) -> String {
    format!("'{s}'")
}

fn descr_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(DESCRS).prop_map(quoted),
        1 => "[ -~]{0,8}".prop_map(|s| quoted(&s)),
        1 => "[ -~]{0,8}",
        1 => Just("[('a', '<f4'), ('b', '<i8')]".to_string()),
        1 => Just("\"<f4\"".to_string()),
    ]
}

fn dim() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0usize..8).prop_map(|d| d.to_string()),
        3 => select(DIMS).prop_map(str::to_string),
        1 => any::<u64>().prop_map(|d| d.to_string()),
    ]
}

fn shape_value() -> impl Strategy<Value = String> {
    (prop::collection::vec(dim(), 0..=4), 0u8..10).prop_map(|(dims, style)| {
        let j = dims.join(", ");
        match style {
            0..=3 if dims.len() == 1 => format!("({j},)"),
            0..=4 => format!("({j})"),
            5 => format!("[{j}]"),
            6 => format!("({j}"),
            7 => j,
            8 => format!("({},,)", dims.join(",,")),
            _ => format!("(({j}))"),
        }
    })
}

fn fortran_value() -> impl Strategy<Value = String> {
    select(
        &[
            "True", "False", "0", "1", "None", "Tru", "'True'", "", "False)",
        ][..],
    )
    .prop_map(str::to_string)
}

/// A header dict from pieces: each key present or not, in any order, quoted in various ways.
fn header_text() -> impl Strategy<Value = String> {
    let entry = |key: &'static str, v: BoxedStrategy<String>| {
        (
            prop::option::weighted(0.9, v),
            prop_oneof![8 => Just("'"), 1 => Just("\""), 1 => Just("")],
            prop_oneof![8 => Just(": "), 2 => Just(":"), 1 => Just(" : "), 1 => Just(" ")],
        )
            .prop_map(move |(v, q, sep)| v.map(|v| format!("{q}{key}{q}{sep}{v}")))
    };
    (
        entry("descr", descr_value().boxed()),
        entry("fortran_order", fortran_value().boxed()),
        entry("shape", shape_value().boxed()),
        prop::option::weighted(0.1, "[ -~]{0,12}"),
        select(&[", ", ",", " , "][..]),
        any::<bool>(),
        0usize..80,
        select(&["\n", "", " ", "\n\n", "\0"][..]),
        any::<bool>(),
    )
        .prop_flat_map(|(d, f, s, junk, sep, trailing, pad, end, braces)| {
            let items: Vec<String> = [d, f, s, junk].into_iter().flatten().collect();
            (
                Just(items).prop_shuffle(),
                Just((sep, trailing, pad, end, braces)),
            )
        })
        .prop_map(|(items, (sep, trailing, pad, end, braces))| {
            let mut body = items.join(sep);
            if trailing {
                body.push_str(sep);
            }
            let mut h = if braces { format!("{{{body}}}") } else { body };
            h.push_str(&" ".repeat(pad));
            h.push_str(end);
            h
        })
}

fn header_len() -> impl Strategy<Value = HeaderLen> {
    prop_oneof![
        6 => Just(HeaderLen::Exact),
        2 => (-20i32..20).prop_map(HeaderLen::Off),
        1 => any::<u32>().prop_map(HeaderLen::Value),
        1 => select(&[0u32, 1, 0xffff, 0x1_0000, 0x1_0001, u32::MAX][..]).prop_map(HeaderLen::Value),
    ]
}

fn version() -> impl Strategy<Value = u8> {
    prop_oneof![8 => select(&[1u8, 2, 3][..]), 1 => any::<u8>()]
}

/// Hostile header pieces and data of any length.
fn hostile_parts() -> impl Strategy<Value = NpyParts> {
    (
        version(),
        header_len(),
        header_text(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(version, hlen, header, data)| NpyParts {
            version,
            hlen,
            header,
            data: Bytes(data),
        })
}

const GOOD_DESCRS: &[(&str, usize)] = &[
    ("<f4", 4),
    ("<f8", 8),
    (">f8", 8),
    ("<i4", 4),
    (">i4", 4),
    ("<i8", 8),
    ("<u4", 4),
    ("<u8", 8),
    ("<i2", 2),
    ("<u2", 2),
    ("|i1", 1),
    ("|u1", 1),
    ("|b1", 1),
    ("=f4", 4),
];

/// Mostly well-formed 2-D arrays (so row reading is reached), with data of the right length or a
/// few bytes off, numpy's padding or none.
fn plausible_parts() -> impl Strategy<Value = NpyParts> {
    let dims = prop_oneof![
        4 => (0usize..7, 0usize..7).prop_map(|(r, c)| vec![r.to_string(), c.to_string()]),
        2 => prop::collection::vec(select(EDGE_DIMS).prop_map(str::to_string), 2),
        1 => prop::collection::vec(dim(), 0..=4),
    ];
    (
        select(GOOD_DESCRS),
        dims,
        prop_oneof![3 => Just(0i32), 1 => -9i32..9],
        select(&[1u8, 2, 3][..]),
        any::<bool>(),
        prop_oneof![4 => Just(false), 1 => Just(true)],
    )
        .prop_flat_map(|((descr, size), dims, delta, version, pad, fortran)| {
            let elems = dims
                .iter()
                .map(|d| d.trim().parse::<usize>().unwrap_or(1))
                .try_fold(1usize, |a, d| a.checked_mul(d))
                .unwrap_or(usize::MAX);
            let n = (elems.min(4096) * size) as i64 + delta as i64;
            let data = prop::collection::vec(any::<u8>(), n.max(0) as usize);
            let shape = match dims.len() {
                1 => format!("({},)", dims[0]),
                _ => format!("({})", dims.join(", ")),
            };
            let mut header = format!(
                "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
                if fortran { "True" } else { "False" }
            );
            if pad {
                let pre = if version == 1 { 10 } else { 12 };
                let unpadded = pre + header.len() + 1;
                header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
            }
            header.push('\n');
            (Just(version), Just(header), data)
        })
        .prop_map(|(version, header, data)| NpyParts {
            version,
            hlen: HeaderLen::Exact,
            header,
            data: Bytes(data),
        })
}

fn raw_bytes() -> impl Strategy<Value = NpyCase> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..600),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(|tail| {
            let mut v = b"\x93NUMPY".to_vec();
            v.extend(tail);
            v
        }),
    ]
    .prop_map(|b| NpyCase::Raw(Bytes(b)))
}

/// Every kind of `.npy` input: random bytes, hostile parts, plausible arrays.
pub fn npy_case() -> impl Strategy<Value = NpyCase> {
    prop_oneof![
        2 => raw_bytes(),
        5 => hostile_parts().prop_map(NpyCase::Parts),
        4 => plausible_parts().prop_map(NpyCase::Parts),
    ]
}
