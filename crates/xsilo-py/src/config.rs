//! The configuration `start` is given: the TOML text of an xsilo file, or
//! a dict of its tables and keys (what `fed.init` makes of RayFed's
//! arguments), read by `xsilo::Config` either way. A dict is made into a
//! TOML table here, value by value, never into text.

use std::path::Path;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString, PyTuple};

/// Reads `config`, a `str` of TOML text or a `dict` of its tables, with
/// relative paths taken from `base_dir`. Errors (`ValueError`) name the key.
pub(crate) fn load(config: &Bound<'_, PyAny>, base_dir: &Path) -> PyResult<xsilo::Config> {
    let read = if config.is_instance_of::<PyString>() {
        xsilo::Config::from_toml_str(&config.extract::<String>()?, base_dir)
    } else if let Ok(dict) = config.cast::<PyDict>() {
        xsilo::Config::from_toml_table(table(dict, "")?, base_dir)
    } else {
        return Err(PyValueError::new_err(format!(
            "the configuration must be TOML text or a dict, not {}",
            type_name(config)
        )));
    };
    read.map_err(|e| PyValueError::new_err(e.to_string()))
}

fn table(dict: &Bound<'_, PyDict>, prefix: &str) -> PyResult<toml::Table> {
    let mut table = toml::Table::new();
    for (k, v) in dict.iter() {
        let Ok(name) = k.extract::<String>() else {
            return Err(PyValueError::new_err(format!(
                "invalid configuration `{prefix}`: the key {} is not a string",
                k.repr()?
            )));
        };
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        table.insert(name, value(&v, &key)?);
    }
    Ok(table)
}

fn value(v: &Bound<'_, PyAny>, key: &str) -> PyResult<toml::Value> {
    let bad = |why: String| PyValueError::new_err(format!("invalid configuration `{key}`: {why}"));
    Ok(if v.is_instance_of::<PyBool>() {
        toml::Value::Boolean(v.extract()?)
    } else if v.is_instance_of::<PyString>() {
        toml::Value::String(v.extract()?)
    } else if let Ok(d) = v.cast::<PyDict>() {
        toml::Value::Table(table(d, key)?)
    } else if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in v.try_iter()?.enumerate() {
            items.push(value(&item?, &format!("{key}[{i}]"))?);
        }
        toml::Value::Array(items)
    } else if v.is_instance_of::<PyFloat>() {
        toml::Value::Float(v.extract()?)
    } else if let Ok(n) = v.extract::<i64>() {
        // Any integer, numpy's too (`__index__`).
        toml::Value::Integer(n)
    } else if v.hasattr("__index__")? {
        return Err(bad(format!("{} does not fit in 64 bits", v.repr()?)));
    } else {
        return Err(bad(format!(
            "a {} is not a configuration value (give a bool, int, float, str, list or dict)",
            type_name(v)
        )));
    })
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}
