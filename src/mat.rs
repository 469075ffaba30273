//! A small, defensive reader (and fixture writer) for MATLAB v5 MAT-files — the subset MPIIGaze's
//! `Data/Normalized/pXX/dayYY.mat` and NYU hands' `joint_data.mat` files use.
//!
//! No maintained crate reads v5 structs (the `matfile` crate stops at numeric arrays), so this
//! module owns the format: the 128-byte header (endian indicator `IM` little / `MI` big), data
//! elements (including the 4-byte "small element" form), `miCOMPRESSED` (zlib, via flate2) and
//! `miMATRIX` of classes double, single, int8…uint64, char, struct and cell. Numeric data stays in
//! MATLAB's column-major order; numeric values stored in a narrower type (MATLAB saves a double
//! array of small integers as `miUINT8`) are converted to the array's class.
//!
//! Every length, dimension product, nesting depth and decompressed size is checked against the
//! bytes actually present and against [`MatLimits`]: corrupt input gives a [`MatError`] naming the
//! problem, the byte offset and the variable path — never a panic or an allocation sized by an
//! unchecked length field. Complex, sparse, object and logical-specific semantics are out of scope
//! (complex/sparse/object are rejected; the logical flag is ignored, the data reads as uint8).
//!
//! [`write_mat`] writes the same subset (always little-endian). It exists to build test fixtures
//! with the real MPIIGaze layout; it writes values as given, without validation.

use std::fmt;
use std::io::{Read, Write};

// Data element types (MATLAB "MAT-File Format", table 1-1).
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

// Array classes (table 1-3).
const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_OBJECT: u8 = 3;
const MX_CHAR: u8 = 4;
const MX_SPARSE: u8 = 5;
const MX_DOUBLE: u8 = 6;
const MX_SINGLE: u8 = 7;
const MX_INT8: u8 = 8;
const MX_UINT8: u8 = 9;
const MX_INT16: u8 = 10;
const MX_UINT16: u8 = 11;
const MX_INT32: u8 = 12;
const MX_UINT32: u8 = 13;
const MX_INT64: u8 = 14;
const MX_UINT64: u8 = 15;

const FLAG_COMPLEX: u32 = 0x0800;
const HEADER_LEN: usize = 128;

/// Resource limits applied while reading.
#[derive(Debug, Clone)]
pub struct MatLimits {
    /// Total bytes all `miCOMPRESSED` elements of one file may inflate to (default 512 MiB;
    /// a day file of MPIIGaze's Normalized set, a few thousand 36×60 eye pairs, inflates to MBs).
    pub max_decompressed: u64,
    /// Deepest nesting of struct/cell values (a top-level variable is depth 0).
    pub max_depth: usize,
}

impl Default for MatLimits {
    fn default() -> Self {
        MatLimits {
            max_decompressed: 512 << 20,
            max_depth: 32,
        }
    }
}

/// Where in the input an error was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatPos {
    /// Byte offset in the file (for data inside a compressed element: the element's offset).
    pub offset: u64,
    /// Byte offset within the inflated data of that compressed element, if inside one.
    pub inflated: Option<u64>,
}

impl fmt::Display for MatPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inflated {
            None => write!(f, "byte {}", self.offset),
            Some(i) => write!(
                f,
                "byte {} of the compressed element at byte {}",
                i, self.offset
            ),
        }
    }
}

/// What was wrong with a MAT-file.
#[derive(Debug, thiserror::Error)]
pub enum MatErrorKind {
    #[error("bad header: {0}")]
    Header(String),
    #[error("truncated: {what} needs {need} bytes, {have} left")]
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("zlib stream is corrupt: {0}")]
    Zlib(std::io::Error),
    #[error("limit exceeded: {0}")]
    Limit(String),
}

/// A MAT-file read error: what was wrong, at which byte, in which variable (`data.left.image`).
#[derive(Debug, thiserror::Error)]
#[error("MAT-file {at}{}: {kind}", in_var(.path))]
pub struct MatError {
    pub at: MatPos,
    pub path: String,
    pub kind: MatErrorKind,
}

fn in_var(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" (in `{path}`)")
    }
}

/// Numeric array data in column-major order, typed by the array's MATLAB class.
#[derive(Debug, Clone, PartialEq)]
pub enum NumericData {
    F64(Vec<f64>),
    F32(Vec<f32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
}

/// One MATLAB value of the supported subset.
#[derive(Debug, Clone, PartialEq)]
pub enum MatValue {
    /// A real numeric array; `data.len()` is the product of `dims`.
    Numeric { dims: Vec<usize>, data: NumericData },
    /// A char array (at most 2-D). `text` holds the characters row by row (a 1×N array is just
    /// the string; an M×N array is its M rows of N characters concatenated, see [`MatValue::char_rows`]).
    Char { dims: Vec<usize>, text: String },
    /// A struct array: for each field (in file order), one value per element (column-major).
    Struct {
        dims: Vec<usize>,
        fields: Vec<(String, Vec<MatValue>)>,
    },
    /// A cell array: one value per element (column-major).
    Cell {
        dims: Vec<usize>,
        items: Vec<MatValue>,
    },
}

impl NumericData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NumericData::F64(v) => v.len(),
            NumericData::F32(v) => v.len(),
            NumericData::I8(v) => v.len(),
            NumericData::U8(v) => v.len(),
            NumericData::I16(v) => v.len(),
            NumericData::U16(v) => v.len(),
            NumericData::I32(v) => v.len(),
            NumericData::U32(v) => v.len(),
            NumericData::I64(v) => v.len(),
            NumericData::U64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// MATLAB class name (`double`, `uint8`, …).
    pub fn class_name(&self) -> &'static str {
        match self {
            NumericData::F64(_) => "double",
            NumericData::F32(_) => "single",
            NumericData::I8(_) => "int8",
            NumericData::U8(_) => "uint8",
            NumericData::I16(_) => "int16",
            NumericData::U16(_) => "uint16",
            NumericData::I32(_) => "int32",
            NumericData::U32(_) => "uint32",
            NumericData::I64(_) => "int64",
            NumericData::U64(_) => "uint64",
        }
    }

    /// All elements converted to `f64` (64-bit integers beyond 2^53 lose precision).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            NumericData::F64(v) => v.clone(),
            NumericData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NumericData::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NumericData::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NumericData::I16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NumericData::U16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NumericData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NumericData::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            NumericData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            NumericData::U64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

