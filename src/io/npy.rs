//! NumPy `.npy` (format 1.0/2.0, C order): a row-streaming reader and a streaming f32 writer.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Largest header accepted (numpy's own default limit is 10,000 bytes).
const MAX_HEADER: usize = 1 << 16;

#[derive(Debug, Clone, Copy)]
enum Dtype {
    F4,
    F8,
    I4,
    I8,
    U4,
    U8,
    I2,
    U2,
    I1,
    U1,
}

impl Dtype {
    fn parse(descr: &str) -> Option<(Self, bool)> {
        let order = descr.chars().next()?;
        if !matches!(order, '<' | '>' | '=') {
            return None;
        }
        let code = &descr[1..];
        let big = order == '>';
        let d = match code {
            "f4" => Self::F4,
            "f8" => Self::F8,
            "i4" => Self::I4,
            "i8" => Self::I8,
            "u4" => Self::U4,
            "u8" => Self::U8,
            "i2" => Self::I2,
            "u2" => Self::U2,
            "i1" => Self::I1,
            "u1" | "b1" => Self::U1,
            _ => return None,
        };
        Some((d, big))
    }

    fn size(self) -> usize {
        match self {
            Self::F8 | Self::I8 | Self::U8 => 8,
            Self::F4 | Self::I4 | Self::U4 => 4,
            Self::I2 | Self::U2 => 2,
            Self::I1 | Self::U1 => 1,
        }
    }

    fn decode(self, b: &[u8], big: bool) -> f64 {
        macro_rules! num {
            ($t:ty, $n:expr) => {{
                let mut a = [0u8; $n];
                a.copy_from_slice(b);
                if big {
                    <$t>::from_be_bytes(a) as f64
                } else {
                    <$t>::from_le_bytes(a) as f64
                }
            }};
        }
        match self {
            Self::F4 => num!(f32, 4),
            Self::F8 => num!(f64, 8),
            Self::I4 => num!(i32, 4),
            Self::I8 => num!(i64, 8),
            Self::U4 => num!(u32, 4),
            Self::U8 => num!(u64, 8),
            Self::I2 => num!(i16, 2),
            Self::U2 => num!(u16, 2),
            Self::I1 => b[0] as i8 as f64,
            Self::U1 => b[0] as f64,
        }
    }
}

/// Parsed header of an `.npy` file.
#[derive(Debug, Clone)]
pub struct NpyHeader {
    pub shape: Vec<usize>,
    pub data_offset: u64,
    dtype: Dtype,
    big_endian: bool,
    pub is_f32: bool,
}

pub fn read_header(path: &Path) -> Result<NpyHeader> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)
        .with_context(|| format!("{}: too short to be a .npy file", path.display()))?;
    if &magic[..6] != b"\x93NUMPY" {
        bail!("{}: not a .npy file (bad magic)", path.display());
    }
    let (hlen, pre) = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            f.read_exact(&mut b)
                .with_context(|| format!("{}: truncated .npy header", path.display()))?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            f.read_exact(&mut b)
                .with_context(|| format!("{}: truncated .npy header", path.display()))?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => bail!("{}: unsupported .npy version {v}", path.display()),
    };
    let file_len = f.metadata()?.len();
    // numpy itself refuses headers over 10,000 bytes by default; a larger one is not an array header.
    if hlen > MAX_HEADER || (pre + hlen) as u64 > file_len {
        bail!(
            "{}: .npy header length {hlen} is implausible (file has {file_len} bytes)",
            path.display()
        );
    }
    let mut h = vec![0u8; hlen];
    f.read_exact(&mut h)
        .with_context(|| format!("{}: truncated .npy header", path.display()))?;
    let h = String::from_utf8_lossy(&h).to_string();
    let field = |key: &str| -> Option<String> {
        let i = h.find(&format!("'{key}'"))?;
        let rest = &h[i + key.len() + 2..];
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr")
        .and_then(|r| {
            r.strip_prefix('\'')
                .map(|s| s.split('\'').next().unwrap_or("").to_string())
        })
        .with_context(|| format!("{}: .npy header has no descr", path.display()))?;
    let (dtype, big_endian) = Dtype::parse(&descr.replace('|', "<")).with_context(|| {
        format!(
            "{}: unsupported .npy dtype '{descr}' (need a numeric dtype)",
            path.display()
        )
    })?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        bail!(
            "{}: Fortran-ordered .npy is not supported; save with np.ascontiguousarray",
            path.display()
        );
    }
    let shape_str =
        field("shape").with_context(|| format!("{}: .npy header has no shape", path.display()))?;
    let inner = shape_str
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .with_context(|| format!("{}: bad .npy shape", path.display()))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("{}: bad .npy shape '{inner}'", path.display()))?;
    let hdr = NpyHeader {
        shape,
        data_offset: (pre + hlen) as u64,
        dtype,
        big_endian,
        is_f32: matches!(dtype, Dtype::F4),
    };
    let need = hdr
        .shape
        .iter()
        .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64))
        .and_then(|n| n.checked_add(hdr.data_offset))
        .with_context(|| {
            format!(
                "{}: .npy shape {:?} is too large",
                path.display(),
                hdr.shape
            )
        })?;
    let have = file_len;
    if have < need {
        bail!(
            "{}: truncated .npy file ({have} bytes, header promises {need})",
            path.display()
        );
    }
    Ok(hdr)
}

