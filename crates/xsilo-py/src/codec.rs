//! Python values across silos without pickle (issue 12, point 2).
//!
//! * `None`, `bool`, `int` (64 bits), `float`, `str`, `bytes` (and
//!   `bytearray`, which arrives as `bytes`), `list`, `tuple` and `dict` are
//!   msgpack; a tuple is the extension type 1 around a msgpack array, so it
//!   comes back a tuple.
//! * A numpy array at the top level whose element type is one of `float32`,
//!   `float64`, `int32`, `int64`, `uint32`, `uint64` (little-endian) crosses
//!   as an `xsilo_wire::array` payload: a checked header (element type,
//!   shape) and the raw bytes, which a Rust party reads as a `Vec<f32>` and
//!   kin. Any other numeric array, and arrays inside containers, are the
//!   extension type 2: `[dtype, shape, raw bytes]`, for an allow-listed
//!   numeric dtype only. A numeric numpy scalar is the extension type 4,
//!   `[dtype, raw bytes]`, and comes back a numpy scalar of its dtype (a
//!   Rust party reading an `f64` must be sent a Python `float` instead).
//! * Anything else crosses only through a codec the user registered on both
//!   sides (`xsilo.register_codec`): the extension type 3, `[name, bytes]`.
//!
//! Decoding a peer's bytes never runs code other than a codec registered by
//! this party's own driver: every length is checked against the bytes left
//! before anything is allocated, nesting is bounded, and a numpy dtype must
//! be on the allow-list (never `object`).

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use rmp::encode as enc;
use rmp::Marker;
use xsilo_wire::array::{self, ElemType};

const EXT_TUPLE: i8 = 1;
const EXT_NDARRAY: i8 = 2;
const EXT_CODEC: i8 = 3;
/// A numpy scalar: `[dtype, bytes]`, so that it comes back a numpy scalar
/// of its dtype (a `float32` stays one), not a Python number.
const EXT_NPSCALAR: i8 = 4;
/// Containers nested deeper than this are refused both ways.
const MAX_DEPTH: usize = 64;
/// Dimensions of an ndarray extension.
const MAX_NDIM: usize = 32;
/// numpy dtypes that may cross (their `dtype.str`); never `object`.
const DTYPES: &[&str] = &[
    "|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8",
    "<c16", ">i2", ">u2", ">i4", ">u4", ">i8", ">u8", ">f2", ">f4", ">f8", ">c8", ">c16",
];

/// The user's codecs: `encode(obj) -> (name, bytes) | None` and
/// `decode(name, bytes) -> obj`, both Python callables of the driver.
pub(crate) struct Hooks {
    pub(crate) encode: Py<PyAny>,
    pub(crate) decode: Py<PyAny>,
}

/// What a numpy value is: `Some(true)` for a plain `numpy.ndarray`,
/// `Some(false)` for a numpy scalar (`numpy.generic`), `None` for
/// anything else (including ndarray subclasses such as masked arrays and
/// matrices, whose extra meaning would not cross).
fn numpy_kind(obj: &Bound<'_, PyAny>) -> Option<bool> {
    let ty = obj.get_type();
    let module = ty.module().ok()?;
    let module = module.to_cow().ok()?;
    if module != "numpy" && !module.starts_with("numpy.") {
        return None;
    }
    if module == "numpy" && ty.name().ok()?.to_cow().ok()? == "ndarray" {
        return Some(true);
    }
    let generic = obj.py().import("numpy").ok()?.getattr("generic").ok()?;
    obj.is_instance(&generic).ok()?.then_some(false)
}

fn elem_of_dtype(dtype: &str) -> Option<ElemType> {
    Some(match dtype {
        "<f4" => ElemType::F32,
        "<f8" => ElemType::F64,
        "<i4" => ElemType::I32,
        "<i8" => ElemType::I64,
        "<u4" => ElemType::U32,
        "<u8" => ElemType::U64,
        _ => return None,
    })
}