impl MatValue {
    /// A 1×N char array holding `s`.
    pub fn char_row(s: &str) -> MatValue {
        MatValue::Char {
            dims: vec![1, s.encode_utf16().count()],
            text: s.to_string(),
        }
    }

    /// A column (N×1) cell array of 1×len char arrays — how MATLAB stores a list of names.
    pub fn cell_of_strings<S: AsRef<str>>(items: &[S]) -> MatValue {
        MatValue::Cell {
            dims: vec![items.len(), 1],
            items: items
                .iter()
                .map(|s| MatValue::char_row(s.as_ref()))
                .collect(),
        }
    }

    /// A 1×1 struct with the given fields.
    pub fn scalar_struct(fields: Vec<(String, MatValue)>) -> MatValue {
        MatValue::Struct {
            dims: vec![1, 1],
            fields: fields.into_iter().map(|(n, v)| (n, vec![v])).collect(),
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        match self {
            MatValue::Numeric { dims, .. }
            | MatValue::Char { dims, .. }
            | MatValue::Struct { dims, .. }
            | MatValue::Cell { dims, .. } => dims,
        }
    }

    /// A short description for error messages: `uint8 3×36×60`, `struct 1×1`.
    pub fn describe(&self) -> String {
        let class = match self {
            MatValue::Numeric { data, .. } => data.class_name(),
            MatValue::Char { .. } => "char",
            MatValue::Struct { .. } => "struct",
            MatValue::Cell { .. } => "cell",
        };
        let dims: Vec<String> = self.dims().iter().map(|d| d.to_string()).collect();
        format!("{class} {}", dims.join("×"))
    }

    /// Field `name` of a 1×1 struct (`None` for other values or a missing field).
    pub fn field(&self, name: &str) -> Option<&MatValue> {
        match self {
            MatValue::Struct { fields, .. } => fields
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| if v.len() == 1 { v.first() } else { None }),
            _ => None,
        }
    }

    /// The rows of a 2-D char array (a 1×N array gives one row).
    pub fn char_rows(&self) -> Option<Vec<String>> {
        match self {
            MatValue::Char { dims, text } => {
                let units: Vec<u16> = text.encode_utf16().collect();
                let rows = dims.first().copied().unwrap_or(0);
                if rows == 0 || units.is_empty() {
                    return Some(Vec::new());
                }
                let cols = units.len() / rows;
                Some(
                    units
                        .chunks(cols.max(1))
                        .map(String::from_utf16_lossy)
                        .collect(),
                )
            }
            _ => None,
        }
    }
}

/// Look a variable up by name in [`read_mat`]'s output.
pub fn find_var<'a>(vars: &'a [(String, MatValue)], name: &str) -> Option<&'a MatValue> {
    vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// Read all variables of a v5 MAT-file with the default [`MatLimits`].
pub fn read_mat(bytes: &[u8]) -> Result<Vec<(String, MatValue)>, MatError> {
    read_mat_with(bytes, &MatLimits::default())
}

/// Read all variables of a v5 MAT-file.
pub fn read_mat_with(
    bytes: &[u8],
    limits: &MatLimits,
) -> Result<Vec<(String, MatValue)>, MatError> {
    let at0 = MatPos {
        offset: 0,
        inflated: None,
    };
    let header_err = |m: String| MatError {
        at: at0,
        path: String::new(),
        kind: MatErrorKind::Header(m),
    };
    if bytes.len() < HEADER_LEN {
        return Err(MatError {
            at: at0,
            path: String::new(),
            kind: MatErrorKind::Truncated {
                what: "the 128-byte header",
                need: HEADER_LEN as u64,
                have: bytes.len() as u64,
            },
        });
    }
    let le = match &bytes[126..128] {
        b"IM" => true,
        b"MI" => false,
        other => {
            return Err(header_err(format!(
                "endian indicator at byte 126 is {other:?}, expected \"IM\" or \"MI\""
            )));
        }
    };
    let version = if le {
        u16::from_le_bytes([bytes[124], bytes[125]])
    } else {
        u16::from_be_bytes([bytes[124], bytes[125]])
    };
    if version != 0x0100 {
        let hint = if version == 0x0200 {
            " (v7.3 files are HDF5; re-save with -v7)"
        } else {
            ""
        };
        return Err(header_err(format!(
            "version 0x{version:04x} at byte 124, expected 0x0100{hint}"
        )));
    }
    let mut budget = limits.max_decompressed;
    let file = Ctx {
        buf: bytes,
        le,
        compressed_at: None,
        limits,
    };
    let mut vars = Vec::new();
    let mut i = HEADER_LEN;
    while i < bytes.len() {
        let e = file.tag(i, bytes.len(), "")?;
        match e.ty {
            MI_MATRIX => vars.push(file.matrix(&e, 0, None)?),
            MI_COMPRESSED => {
                let inflated = inflate(&bytes[e.data..e.data + e.len], &mut budget)
                    .map_err(|kind| file.err(e.at, "", kind))?;
                let inner = Ctx {
                    buf: &inflated,
                    le,
                    compressed_at: Some(e.at as u64),
                    limits,
                };
                let mut j = 0;
                while j < inflated.len() {
                    let m = inner.tag(j, inflated.len(), "")?;
                    if m.ty != MI_MATRIX {
                        return Err(inner.invalid(
                            j,
                            "",
                            format!("compressed element holds type {}, expected miMATRIX", m.ty),
                        ));
                    }
                    vars.push(inner.matrix(&m, 0, None)?);
                    j = m.next;
                }
            }
            t => {
                return Err(file.invalid(
                    i,
                    "",
                    format!(
                        "top-level element of type {t}, expected miMATRIX (14) or miCOMPRESSED (15)"
                    ),
                ));
            }
        }
        i = e.next;
    }
    Ok(vars)
}

