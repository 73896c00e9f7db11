//! CSV/TSV inputs: token soup (quotes, separators, CR/LF, empty lines, numbers and non-numbers,
//! invalid UTF-8, very long fields) and plausible tables with some cells replaced by such tokens.

use proptest::prelude::*;
use proptest::sample::select;

use super::Bytes;

#[derive(Clone, Debug)]
pub struct CsvCase {
    /// File extension: `csv` (comma) or `tsv`/`txt` (tab).
    pub ext: &'static str,
    pub text: Bytes,
}

const SPECIAL: &[&str] = &[
    "\"",
    "\"\"",
    ",",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    " ",
    "",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "-1",
    "0",
    "1e400",
    "-0",
    "1e-400",
    "0x10",
    "1,5",
    "+3",
    ".5",
    "5.",
    "1_000",
    "\u{feff}",
    "\u{0}",
    "\u{e9}",
    "#",
    "'",
    "\\",
    "\"a,b\"",
    "\"a\"\"b\"",
    "\"\n\"",
    "cell",
    "gene",
];

fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => select(SPECIAL).prop_map(|s| s.as_bytes().to_vec()),
        3 => any::<f64>().prop_map(|v| v.to_string().into_bytes()),
        2 => any::<i64>().prop_map(|v| v.to_string().into_bytes()),
        2 => "[A-Za-z_][A-Za-z0-9_.-]{0,6}".prop_map(String::into_bytes),
        1 => prop::collection::vec(128u8..=255, 1..4),
        1 => prop::collection::vec(any::<u8>(), 1..6),
        1 => (select(&["x", "1", "\"", ",", "\t", " "][..]), 1usize..70_000)
            .prop_map(|(c, n)| c.repeat(n).into_bytes()),
    ]
}

fn soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(token(), 0..120).prop_map(|t| t.concat())
}

/// A header `cell,g1,..` and rows of numbers, with some cells replaced by tokens and some rows
/// short or long, so the reader gets past the header into its value parsing.
fn table(sep: u8) -> impl Strategy<Value = Vec<u8>> {
    (1usize..5, 0usize..6).prop_flat_map(move |(genes, rows)| {
        let cell = prop_oneof![
            6 => (-3i32..20).prop_map(|v| v.to_string().into_bytes()),
            2 => any::<f32>().prop_map(|v| v.to_string().into_bytes()),
            1 => Just(Vec::new()),
            1 => token(),
        ];
        let row = (
            prop_oneof![
                8 => Just(genes),
                1 => genes.saturating_sub(1)..genes + 3,
            ]
            .prop_flat_map(move |k| prop::collection::vec(cell.clone(), k)),
            select(&["\n", "\r\n", "\n\n", "\r"][..]),
        );
        (
            select(&["cell", "", "\"cell\"", "id,extra"][..]),
            prop::collection::vec("[a-zA-Z][a-zA-Z0-9]{0,4}", genes),
            prop::collection::vec(row, rows),
            any::<bool>(),
        )
            .prop_map(move |(id, genes, rows, final_newline)| {
                let s = [sep];
                let mut out = id.as_bytes().to_vec();
                for g in &genes {
                    out.extend_from_slice(&s);
                    out.extend_from_slice(g.as_bytes());
                }
                out.push(b'\n');
                for (i, (cells, nl)) in rows.iter().enumerate() {
                    out.extend_from_slice(format!("c{i}").as_bytes());
                    for c in cells {
                        out.extend_from_slice(&s);
                        out.extend_from_slice(c);
                    }
                    if i + 1 < rows.len() || final_newline {
                        out.extend_from_slice(nl.as_bytes());
                    }
                }
                out
            })
    })
}

pub fn csv_case() -> impl Strategy<Value = CsvCase> {
    let ext = select(&["csv", "tsv", "txt", "CSV"][..]);
    ext.prop_flat_map(|ext| {
        let sep = if ext.eq_ignore_ascii_case("csv") {
            b','
        } else {
            b'\t'
        };
        let text = prop_oneof![
            2 => soup(),
            3 => table(sep),
            1 => prop::collection::vec(any::<u8>(), 0..400),
        ];
        (Just(ext), text).prop_map(|(ext, t)| CsvCase {
            ext,
            text: Bytes(t),
        })
    })
}