fn dtype_of_elem(elem: ElemType) -> &'static str {
    match elem {
        ElemType::F32 => "<f4",
        ElemType::F64 => "<f8",
        ElemType::I32 => "<i4",
        ElemType::I64 => "<i8",
        ElemType::U32 => "<u4",
        _ => "<u8",
    }
}

/// A numpy array's dtype string, shape and C-order bytes (one copy, made
/// by numpy; the encoder writes from it).
fn ndarray_parts<'py>(
    obj: &Bound<'py, PyAny>,
) -> PyResult<(String, Vec<u64>, Bound<'py, PyBytes>)> {
    let dtype: String = obj.getattr("dtype")?.getattr("str")?.extract()?;
    let shape: Vec<u64> = obj.getattr("shape")?.extract()?;
    let data = obj.call_method0("tobytes")?.cast_into::<PyBytes>()?;
    Ok((dtype, shape, data))
}

/// Writes the extension `ext` whose body is `head` followed by `data` as
/// msgpack bin, straight into `out` (no intermediate buffer for the bulk).
fn write_ext_bin(out: &mut Vec<u8>, ext: i8, head: &[u8], data: &[u8], what: &str) -> PyResult<()> {
    let bin_header = match data.len() {
        n if n < 1 << 8 => 2,
        n if n < 1 << 16 => 3,
        _ => 5,
    };
    let total = head.len() + bin_header + data.len();
    enc::write_ext_meta(out, len32(total, what)?, ext).map_err(io)?;
    out.reserve(total);
    out.extend_from_slice(head);
    enc::write_bin_len(out, len32(data.len(), what)?).map_err(io)?;
    out.extend_from_slice(data);
    Ok(())
}

/// Encodes a value for a payload.
pub(crate) fn encode(obj: &Bound<'_, PyAny>, hooks: &Hooks) -> PyResult<Vec<u8>> {
    if numpy_kind(obj) == Some(true) {
        let (dtype, shape, data) = ndarray_parts(obj)?;
        if let Some(elem) = elem_of_dtype(&dtype).filter(|_| shape.len() <= array::MAX_RANK) {
            let data = data.as_bytes();
            let mut out = array::header(elem, &shape, data.len());
            out.reserve(data.len());
            out.extend_from_slice(data);
            return Ok(out);
        }
    }
    let mut out = Vec::new();
    write(obj, hooks, &mut out, 0)?;
    Ok(out)
}

fn io(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("xsilo: cannot encode: {e}"))
}

fn len32(n: usize, what: &str) -> PyResult<u32> {
    u32::try_from(n).map_err(|_| PyOverflowError::new_err(format!("xsilo: {what} too long")))
}