/// Inflate a zlib stream, charging its size to `budget`.
fn inflate(z: &[u8], budget: &mut u64) -> Result<Vec<u8>, MatErrorKind> {
    let mut out = Vec::new();
    let cap = *budget;
    flate2::read::ZlibDecoder::new(z)
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(MatErrorKind::Zlib)?;
    if out.len() as u64 > cap {
        return Err(MatErrorKind::Limit(format!(
            "compressed data inflates beyond the {cap}-byte budget left"
        )));
    }
    *budget -= out.len() as u64;
    Ok(out)
}

/// One data element: its type, where its data lies in the buffer, and where the next one starts.
struct Elem {
    at: usize,
    ty: u32,
    data: usize,
    len: usize,
    next: usize,
}

/// A buffer being parsed: the file itself or the inflated content of one compressed element.
struct Ctx<'a> {
    buf: &'a [u8],
    le: bool,
    compressed_at: Option<u64>,
    limits: &'a MatLimits,
}

fn arr<const N: usize>(c: &[u8], le: bool) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&c[..N]);
    if !le {
        a.reverse();
    }
    a
}

impl Ctx<'_> {
    fn pos(&self, i: usize) -> MatPos {
        match self.compressed_at {
            None => MatPos {
                offset: i as u64,
                inflated: None,
            },
            Some(o) => MatPos {
                offset: o,
                inflated: Some(i as u64),
            },
        }
    }

    fn err(&self, i: usize, path: &str, kind: MatErrorKind) -> MatError {
        MatError {
            at: self.pos(i),
            path: path.to_string(),
            kind,
        }
    }

    fn invalid(&self, i: usize, path: &str, msg: String) -> MatError {
        self.err(i, path, MatErrorKind::Invalid(msg))
    }

    fn u32_at(&self, i: usize) -> u32 {
        u32::from_le_bytes(arr(&self.buf[i..i + 4], self.le))
    }

    /// The element tag at `i`, whose data must end by `end`.
    fn tag(&self, i: usize, end: usize, path: &str) -> Result<Elem, MatError> {
        if end.saturating_sub(i) < 8 {
            let have = end.saturating_sub(i) as u64;
            return Err(self.err(
                i,
                path,
                MatErrorKind::Truncated {
                    what: "a data element tag",
                    need: 8,
                    have,
                },
            ));
        }
        let v = self.u32_at(i);
        if v >> 16 != 0 {
            // Small data element: 16-bit byte count and type, data in the tag's second word.
            let len = (v >> 16) as usize;
            if len > 4 {
                return Err(self.invalid(
                    i,
                    path,
                    format!("small data element declares {len} bytes (at most 4)"),
                ));
            }
            return Ok(Elem {
                at: i,
                ty: v & 0xffff,
                data: i + 4,
                len,
                next: i + 8,
            });
        }
        let len = self.u32_at(i + 4) as usize;
        let data = i + 8;
        if len > end - data {
            let have = (end - data) as u64;
            return Err(self.err(
                i,
                path,
                MatErrorKind::Truncated {
                    what: "data element",
                    need: len as u64,
                    have,
                },
            ));
        }
        // Elements are padded to 8 bytes, except compressed ones; tolerate missing final padding.
        let next = if v == MI_COMPRESSED {
            data + len
        } else {
            (data + len.next_multiple_of(8)).min(end)
        };
        Ok(Elem {
            at: i,
            ty: v,
            data,
            len,
            next,
        })
    }

    /// Tag at `*i`, which must have one of the types `tys`; advances `*i` past it.
    fn sub(
        &self,
        i: &mut usize,
        end: usize,
        path: &str,
        what: &str,
        tys: &[u32],
    ) -> Result<Elem, MatError> {
        let e = self.tag(*i, end, path)?;
        if !tys.contains(&e.ty) {
            return Err(self.invalid(
                *i,
                path,
                format!("{what}: element type {}, expected {tys:?}", e.ty),
            ));
        }
        *i = e.next;
        Ok(e)
    }

    /// Parse one miMATRIX element. `path` is `None` for a top-level variable (named by the
    /// element) and the struct/cell path of a nested value otherwise.
    fn matrix(
        &self,
        e: &Elem,
        depth: usize,
        path: Option<&str>,
    ) -> Result<(String, MatValue), MatError> {
        let p = path.unwrap_or("");
        if depth > self.limits.max_depth {
            return Err(self.err(
                e.at,
                p,
                MatErrorKind::Limit(format!(
                    "values nested deeper than {}",
                    self.limits.max_depth
                )),
            ));
        }
        if e.len == 0 {
            // MATLAB writes an empty miMATRIX for some empty values.
            return Ok((
                String::new(),
                MatValue::Numeric {
                    dims: vec![0, 0],
                    data: NumericData::F64(Vec::new()),
                },
            ));
        }
        let end = e.data + e.len;
        let mut i = e.data;
        let flags_e = self.sub(&mut i, end, p, "array flags", &[MI_UINT32])?;
        if flags_e.len != 8 {
            return Err(self.invalid(
                flags_e.at,
                p,
                format!("array flags are {} bytes, expected 8", flags_e.len),
            ));
        }
        let flags = self.u32_at(flags_e.data);
        let class = (flags & 0xff) as u8;

        let dims_e = self.sub(&mut i, end, p, "dimensions", &[MI_INT32])?;
        if dims_e.len == 0 || dims_e.len % 4 != 0 {
            return Err(self.invalid(
                dims_e.at,
                p,
                format!(
                    "dimensions are {} bytes, expected a positive multiple of 4",
                    dims_e.len
                ),
            ));
        }
        let mut dims = Vec::with_capacity(dims_e.len / 4);
        let mut n: usize = 1;
        for k in 0..dims_e.len / 4 {
            let d = self.u32_at(dims_e.data + 4 * k) as i32;
            let d = usize::try_from(d).map_err(|_| {
                self.invalid(dims_e.at, p, format!("dimension {k} is negative ({d})"))
            })?;
            n = n.checked_mul(d).ok_or_else(|| {
                self.invalid(
                    dims_e.at,
                    p,
                    format!("dimension product {dims:?}×{d} overflows"),
                )
            })?;
            dims.push(d);
        }

        let name_e = self.sub(&mut i, end, p, "array name", &[MI_INT8, MI_UINT8, MI_UTF8])?;
        let name = std::str::from_utf8(&self.buf[name_e.data..name_e.data + name_e.len])
            .map_err(|_| self.invalid(name_e.at, p, "array name is not UTF-8".into()))?
            .to_string();
        let owned;
        let p: &str = match path {
            Some(p) => p,
            None => {
                owned = name.clone();
                &owned
            }
        };

        if flags & FLAG_COMPLEX != 0 {
            return Err(self.err(e.at, p, MatErrorKind::Unsupported("complex arrays".into())));
        }
        let value = match class {
            MX_DOUBLE..=MX_UINT64 => {
                let d = self.tag(i, end, p)?;
                let data = self.numeric(class, &d, n, p)?;
                MatValue::Numeric { dims, data }
            }
            MX_CHAR => {
                let d = self.tag(i, end, p)?;
                let text = self.chars(&d, &dims, n, p)?;
                MatValue::Char { dims, text }
            }
            MX_CELL => {
                self.need_children(i, end, n, 1, p)?;
                let mut items = Vec::new();
                for k in 0..n {
                    let child_path = format!("{p}{{{}}}", k + 1);
                    let c = self.sub(&mut i, end, &child_path, "cell element", &[MI_MATRIX])?;
                    items.push(self.matrix(&c, depth + 1, Some(&child_path))?.1);
                }
                MatValue::Cell { dims, items }
            }
            MX_STRUCT => {
                let len_e = self.sub(&mut i, end, p, "field name length", &[MI_INT32])?;
                if len_e.len != 4 {
                    return Err(self.invalid(
                        len_e.at,
                        p,
                        format!("field name length is {} bytes, expected 4", len_e.len),
                    ));
                }
                let fl = self.u32_at(len_e.data) as usize;
                let names_e = self.sub(&mut i, end, p, "field names", &[MI_INT8, MI_UINT8])?;
                if fl == 0 || names_e.len % fl != 0 {
                    return Err(self.invalid(names_e.at, p, format!("field names are {} bytes, not a multiple of the field name length {fl}", names_e.len)));
                }
                let mut fields = Vec::new();
                for raw in self.buf[names_e.data..names_e.data + names_e.len].chunks(fl) {
                    let raw = raw.split(|&b| b == 0).next().unwrap_or(&[]);
                    let f = std::str::from_utf8(raw).map_err(|_| {
                        self.invalid(names_e.at, p, "field name is not UTF-8".into())
                    })?;
                    fields.push((f.to_string(), Vec::new()));
                }
                self.need_children(i, end, n, fields.len(), p)?;
                let count = if fields.is_empty() { 0 } else { n };
                for k in 0..count {
                    for (f, values) in fields.iter_mut() {
                        let child_path = if n == 1 {
                            format!("{p}.{f}")
                        } else {
                            format!("{p}({}).{f}", k + 1)
                        };
                        let c = self.sub(&mut i, end, &child_path, "struct field", &[MI_MATRIX])?;
                        values.push(self.matrix(&c, depth + 1, Some(&child_path))?.1);
                    }
                }
                MatValue::Struct { dims, fields }
            }
            MX_OBJECT => {
                return Err(self.err(
                    e.at,
                    p,
                    MatErrorKind::Unsupported("MATLAB objects (class 3)".into()),
                ));
            }
            MX_SPARSE => {
                return Err(self.err(
                    e.at,
                    p,
                    MatErrorKind::Unsupported("sparse arrays (class 5)".into()),
                ));
            }
            c => {
                return Err(self.err(
                    e.at,
                    p,
                    MatErrorKind::Unsupported(format!("array class {c}")),
                ));
            }
        };
        Ok((name, value))
    }

    /// Check up front that `n * per` child elements (≥ 8 bytes each) can fit before `end`.
    fn need_children(
        &self,
        i: usize,
        end: usize,
        n: usize,
        per: usize,
        p: &str,
    ) -> Result<(), MatError> {
        let need = n.checked_mul(per).and_then(|c| c.checked_mul(8));
        let have = end.saturating_sub(i);
        match need {
            Some(need) if need <= have => Ok(()),
            _ => Err(self.err(
                i,
                p,
                MatErrorKind::Truncated {
                    what: "struct/cell elements",
                    need: need.map_or(u64::MAX, |x| x as u64),
                    have: have as u64,
                },
            )),
        }
    }

    fn numeric(&self, class: u8, d: &Elem, n: usize, p: &str) -> Result<NumericData, MatError> {
        let size = match d.ty {
            MI_INT8 | MI_UINT8 => 1,
            MI_INT16 | MI_UINT16 => 2,
            MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
            MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
            t => return Err(self.invalid(d.at, p, format!("numeric data has element type {t}"))),
        };
        if n.checked_mul(size) != Some(d.len) {
            return Err(self.invalid(
                d.at,
                p,
                format!(
                    "{n} elements need {n}×{size} bytes, data element has {}",
                    d.len
                ),
            ));
        }
        let b = &self.buf[d.data..d.data + d.len];
        let (le, ty) = (self.le, d.ty);
        macro_rules! conv {
            ($t:ty) => {
                match ty {
                    MI_INT8 => b.iter().map(|&x| x as i8 as $t).collect::<Vec<$t>>(),
                    MI_UINT8 => b.iter().map(|&x| x as $t).collect(),
                    MI_INT16 => b
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes(arr(c, le)) as $t)
                        .collect(),
                    MI_UINT16 => b
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes(arr(c, le)) as $t)
                        .collect(),
                    MI_INT32 => b
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(arr(c, le)) as $t)
                        .collect(),
                    MI_UINT32 => b
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes(arr(c, le)) as $t)
                        .collect(),
                    MI_SINGLE => b
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(arr(c, le)) as $t)
                        .collect(),
                    MI_DOUBLE => b
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(arr(c, le)) as $t)
                        .collect(),
                    MI_INT64 => b
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(arr(c, le)) as $t)
                        .collect(),
                    _ => b
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(arr(c, le)) as $t)
                        .collect(),
                }
            };
        }
        Ok(match class {
            MX_DOUBLE => NumericData::F64(conv!(f64)),
            MX_SINGLE => NumericData::F32(conv!(f32)),
            MX_INT8 => NumericData::I8(conv!(i8)),
            MX_UINT8 => NumericData::U8(conv!(u8)),
            MX_INT16 => NumericData::I16(conv!(i16)),
            MX_UINT16 => NumericData::U16(conv!(u16)),
            MX_INT32 => NumericData::I32(conv!(i32)),
            MX_UINT32 => NumericData::U32(conv!(u32)),
            MX_INT64 => NumericData::I64(conv!(i64)),
            _ => NumericData::U64(conv!(u64)),
        })
    }

    /// Char data (UTF-16 code units, or UTF-8/UTF-32/bytes), reordered from column-major to rows.
    fn chars(&self, d: &Elem, dims: &[usize], n: usize, p: &str) -> Result<String, MatError> {
        let b = &self.buf[d.data..d.data + d.len];
        let le = self.le;
        let bad = |m: &str| self.invalid(d.at, p, m.to_string());
        let units: Vec<u16> = match d.ty {
            MI_UINT16 | MI_UTF16 | MI_INT16 if d.len.is_multiple_of(2) => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes(arr(c, le)))
                .collect(),
            MI_UINT8 | MI_INT8 => b.iter().map(|&x| u16::from(x)).collect(),
            MI_UTF8 => std::str::from_utf8(b)
                .map_err(|_| bad("char data is not valid UTF-8"))?
                .encode_utf16()
                .collect(),
            MI_UTF32 if d.len.is_multiple_of(4) => {
                let mut s = String::new();
                for c in b.chunks_exact(4) {
                    s.push(
                        char::from_u32(u32::from_le_bytes(arr(c, le)))
                            .ok_or_else(|| bad("char data is not valid UTF-32"))?,
                    );
                }
                s.encode_utf16().collect()
            }
            t => {
                return Err(self.invalid(
                    d.at,
                    p,
                    format!("char data has element type {t} and {} bytes", d.len),
                ));
            }
        };
        if units.len() != n {
            return Err(self.invalid(
                d.at,
                p,
                format!(
                    "char array of {n} characters has {} in its data",
                    units.len()
                ),
            ));
        }
        let rows = dims.first().copied().unwrap_or(1);
        if dims.len() > 2 && rows.checked_mul(dims[1]) != Some(n) {
            return Err(self.err(
                d.at,
                p,
                MatErrorKind::Unsupported(format!("char arrays with dimensions {dims:?}")),
            ));
        }
        let units = if rows > 1 {
            let cols = n / rows;
            (0..n)
                .map(|k| units[(k % cols) * rows + k / cols])
                .collect()
        } else {
            units
        };
        String::from_utf16(&units).map_err(|_| bad("char data is not valid UTF-16"))
    }
}

