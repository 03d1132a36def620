//! A small, explicit binary encoding shared by the write-ahead log and the snapshots.
//!
//! Fixed-width little-endian integers, length-prefixed strings, 16-byte UUIDs, and JSON
//! objects carried as length-prefixed JSON text. Written by hand rather than derived, so the
//! on-disk formats are visible in one place per file kind and change only on purpose (each
//! file kind carries its own format version). Pure: no IO.

use serde_json::{Map, Value};
use uuid::Uuid;

/// The input ended early or held something impossible.
#[derive(Debug, thiserror::Error)]
#[error("malformed binary data: {0}")]
pub struct DecodeError(pub &'static str);

/// Appends values to a byte buffer.
#[derive(Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn uuid(&mut self, v: Uuid) {
        self.buf.extend_from_slice(v.as_bytes());
    }

    pub fn str(&mut self, v: &str) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v.as_bytes());
    }

    pub fn opt_str(&mut self, v: Option<&str>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.str(v);
        }
    }

    pub fn opt_uuid(&mut self, v: Option<Uuid>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.uuid(v);
        }
    }

    /// A JSON object, as JSON text.
    pub fn json(&mut self, v: &Map<String, Value>) {
        let text = serde_json::to_string(v).expect("JSON values serialize");
        self.str(&text);
    }
}

/// Reads values back in the order they were written.
pub struct Dec<'a> {
    buf: &'a [u8],
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("input ended early"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.bytes(N)?.try_into().expect("length checked"))
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("a flag is neither 0 nor 1")),
        }
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.bytes(len)?).map_err(|_| DecodeError("a string is not UTF-8"))
    }

    pub fn opt_str(&mut self) -> Result<Option<&'a str>, DecodeError> {
        Ok(match self.bool()? {
            true => Some(self.str()?),
            false => None,
        })
    }

    pub fn opt_uuid(&mut self) -> Result<Option<Uuid>, DecodeError> {
        Ok(match self.bool()? {
            true => Some(self.uuid()?),
            false => None,
        })
    }

    pub fn json(&mut self) -> Result<Map<String, Value>, DecodeError> {
        serde_json::from_str(self.str()?).map_err(|_| DecodeError("a JSON field is not an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_in_order_and_short_input_is_an_error() {
        let mut e = Enc::default();
        let id = Uuid::new_v4();
        let object = serde_json::json!({"a": [1, "b"]});
        e.u8(7);
        e.u64(u64::MAX);
        e.i64(-3);
        e.opt_str(Some("héllo"));
        e.opt_uuid(None);
        e.uuid(id);
        e.json(object.as_object().unwrap());
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.u64().unwrap(), u64::MAX);
        assert_eq!(d.i64().unwrap(), -3);
        assert_eq!(d.opt_str().unwrap(), Some("héllo"));
        assert_eq!(d.opt_uuid().unwrap(), None);
        assert_eq!(d.uuid().unwrap(), id);
        assert_eq!(Some(&d.json().unwrap()), object.as_object());
        assert!(d.is_empty());
        assert!(Dec::new(&e.buf[..5]).u64().is_err());
    }
}