fn write(obj: &Bound<'_, PyAny>, hooks: &Hooks, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "xsilo: cannot encode containers nested deeper than {MAX_DEPTH}"
        )));
    }
    // Exact types only: a subclass (a namedtuple, an OrderedDict, an
    // IntEnum) would arrive as its base type, so it needs a codec.
    if obj.is_none() {
        enc::write_nil(out).map_err(io)?;
    } else if obj.is_exact_instance_of::<PyBool>() {
        enc::write_bool(out, obj.is_truthy()?).map_err(io)?;
    } else if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(v) = obj.extract::<i64>() {
            enc::write_sint(out, v).map_err(io)?;
        } else if let Ok(v) = obj.extract::<u64>() {
            enc::write_uint(out, v).map_err(io)?;
        } else {
            return Err(PyOverflowError::new_err(
                "xsilo: an int crosses silos in 64 bits; this one does not fit (send it as str)",
            ));
        }
    } else if obj.is_exact_instance_of::<PyFloat>() {
        enc::write_f64(out, obj.extract::<f64>()?).map_err(io)?;
    } else if obj.is_exact_instance_of::<PyString>() {
        let s = obj.cast::<PyString>()?;
        enc::write_str(out, &s.to_cow()?).map_err(io)?;
    } else if obj.is_exact_instance_of::<PyBytes>() {
        enc::write_bin(out, obj.cast::<PyBytes>()?.as_bytes()).map_err(io)?;
    } else if obj.is_exact_instance_of::<PyByteArray>() {
        enc::write_bin(out, &obj.cast::<PyByteArray>()?.to_vec()).map_err(io)?;
    } else if obj.is_exact_instance_of::<PyList>() {
        // A snapshot: a codec run below cannot change what was announced.
        let items = obj.cast::<PyList>()?.to_tuple();
        enc::write_array_len(out, len32(items.len(), "list")?).map_err(io)?;
        for item in items.iter() {
            write(&item, hooks, out, depth + 1)?;
        }
    } else if obj.is_exact_instance_of::<PyTuple>() {
        let tuple = obj.cast::<PyTuple>()?;
        let mut inner = Vec::new();
        enc::write_array_len(&mut inner, len32(tuple.len(), "tuple")?).map_err(io)?;
        for item in tuple.iter() {
            write(&item, hooks, &mut inner, depth + 1)?;
        }
        enc::write_ext_meta(out, len32(inner.len(), "tuple")?, EXT_TUPLE).map_err(io)?;
        out.extend_from_slice(&inner);
    } else if obj.is_exact_instance_of::<PyDict>() {
        let items = obj.cast::<PyDict>()?.items();
        enc::write_map_len(out, len32(items.len(), "dict")?).map_err(io)?;
        for pair in items.iter() {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
            if !plain_key(&k) {
                return Err(PyTypeError::new_err(format!(
                    "xsilo: a dict key of type {} does not cross silos (keys are str, bytes, \
                     int, float, bool or None)",
                    k.get_type().name()?
                )));
            }
            write(&k, hooks, out, depth + 1)?;
            write(&v, hooks, out, depth + 1)?;
        }
    } else if let Some(found) = codec_of(obj, hooks)? {
        let (name, bytes) = found;
        let mut head = Vec::new();
        enc::write_array_len(&mut head, 2).map_err(io)?;
        enc::write_str(&mut head, &name).map_err(io)?;
        write_ext_bin(out, EXT_CODEC, &head, &bytes, "codec value")?;
    } else if numpy_kind(obj) == Some(true) {
        let (dtype, shape, data) = ndarray_parts(obj)?;
        if !DTYPES.contains(&dtype.as_str()) {
            return Err(PyTypeError::new_err(format!(
                "xsilo: numpy arrays of dtype {dtype} do not cross silos (numeric dtypes only)"
            )));
        }
        let mut head = Vec::new();
        enc::write_array_len(&mut head, 3).map_err(io)?;
        enc::write_str(&mut head, &dtype).map_err(io)?;
        enc::write_array_len(&mut head, len32(shape.len(), "shape")?).map_err(io)?;
        for d in &shape {
            enc::write_uint(&mut head, *d).map_err(io)?;
        }
        write_ext_bin(out, EXT_NDARRAY, &head, data.as_bytes(), "array")?;
    } else if let Some((dtype, data)) = numpy_scalar(obj)? {
        let mut head = Vec::new();
        enc::write_array_len(&mut head, 2).map_err(io)?;
        enc::write_str(&mut head, &dtype).map_err(io)?;
        write_ext_bin(out, EXT_NPSCALAR, &head, data.as_bytes(), "numpy scalar")?;
    } else if numpy_kind(obj) == Some(false) {
        // Another numpy scalar (a string, a date): the Python value it holds.
        let item = obj.call_method0("item")?;
        if numpy_kind(&item).is_some() {
            return Err(PyTypeError::new_err(format!(
                "xsilo: cannot send a numpy {} across silos",
                obj.get_type().name()?
            )));
        }
        write(&item, hooks, out, depth + 1)?;
    } else {
        let ty = obj.get_type();
        return Err(PyTypeError::new_err(format!(
            "xsilo: cannot send a {}.{} across silos: values cross as msgpack (None, bool, int, \
             float, str, bytes, list, tuple, dict, numpy arrays), and anything else (subclasses \
             of those included) only through a codec registered on both sides with \
             xsilo.register_codec",
            ty.module()?,
            ty.qualname()?
        )));
    }
    Ok(())
}