/// **Fixture/test helper**: write `vars` as a little-endian v5 MAT-file, each variable optionally
/// wrapped in `miCOMPRESSED` (as MATLAB's default `save` does). Values are written as given: dims
/// that disagree with the data produce a file that [`read_mat`] rejects, which tests may want.
/// Lengths beyond `u32` are not supported (this is for small fixtures).
pub fn write_mat(vars: &[(String, MatValue)], compress: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut text = b"MATLAB 5.0 MAT-file, Platform: simgan fixture writer".to_vec();
    text.resize(116, b' ');
    out.extend_from_slice(&text);
    out.extend_from_slice(&[0u8; 8]); // subsystem data offset: none
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for (name, value) in vars {
        let m = matrix_element(name, value);
        if compress {
            let mut enc =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            if let Ok(z) = enc.write_all(&m).and_then(|_| enc.finish()) {
                out.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
                out.extend_from_slice(&(z.len() as u32).to_le_bytes());
                out.extend_from_slice(&z);
                continue;
            }
        }
        out.extend_from_slice(&m);
    }
    out
}

/// Append one data element (small format when 1–4 bytes), padded to 8 bytes.
fn put(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    if (1..=4).contains(&data.len()) {
        out.extend_from_slice(&(ty | (data.len() as u32) << 16).to_le_bytes());
        let mut word = [0u8; 4];
        word[..data.len()].copy_from_slice(data);
        out.extend_from_slice(&word);
    } else {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(8), 0);
    }
}