/// Streams rows of a 2-D numeric `.npy` as f64. Cells are named by their row number.
pub struct NpyRows {
    path: PathBuf,
    header: NpyHeader,
    reader: BufReader<File>,
    next_row: usize,
    /// Row numbers as ids, made only when asked for (after the column count has been checked).
    ids: std::sync::OnceLock<Vec<String>>,
    scratch: Vec<f64>,
}

impl NpyRows {
    pub fn open(path: &Path) -> Result<Self> {
        let header = read_header(path)?;
        if header.shape.len() != 2 {
            bail!(
                "{}: expected a 2-D cells x genes array, found shape {:?}",
                path.display(),
                header.shape
            );
        }
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(header.data_offset))?;
        if header.shape[1] == 0 && header.shape[0] > 0 {
            bail!(
                "{}: shape {:?} has no columns",
                path.display(),
                header.shape
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            reader: BufReader::with_capacity(1 << 20, f),
            next_row: 0,
            ids: std::sync::OnceLock::new(),
            scratch: vec![],
        })
    }

    pub fn n_rows(&self) -> usize {
        self.header.shape[0]
    }

    pub fn n_cols(&self) -> usize {
        self.header.shape[1]
    }

    pub fn header(&self) -> &NpyHeader {
        &self.header
    }

    /// Reads the next row into `out` (resized to n_cols).
    pub fn next_row(&mut self, out: &mut Vec<f64>) -> Result<bool> {
        if self.next_row >= self.n_rows() {
            return Ok(false);
        }
        let size = self.header.dtype.size();
        let mut buf = vec![0u8; self.n_cols() * size];
        self.reader.read_exact(&mut buf).with_context(|| {
            format!(
                "{}: truncated data at row {}",
                self.path.display(),
                self.next_row
            )
        })?;
        out.clear();
        out.extend(
            buf.chunks_exact(size)
                .map(|b| self.header.dtype.decode(b, self.header.big_endian)),
        );
        self.next_row += 1;
        Ok(true)
    }
}

impl super::RowSource for NpyRows {
    fn cell_ids(&self) -> &[String] {
        self.ids
            .get_or_init(|| (0..self.header.shape[0]).map(|i| i.to_string()).collect())
    }

    fn n_rows(&self) -> usize {
        self.header.shape[0]
    }

    fn column_names(&self) -> Option<&[String]> {
        None
    }

    fn n_cols(&self) -> usize {
        self.header.shape[1]
    }

    fn next_rows(&mut self, count: usize) -> Result<Vec<super::SparseRow>> {
        let mut out = vec![];
        let mut row = std::mem::take(&mut self.scratch);
        while out.len() < count && self.next_row(&mut row)? {
            out.push(super::SparseRow::from_dense(&row));
        }
        self.scratch = row;
        Ok(out)
    }

    fn rewind(&mut self) -> Result<()> {
        self.reader.seek(SeekFrom::Start(self.header.data_offset))?;
        self.next_row = 0;
        Ok(())
    }
}

fn header_bytes(shape: &[usize]) -> Vec<u8> {
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let mut h = Vec::with_capacity(unpadded + pad);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((dict.len() + pad + 1) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    h
}

/// Writes an f32 array of known shape in row-major chunks.
pub struct NpyWriter {
    w: BufWriter<File>,
    expected: usize,
    written: usize,
}

impl NpyWriter {
    pub fn create(path: &Path, shape: &[usize]) -> Result<Self> {
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&header_bytes(shape))?;
        Ok(Self {
            w,
            expected: shape.iter().product(),
            written: 0,
        })
    }

    pub fn write(&mut self, data: &[f32]) -> Result<()> {
        for v in data {
            self.w.write_all(&v.to_le_bytes())?;
        }
        self.written += data.len();
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        if self.written != self.expected {
            bail!(
                "internal error: wrote {} values into an array of {}",
                self.written,
                self.expected
            );
        }
        self.w.flush()?;
        Ok(())
    }
}

/// Reads a whole f32-convertible `.npy` (used by tests and small inputs).
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let h = read_header(path)?;
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(h.data_offset))?;
    let mut buf = vec![];
    f.read_to_end(&mut buf)?;
    let size = h.dtype.size();
    let n: usize = h.shape.iter().product();
    let data = buf[..n * size]
        .chunks_exact(size)
        .map(|b| h.dtype.decode(b, h.big_endian) as f32)
        .collect();
    Ok((h.shape, data))
}