/// A numeric numpy scalar's dtype string and bytes.
fn numpy_scalar<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<(String, Bound<'py, PyBytes>)>> {
    if numpy_kind(obj) != Some(false) {
        return Ok(None);
    }
    let dtype: String = obj.getattr("dtype")?.getattr("str")?.extract()?;
    if !DTYPES.contains(&dtype.as_str()) {
        return Ok(None);
    }
    let data = obj.call_method0("tobytes")?.cast_into::<PyBytes>()?;
    Ok(Some((dtype, data)))
}

/// The registered codec's `(name, bytes)` for `obj`, if there is one.
fn codec_of(obj: &Bound<'_, PyAny>, hooks: &Hooks) -> PyResult<Option<(String, Vec<u8>)>> {
    let found = hooks.encode.bind(obj.py()).call1((obj,))?;
    if found.is_none() {
        return Ok(None);
    }
    Ok(Some(found.extract()?))
}

/// Why a peer's bytes are not a value.
fn bad(reason: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("xsilo: malformed value: {reason}"))
}

/// A cursor over a peer's bytes; every read is checked, and every Python
/// object made is charged against a budget of [`AMPLIFICATION`] times the
/// payload's length (plus [`BUDGET_FLOOR`]): an empty container is one
/// byte of msgpack but tens of bytes of Python objects, so without the
/// charge a peer could make a party hold about 70 times what it sent.
struct Reader<'a> {
    rest: &'a [u8],
    budget: &'a std::cell::Cell<usize>,
    /// Whether the bytes were made by this party (its own value read back),
    /// not received from a peer: the decode hook trusts its own pickles.
    local: bool,
}

/// How many bytes of Python objects a payload's byte may become.
const AMPLIFICATION: usize = 32;
/// Bytes of Python objects any payload may become, however short.
const BUDGET_FLOOR: usize = 1 << 20;

impl<'a> Reader<'a> {
    /// Charges `bytes` of Python objects against the budget.
    fn charge(&self, bytes: usize) -> PyResult<()> {
        let left = self.budget.get();
        if bytes > left {
            return Err(bad(format!(
                "decoding it would take more than {AMPLIFICATION} times its length in memory"
            )));
        }
        self.budget.set(left - bytes);
        Ok(())
    }

