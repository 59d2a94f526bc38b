//! Typed access to `config.json`, with errors that name the file and the key.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Error, Result};

/// One JSON object of a config (the whole file, or a nested `text_config`).
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub obj: Map<String, Value>,
}

impl Config {
    /// Reads a JSON object from `path`.
    pub fn read(path: &Path) -> Result<Config> {
        Config::from_text(path, &crate::files::read_text(path, crate::files::JSON_MAX)?)
    }

    /// Parses `text`, the contents of `path`, as a JSON object.
    pub fn from_text(path: &Path, text: &str) -> Result<Config> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::format(format!("{}: invalid JSON: {e}", path.display())))?;
        match v {
            Value::Object(obj) => Ok(Config { path: path.to_path_buf(), obj }),
            _ => Err(Error::format(format!("{}: expected a JSON object", path.display()))),
        }
    }

    pub fn from_value(path: &Path, v: &Value) -> Option<Config> {
        v.as_object().map(|obj| Config { path: path.to_path_buf(), obj: obj.clone() })
    }

    fn bad(&self, key: &str, what: &str) -> Error {
        Error::format(format!("{}: {key}: {what}", self.path.display()))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.bad(key, "expected a string")),
        }
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad(key, "expected a number")),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.bad(key, "expected true or false")),
        }
    }

    /// A positive integer that fits an i32 (all sizes in a config).
    pub fn int(&self, key: &str) -> Result<Option<i32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let n = v.as_i64().ok_or_else(|| self.bad(key, "expected an integer"))?;
                if n <= 0 || n > i32::MAX as i64 {
                    return Err(self.bad(key, &format!("{n} is out of range")));
                }
                Ok(Some(n as i32))
            }
        }
    }

    /// `key` as a finite number > 0 (None when absent): rope bases, scaling factors.
    pub fn positive(&self, key: &str) -> Result<Option<f64>> {
        match self.f64(key)? {
            Some(v) if !(v.is_finite() && v > 0.0) => {
                Err(self.bad(key, &format!("{v} must be a finite number > 0")))
            }
            v => Ok(v),
        }
    }

    pub fn req_positive(&self, key: &str) -> Result<f64> {
        self.positive(key)?.ok_or_else(|| self.bad(key, "missing"))
    }

    /// Token ids given as one integer or a list (`eos_token_id`).
    pub fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let to_id = |v: &Value| {
            v.as_u64()
                .filter(|&n| n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| self.bad(key, "expected a token id"))
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(to_id).collect(),
            Some(v) => Ok(vec![to_id(v)?]),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<Config>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                Config::from_value(&self.path, v).map(Some).ok_or_else(|| self.bad(key, "expected an object"))
            }
        }
    }
}