/// A complete miMATRIX element (tag included).
fn matrix_element(name: &str, v: &MatValue) -> Vec<u8> {
    let class = match v {
        MatValue::Numeric { data, .. } => match data {
            NumericData::F64(_) => MX_DOUBLE,
            NumericData::F32(_) => MX_SINGLE,
            NumericData::I8(_) => MX_INT8,
            NumericData::U8(_) => MX_UINT8,
            NumericData::I16(_) => MX_INT16,
            NumericData::U16(_) => MX_UINT16,
            NumericData::I32(_) => MX_INT32,
            NumericData::U32(_) => MX_UINT32,
            NumericData::I64(_) => MX_INT64,
            NumericData::U64(_) => MX_UINT64,
        },
        MatValue::Char { .. } => MX_CHAR,
        MatValue::Struct { .. } => MX_STRUCT,
        MatValue::Cell { .. } => MX_CELL,
    };
    let mut b = Vec::new();
    let mut flags = [0u8; 8];
    flags[0] = class;
    put(&mut b, MI_UINT32, &flags);
    let dims: Vec<u8> = v
        .dims()
        .iter()
        .flat_map(|&d| (d as i32).to_le_bytes())
        .collect();
    put(&mut b, MI_INT32, &dims);
    put(&mut b, MI_INT8, name.as_bytes());
    match v {
        MatValue::Numeric { data, .. } => {
            macro_rules! bytes {
                ($v:expr, $ty:expr) => {
                    put(
                        &mut b,
                        $ty,
                        &$v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                    )
                };
            }
            match data {
                NumericData::F64(x) => bytes!(x, MI_DOUBLE),
                NumericData::F32(x) => bytes!(x, MI_SINGLE),
                NumericData::I8(x) => bytes!(x, MI_INT8),
                NumericData::U8(x) => put(&mut b, MI_UINT8, x),
                NumericData::I16(x) => bytes!(x, MI_INT16),
                NumericData::U16(x) => bytes!(x, MI_UINT16),
                NumericData::I32(x) => bytes!(x, MI_INT32),
                NumericData::U32(x) => bytes!(x, MI_UINT32),
                NumericData::I64(x) => bytes!(x, MI_INT64),
                NumericData::U64(x) => bytes!(x, MI_UINT64),
            }
        }
        MatValue::Char { dims, text } => {
            let mut units: Vec<u16> = text.encode_utf16().collect();
            let rows = dims.first().copied().unwrap_or(1);
            if rows > 1 && units.len().is_multiple_of(rows) {
                let cols = units.len() / rows;
                units = (0..units.len())
                    .map(|k| units[(k % rows) * cols + k / rows])
                    .collect();
            }
            put(
                &mut b,
                MI_UINT16,
                &units
                    .iter()
                    .flat_map(|u| u.to_le_bytes())
                    .collect::<Vec<u8>>(),
            );
        }
        MatValue::Struct { fields, .. } => {
            let longest = fields.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
            let fl = if longest < 32 { 32 } else { longest + 1 };
            put(&mut b, MI_INT32, &(fl as i32).to_le_bytes());
            let mut names = vec![0u8; fl * fields.len()];
            for (k, (f, _)) in fields.iter().enumerate() {
                names[k * fl..k * fl + f.len()].copy_from_slice(f.as_bytes());
            }
            put(&mut b, MI_INT8, &names);
            // Elements written are those present (the dims header is written as given).
            let n = fields.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
            for k in 0..n {
                for (_, values) in fields {
                    match values.get(k) {
                        Some(x) => b.extend_from_slice(&matrix_element("", x)),
                        None => put(&mut b, MI_MATRIX, &[]),
                    }
                }
            }
        }
        MatValue::Cell { items, .. } => {
            for x in items {
                b.extend_from_slice(&matrix_element("", x));
            }
        }
    }
    let mut out = Vec::with_capacity(b.len() + 8);
    out.extend_from_slice(&MI_MATRIX.to_le_bytes());
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(&b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sample_vars() -> Vec<(String, MatValue)> {
        let image: Vec<u8> = (0..2 * 3 * 4).map(|k| k as u8).collect();
        let inner = MatValue::scalar_struct(vec![
            (
                "gaze".into(),
                MatValue::Numeric {
                    dims: vec![2, 3],
                    data: NumericData::F64(vec![0.1, -0.2, 0.3, -0.4, -0.9, -0.8]),
                },
            ),
            (
                "image".into(),
                MatValue::Numeric {
                    dims: vec![2, 3, 4],
                    data: NumericData::U8(image),
                },
            ),
        ]);
        vec![
            (
                "data".into(),
                MatValue::scalar_struct(vec![
                    ("left".into(), inner.clone()),
                    ("right".into(), inner),
                ]),
            ),
            (
                "filenames".into(),
                MatValue::cell_of_strings(&["0001.jpg", "0002.jpg"]),
            ),
            (
                "x".into(),
                MatValue::Numeric {
                    dims: vec![1, 1],
                    data: NumericData::I16(vec![-7]),
                },
            ),
            (
                "s".into(),
                MatValue::Numeric {
                    dims: vec![1, 2],
                    data: NumericData::F32(vec![1.5, f32::MIN]),
                },
            ),
            (
                "big".into(),
                MatValue::Numeric {
                    dims: vec![1, 2],
                    data: NumericData::U64(vec![u64::MAX, 3]),
                },
            ),
            (
                "i64".into(),
                MatValue::Numeric {
                    dims: vec![1, 1],
                    data: NumericData::I64(vec![i64::MIN]),
                },
            ),
            (
                "i8".into(),
                MatValue::Numeric {
                    dims: vec![1, 3],
                    data: NumericData::I8(vec![-1, 0, 1]),
                },
            ),
            (
                "u16".into(),
                MatValue::Numeric {
                    dims: vec![1, 1],
                    data: NumericData::U16(vec![65535]),
                },
            ),
            (
                "i32".into(),
                MatValue::Numeric {
                    dims: vec![1, 1],
                    data: NumericData::I32(vec![-5]),
                },
            ),
            (
                "u32".into(),
                MatValue::Numeric {
                    dims: vec![1, 1],
                    data: NumericData::U32(vec![9]),
                },
            ),
            (
                "rows".into(),
                MatValue::Char {
                    dims: vec![2, 3],
                    text: "abcdéf".into(),
                },
            ),
            (
                "empty".into(),
                MatValue::Numeric {
                    dims: vec![0, 0],
                    data: NumericData::F64(vec![]),
                },
            ),
            ("ab".into(), MatValue::char_row("ab")),
            (
                "nested".into(),
                MatValue::Cell {
                    dims: vec![1, 2],
                    items: vec![MatValue::cell_of_strings(&["x"]), MatValue::char_row("")],
                },
            ),
            (
                "sa".into(),
                MatValue::Struct {
                    dims: vec![1, 2],
                    fields: vec![(
                        "a".into(),
                        vec![MatValue::char_row("p"), MatValue::char_row("q")],
                    )],
                },
            ),
        ]
    }

    #[test]
    fn round_trips_every_class_compressed_and_not() {
        let vars = sample_vars();
        for compress in [false, true] {
            let bytes = write_mat(&vars, compress);
            assert_eq!(read_mat(&bytes).unwrap(), vars, "compress={compress}");
        }
        let rows = find_var(&vars, "rows").unwrap().char_rows().unwrap();
        assert_eq!(rows, vec!["abc", "déf"]);
    }

    #[test]
    fn char_matrix_is_column_major_on_disk() {
        let bytes = write_mat(
            &[(
                "c".into(),
                MatValue::Char {
                    dims: vec![2, 2],
                    text: "abcd".into(),
                },
            )],
            false,
        );
        // Data element after flags(16) + dims(16) + name "c"(8): tag then units a c b d.
        let units: Vec<u16> = bytes[128 + 8 + 40 + 8..128 + 8 + 40 + 16]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(units, "acbd".encode_utf16().collect::<Vec<_>>());
    }

    /// A compressed file written by an independent writer (scipy 1.17 `savemat`, generated from
    /// `{'data': {'left': L, 'right': L}, 'filenames': [['0001.jpg'], ['0002.jpg']], 'rows':
    /// ['abc', 'def'], 'i16': int16([[-7, 300]])}` with `L = {'gaze': 2×3, 'image':
    /// uint8 arange(24).reshape(2, 3, 4), 'pose': 2×3}`).
    const SCIPY_Z: &[&str] = &[
        "4d41544c414220352e30204d41542d66696c6520506c6174666f726d3a20706f7369782c2043726561746564206f6e3a",
        "20467269204e6f762032372031353a35363a303820323032360000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000001494d0f000000d9000000789ce3636060f060",
        "66606003d21c40ccc40001ac503e231cb330a4249624b2026936a8180f10e7a4a69530301465a6679480f5f101710523",
        "31e6c1c411e60901717a62552a0343666e627a2a43417e712a5419d8dc040684b96c68e682ec6146329713880d8078d6",
        "4c10d8696f0c0697ed21fc93fb21f44dfbb36740e00d94ff723fc89e00247b3891ece141b287052a0eb30f242e0162f0",
        "b008708830f2b20a728a32f1b109718931f3b30b738b93ebfe6a9175ee0fab5aec21f412283d05ea8f95f63be45a5f07",
        "ee9807a5d7d98f86ffc0863f00a5e381a70f00000048000000789ce3636060d801c46c40cc01c48c0c10c00ae53341c5",
        "40981388d3327352f31273538ba1eaf880d802493f0b9a7e46347305a07c03030343bdac82740af41b81f40300a2f00a",
        "130f00000030000000789ce3636060b000623620e600621606086085f2998098198819813245f9e5c50250b5892949a9",
        "c9690c0c0046b104a60f0000002b000000789ce36360603000623620e600622e06086085f2198198094c3333641a9a01",
        "4916869fff751801239f0367",
    ];

    #[test]
    fn reads_a_scipy_written_file() {
        let hex: String = SCIPY_Z.concat();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|k| u8::from_str_radix(&hex[k..k + 2], 16).unwrap())
            .collect();
        let vars = read_mat(&bytes).unwrap();
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["data", "filenames", "rows", "i16"]);
        let left = find_var(&vars, "data").unwrap().field("left").unwrap();
        assert_eq!(
            left.field("gaze").unwrap(),
            &MatValue::Numeric {
                dims: vec![2, 3],
                data: NumericData::F64(vec![0.1, 0.3, -0.2, 0.4, -0.9, -0.8])
            }
        );
        let MatValue::Numeric {
            dims,
            data: NumericData::U8(px),
        } = left.field("image").unwrap()
        else {
            panic!()
        };
        assert_eq!(dims, &[2, 3, 4]);
        for (n, r, c) in [(0, 0, 0), (1, 2, 3), (0, 1, 2), (1, 0, 3)] {
            assert_eq!(px[n + 2 * (r + 3 * c)] as usize, n * 12 + r * 4 + c);
        }
        assert_eq!(
            find_var(&vars, "filenames").unwrap(),
            &MatValue::cell_of_strings(&["0001.jpg", "0002.jpg"])
        );
        assert_eq!(
            find_var(&vars, "rows").unwrap().char_rows().unwrap(),
            ["abc", "def"]
        );
        assert_eq!(
            find_var(&vars, "i16").unwrap(),
            &MatValue::Numeric {
                dims: vec![1, 2],
                data: NumericData::I16(vec![-7, 300])
            }
        );
    }

    /// A hand-assembled big-endian file using MATLAB's storage narrowing: a 1×3 double array
    /// stored as miUINT8, with a small-element name.
    #[test]
    fn reads_big_endian_and_narrowed_storage() {
        let mut f = vec![b' '; 116];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&0x0100u16.to_be_bytes());
        f.extend_from_slice(b"MI");
        let mut m = Vec::new();
        m.extend_from_slice(&MI_UINT32.to_be_bytes());
        m.extend_from_slice(&8u32.to_be_bytes());
        m.extend_from_slice(&(MX_DOUBLE as u32).to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&MI_INT32.to_be_bytes());
        m.extend_from_slice(&8u32.to_be_bytes());
        m.extend_from_slice(&1i32.to_be_bytes());
        m.extend_from_slice(&3i32.to_be_bytes());
        m.extend_from_slice(&((1u32 << 16) | MI_INT8).to_be_bytes());
        m.extend_from_slice(b"v\0\0\0");
        m.extend_from_slice(&((3u32 << 16) | MI_UINT8).to_be_bytes());
        m.extend_from_slice(&[1, 2, 250, 0]);
        f.extend_from_slice(&MI_MATRIX.to_be_bytes());
        f.extend_from_slice(&(m.len() as u32).to_be_bytes());
        f.extend_from_slice(&m);
        let vars = read_mat(&f).unwrap();
        assert_eq!(
            vars,
            vec![(
                "v".into(),
                MatValue::Numeric {
                    dims: vec![1, 3],
                    data: NumericData::F64(vec![1.0, 2.0, 250.0])
                }
            )]
        );
    }

    fn kind(bytes: &[u8]) -> MatErrorKind {
        read_mat(bytes).unwrap_err().kind
    }

    #[test]
    fn bad_inputs_name_the_problem() {
        let good = write_mat(&sample_vars(), false);
        assert!(matches!(kind(&good[..100]), MatErrorKind::Truncated { .. }));
        let mut v73 = good.clone();
        v73[124..126].copy_from_slice(&0x0200u16.to_le_bytes());
        let e = read_mat(&v73).unwrap_err();
        assert!(
            matches!(e.kind, MatErrorKind::Header(_)) && e.to_string().contains("v7.3"),
            "{e}"
        );
        let mut endian = good.clone();
        endian[126..128].copy_from_slice(b"XX");
        assert!(matches!(kind(&endian), MatErrorKind::Header(_)));

        // Truncation inside the first variable names the offset and the variable path.
        let e = read_mat(&good[..400]).unwrap_err();
        assert!(matches!(e.kind, MatErrorKind::Truncated { .. }), "{e}");
        assert_eq!(e.at.offset, 128);

        // A negative dimension in `x`.
        let one = write_mat(
            &[(
                "x".into(),
                MatValue::Numeric {
                    dims: vec![1, 1],
                    data: NumericData::F64(vec![1.0]),
                },
            )],
            false,
        );
        let mut neg = one.clone();
        neg[128 + 8 + 16 + 8..128 + 8 + 16 + 12].copy_from_slice(&(-1i32).to_le_bytes());
        let e = read_mat(&neg).unwrap_err();
        assert!(
            e.to_string().contains("negative") && e.at.offset == 128 + 8 + 16,
            "{e}"
        );
        // Dims that disagree with the data length.
        let mut wrong = one.clone();
        wrong[128 + 8 + 16 + 8..128 + 8 + 16 + 12].copy_from_slice(&2i32.to_le_bytes());
        assert!(matches!(kind(&wrong), MatErrorKind::Invalid(_)));
        // Overflowing dims product.
        let huge = write_mat(
            &[(
                "x".into(),
                MatValue::Numeric {
                    dims: vec![i32::MAX as usize; 3],
                    data: NumericData::F64(vec![]),
                },
            )],
            false,
        );
        assert!(
            read_mat(&huge)
                .unwrap_err()
                .to_string()
                .contains("overflow")
        );
        // A struct claiming 2^31 elements must fail fast on the byte budget, not allocate.
        let st = write_mat(
            &[(
                "s".into(),
                MatValue::Struct {
                    dims: vec![i32::MAX as usize, 1],
                    fields: vec![("a".into(), vec![])],
                },
            )],
            false,
        );
        assert!(matches!(kind(&st), MatErrorKind::Truncated { .. }));
        // Unsupported classes.
        let mut sparse = one.clone();
        sparse[128 + 16] = MX_SPARSE;
        assert!(matches!(kind(&sparse), MatErrorKind::Unsupported(_)));
        let mut complex = one.clone();
        complex[128 + 17] = 0x08;
        assert!(matches!(kind(&complex), MatErrorKind::Unsupported(_)));
        // Corrupt zlib stream.
        let mut z = write_mat(&sample_vars(), true);
        let last = z.len() - 20;
        z[last] ^= 0xff;
        z[last - 1] ^= 0xff;
        assert!(read_mat(&z).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        let vars = sample_vars();
        let z = write_mat(&vars, true);
        let tight = MatLimits {
            max_decompressed: 64,
            ..MatLimits::default()
        };
        let e = read_mat_with(&z, &tight).unwrap_err();
        assert!(matches!(e.kind, MatErrorKind::Limit(_)), "{e}");
        // `nested` is a cell inside a cell: depth 2.
        let shallow = MatLimits {
            max_depth: 1,
            ..MatLimits::default()
        };
        let nested = vec![(
            "nested".to_string(),
            find_var(&vars, "nested").unwrap().clone(),
        )];
        let e = read_mat_with(&write_mat(&nested, false), &shallow).unwrap_err();
        assert!(
            matches!(e.kind, MatErrorKind::Limit(_)) && e.path == "nested{1}{1}",
            "{e}"
        );
    }

    /// Deterministic fuzzing: truncations, bit flips and overwritten length words of valid files
    /// must give `Ok` or `Err`, never a panic.
    #[test]
    fn fuzz_corrupt_files_never_panic() {
        let vars = sample_vars();
        let plain = write_mat(&vars, false);
        let packed = write_mat(&vars, true);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let interesting = [
            0u32,
            1,
            4,
            7,
            8,
            0xffff,
            0x1_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
        ];
        let mut errors = 0;
        for iter in 0..20_000 {
            let base = if iter % 4 == 0 { &packed } else { &plain };
            let mut m = base.clone();
            match iter % 3 {
                0 => m.truncate(rng.random_range(0..m.len())),
                1 => {
                    for _ in 0..rng.random_range(1..8) {
                        let k = rng.random_range(0..m.len());
                        m[k] ^= 1 << rng.random_range(0..8);
                    }
                }
                _ => {
                    let k = rng.random_range(HEADER_LEN / 4..m.len() / 4) * 4;
                    let w = if rng.random_bool(0.5) {
                        interesting[rng.random_range(0..interesting.len())]
                    } else {
                        rng.random::<u32>()
                    };
                    m[k..k + 4].copy_from_slice(&w.to_le_bytes());
                }
            }
            // Also fuzz the parser behind the inflater: compress a corrupted plain element.
            if iter % 5 == 0 && m.len() > HEADER_LEN {
                let mut enc =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&m[HEADER_LEN..]).unwrap();
                let z = enc.finish().unwrap();
                m.truncate(HEADER_LEN);
                m.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
                m.extend_from_slice(&(z.len() as u32).to_le_bytes());
                m.extend_from_slice(&z);
            }
            match std::panic::catch_unwind(|| read_mat(&m)) {
                Ok(Err(_)) => errors += 1,
                Ok(Ok(_)) => {}
                Err(_) => panic!("read_mat panicked on fuzz iteration {iter}"),
            }
        }
        assert!(
            errors > 10_000,
            "only {errors} corrupt inputs were rejected"
        );
    }
}