    fn take(&mut self, n: usize) -> PyResult<&'a [u8]> {
        if n > self.rest.len() {
            return Err(bad(format!(
                "{n} bytes announced, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn be<const N: usize>(&mut self) -> PyResult<[u8; N]> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// A big-endian length of `width` bytes (1, 2 or 4).
    fn len(&mut self, width: usize) -> PyResult<usize> {
        match width {
            1 => Ok(usize::from(self.u8()?)),
            2 => self.u16(),
            _ => self.u32(),
        }
    }

    fn u8(&mut self) -> PyResult<u8> {
        Ok(self.be::<1>()?[0])
    }
    fn u16(&mut self) -> PyResult<usize> {
        Ok(usize::from(u16::from_be_bytes(self.be()?)))
    }
    fn u32(&mut self) -> PyResult<usize> {
        usize::try_from(u32::from_be_bytes(self.be()?)).map_err(bad)
    }

    /// A count of items each at least one byte long: bounded by what is left.
    fn count(&self, n: usize) -> PyResult<usize> {
        if n > self.rest.len() {
            return Err(bad(format!(
                "{n} items announced, {} bytes left",
                self.rest.len()
            )));
        }
        Ok(n)
    }
}

/// Decodes a payload; `local` when this party made it (its own value read
/// back), false for a peer's bytes.
pub(crate) fn decode<'py>(
    py: Python<'py>,
    bytes: &[u8],
    hooks: &Hooks,
    local: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if bytes.starts_with(&array::MAGIC) {
        let header = array::parse_header(bytes, bytes.len(), None).map_err(bad)?;
        return ndarray(
            py,
            dtype_of_elem(header.elem),
            &header.shape,
            &bytes[header.len..],
        );
    }
    let budget = std::cell::Cell::new(
        bytes
            .len()
            .saturating_mul(AMPLIFICATION)
            .saturating_add(BUDGET_FLOOR),
    );
    let mut r = Reader {
        rest: bytes,
        budget: &budget,
        local,
    };
    let value = read(py, &mut r, hooks, 0)?;
    if !r.rest.is_empty() {
        return Err(bad(format!("{} bytes after the value", r.rest.len())));
    }
    Ok(value)
}

fn ndarray<'py>(
    py: Python<'py>,
    dtype: &str,
    shape: &[u64],
    data: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    let np = py.import("numpy")?;
    let dtype = np.getattr("dtype")?.call1((dtype,))?;
    let size: usize = dtype.getattr("itemsize")?.extract()?;
    let count = shape
        .iter()
        .try_fold(1u64, |n, d| n.checked_mul(*d))
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| n.checked_mul(size));
    if count != Some(data.len()) {
        return Err(bad(format!(
            "an array of shape {shape:?} does not fit its {} bytes",
            data.len()
        )));
    }
    // One copy, into memory the array owns and may write.
    let buffer = PyByteArray::new(py, data);
    np.getattr("frombuffer")?
        .call1((buffer, dtype))?
        .call_method1("reshape", (PyTuple::new(py, shape)?,))
}

fn read<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    hooks: &Hooks,
    depth: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("nested deeper than {MAX_DEPTH}")));
    }
    let marker = Marker::from_u8(r.u8()?);
    let budget = r.budget;
    let int = |v: i128| -> PyResult<Bound<'py, PyAny>> {
        if !(-5..=256).contains(&v) {
            Reader {
                rest: &[],
                budget,
                local: false,
            }
            .charge(32)?;
        }
        Ok(v.into_pyobject(py)?.into_any())
    };
    Ok(match marker {
        Marker::Null => py.None().into_bound(py),
        Marker::True => PyBool::new(py, true).to_owned().into_any(),
        Marker::False => PyBool::new(py, false).to_owned().into_any(),
        Marker::FixPos(v) => int(i128::from(v))?,
        Marker::FixNeg(v) => int(i128::from(v))?,
        Marker::U8 => int(i128::from(r.u8()?))?,
        Marker::U16 => int(i128::from(u16::from_be_bytes(r.be()?)))?,
        Marker::U32 => int(i128::from(u32::from_be_bytes(r.be()?)))?,
        Marker::U64 => int(i128::from(u64::from_be_bytes(r.be()?)))?,
        Marker::I8 => int(i128::from(i8::from_be_bytes(r.be()?)))?,
        Marker::I16 => int(i128::from(i16::from_be_bytes(r.be()?)))?,
        Marker::I32 => int(i128::from(i32::from_be_bytes(r.be()?)))?,
        Marker::I64 => int(i128::from(i64::from_be_bytes(r.be()?)))?,
        Marker::F32 => {
            r.charge(24)?;
            PyFloat::new(py, f64::from(f32::from_be_bytes(r.be()?))).into_any()
        }
        Marker::F64 => {
            r.charge(24)?;
            PyFloat::new(py, f64::from_be_bytes(r.be()?)).into_any()
        }
        Marker::FixStr(n) => str_of(py, r, usize::from(n))?,
        m @ (Marker::Str8 | Marker::Str16 | Marker::Str32) => {
            let n = r.len(width(m))?;
            str_of(py, r, n)?
        }
        m @ (Marker::Bin8 | Marker::Bin16 | Marker::Bin32) => {
            let n = r.len(width(m))?;
            bytes_of(py, r, n)?
        }
        Marker::FixArray(n) => list_of(py, r, hooks, depth, usize::from(n))?,
        m @ (Marker::Array16 | Marker::Array32) => {
            let n = r.len(width(m))?;
            list_of(py, r, hooks, depth, n)?
        }
        Marker::FixMap(n) => map_of(py, r, hooks, depth, usize::from(n))?,
        m @ (Marker::Map16 | Marker::Map32) => {
            let n = r.len(width(m))?;
            map_of(py, r, hooks, depth, n)?
        }
        Marker::FixExt1 => ext(py, r, hooks, depth, 1)?,
        Marker::FixExt2 => ext(py, r, hooks, depth, 2)?,
        Marker::FixExt4 => ext(py, r, hooks, depth, 4)?,
        Marker::FixExt8 => ext(py, r, hooks, depth, 8)?,
        Marker::FixExt16 => ext(py, r, hooks, depth, 16)?,
        m @ (Marker::Ext8 | Marker::Ext16 | Marker::Ext32) => {
            let n = r.len(width(m))?;
            ext(py, r, hooks, depth, n)?
        }
        Marker::Reserved => return Err(bad("the reserved msgpack marker 0xc1")),
    })
}

