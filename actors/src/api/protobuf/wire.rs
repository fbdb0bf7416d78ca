//! The protobuf wire format: reading fields of one message and writing them.

use super::ProtobufError;

/// One field as it appears on the wire.
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

impl Value<'_> {
    pub fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => 0,
            Value::Fixed64(_) => 1,
            Value::Bytes(_) => 2,
            Value::Fixed32 => 5,
        }
    }
}

pub fn varint(buf: &mut &[u8]) -> Result<u64, ProtobufError> {
    let mut out = 0u64;
    for shift in (0..70).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(ProtobufError::UnexpectedEof)?;
        *buf = rest;
        if shift == 63 && b > 1 {
            return Err(ProtobufError::Overflow);
        }
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(ProtobufError::Overflow)
}

/// Iterates over the fields of one message: `(tag, value)`.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if n > self.buf.len() {
            return Err(ProtobufError::UnexpectedEof);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn read(&mut self) -> Result<(u32, Value<'a>), ProtobufError> {
        let key = varint(&mut self.buf)?;
        let tag = u32::try_from(key >> 3).map_err(|_| ProtobufError::Overflow)?;
        let wire = (key & 7) as u8;
        if tag == 0 {
            return Err(ProtobufError::IllegalTag { wire });
        }
        let value = match wire {
            0 => Value::Varint(varint(&mut self.buf)?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = varint(&mut self.buf)?;
                let len = usize::try_from(len).map_err(|_| ProtobufError::NegativeLength)?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            other => return Err(ProtobufError::IllegalWireType(other)),
        };
        Ok((tag, value))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u32, Value<'a>), ProtobufError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = self.read();
        if item.is_err() {
            // One error ends the message.
            self.buf = &[];
        }
        Some(item)
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_key(out: &mut Vec<u8>, tag: u32, wire: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire));
}

pub fn put_bytes(out: &mut Vec<u8>, tag: u32, data: &[u8]) {
    put_key(out, tag, 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

pub fn put_varint_field(out: &mut Vec<u8>, tag: u32, v: u64) {
    put_key(out, tag, 0);
    put_varint(out, v);
}

pub fn put_double(out: &mut Vec<u8>, tag: u32, v: f64) {
    put_key(out, tag, 1);
    out.extend_from_slice(&v.to_le_bytes());
}