/// Item `i` of `list`, if it is a str.
fn str_item(list: &Bound<'_, PyList>, i: usize) -> Option<String> {
    let item = list.get_item(i).ok()?;
    let s = item.cast::<PyString>().ok()?;
    Some(s.to_cow().ok()?.into_owned())
}

/// `[name: str, data: bytes]`.
fn pair<'py>(v: &Bound<'py, PyAny>) -> Option<(String, Bound<'py, PyBytes>)> {
    let list = v.cast::<PyList>().ok()?;
    if list.len() != 2 {
        return None;
    }
    let name = str_item(list, 0)?;
    let data = list.get_item(1).ok()?.cast_into::<PyBytes>().ok()?;
    Some((name, data))
}

/// `[dtype: str, shape: [int], data: bytes]`.
fn triple<'py>(v: &Bound<'py, PyAny>) -> Option<(String, Vec<u64>, Bound<'py, PyBytes>)> {
    let list = v.cast::<PyList>().ok()?;
    if list.len() != 3 {
        return None;
    }
    let dtype = str_item(list, 0)?;
    let shape: Vec<u64> = list
        .get_item(1)
        .ok()?
        .cast::<PyList>()
        .ok()?
        .iter()
        .map(|d| d.extract::<u64>().ok())
        .collect::<Option<_>>()?;
    let data = list.get_item(2).ok()?.cast_into::<PyBytes>().ok()?;
    Some((dtype, shape, data))
}

fn bytes_of<'py>(py: Python<'py>, r: &mut Reader<'_>, n: usize) -> PyResult<Bound<'py, PyAny>> {
    r.charge(33 + n)?;
    Ok(PyBytes::new(py, r.take(n)?).into_any())
}

/// How many bytes the length after a sized marker takes.
fn width(m: Marker) -> usize {
    match m {
        Marker::Str8 | Marker::Bin8 | Marker::Ext8 => 1,
        Marker::Str16 | Marker::Bin16 | Marker::Array16 | Marker::Map16 | Marker::Ext16 => 2,
        _ => 4,
    }
}

fn str_of<'py>(py: Python<'py>, r: &mut Reader<'_>, n: usize) -> PyResult<Bound<'py, PyAny>> {
    r.charge(49 + n)?;
    let s = std::str::from_utf8(r.take(n)?).map_err(bad)?;
    Ok(PyString::new(py, s).into_any())
}

fn list_of<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    hooks: &Hooks,
    depth: usize,
    n: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n = r.count(n)?;
    r.charge(56 + 8 * n)?;
    let list = PyList::empty(py);
    for _ in 0..n {
        list.append(read(py, r, hooks, depth + 1)?)?;
    }
    Ok(list.into_any())
}

fn map_of<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    hooks: &Hooks,
    depth: usize,
    n: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n = r.count(n)?;
    r.charge(64 + 48 * n)?;
    let dict = PyDict::new(py);
    for _ in 0..n {
        let k = read(py, r, hooks, depth + 1)?;
        if !plain_key(&k) {
            return Err(bad(format!(
                "a dict key of type {} (keys from a peer are str, bytes, int, float, bool or None)",
                k.get_type().name()?
            )));
        }
        let v = read(py, r, hooks, depth + 1)?;
        dict.set_item(k, v)?;
    }
    Ok(dict.into_any())
}

/// Dict keys that may cross: those whose hashes a peer cannot make collide
/// at will (str and bytes hashes are randomised; only a handful of 64-bit
/// ints or floats share a hash). A tuple of ints can be chosen to collide
/// by the hundred thousand, making every insertion scan them all.
fn plain_key(k: &Bound<'_, PyAny>) -> bool {
    k.is_none()
        || k.is_exact_instance_of::<PyString>()
        || k.is_exact_instance_of::<PyBytes>()
        || k.is_exact_instance_of::<PyInt>()
        || k.is_exact_instance_of::<PyFloat>()
        || k.is_exact_instance_of::<PyBool>()
}

fn ext<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    hooks: &Hooks,
    depth: usize,
    n: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let kind = i8::from_be_bytes(r.be()?);
    let body = r.take(n)?;
    let mut inner = Reader {
        rest: body,
        budget: r.budget,
        local: r.local,
    };
    let value = match kind {
        EXT_TUPLE => {
            let list = read(py, &mut inner, hooks, depth + 1)?;
            let list = list
                .cast::<PyList>()
                .map_err(|_| bad("a tuple extension that holds no array"))?;
            r.charge(40 + 8 * list.len())?;
            list.to_tuple().into_any()
        }
        EXT_NDARRAY => {
            let parts = read(py, &mut inner, hooks, depth + 1)?;
            let (dtype, shape, data) = triple(&parts)
                .ok_or_else(|| bad("an array extension that is not [dtype, shape, bytes]"))?;
            if !DTYPES.contains(&dtype.as_str()) || shape.len() > MAX_NDIM {
                return Err(bad(format!(
                    "an array of dtype {dtype:?} and {} dimensions",
                    shape.len()
                )));
            }
            let data = data.as_bytes();
            r.charge(112 + 2 * data.len())?;
            ndarray(py, &dtype, &shape, data)?
        }
        EXT_NPSCALAR => {
            let parts = read(py, &mut inner, hooks, depth + 1)?;
            let (dtype, data) = pair(&parts)
                .ok_or_else(|| bad("a numpy scalar extension that is not [dtype, bytes]"))?;
            if !DTYPES.contains(&dtype.as_str()) {
                return Err(bad(format!("a numpy scalar of dtype {dtype:?}")));
            }
            r.charge(64)?;
            // A 0-d array of the dtype over the bytes (checked to fit), and
            // the scalar it holds.
            ndarray(py, &dtype, &[], data.as_bytes())?
                .call_method1("__getitem__", (PyTuple::empty(py),))?
        }
        EXT_CODEC => {
            let parts = read(py, &mut inner, hooks, depth + 1)?;
            let (name, data) =
                pair(&parts).ok_or_else(|| bad("a codec extension that is not [name, bytes]"))?;
            hooks.decode.bind(py).call1((name, data, inner.local))?
        }
        other => return Err(bad(format!("unknown extension type {other}"))),
    };
    if !inner.rest.is_empty() {
        return Err(bad("bytes left inside an extension"));
    }
    Ok(value)
}
