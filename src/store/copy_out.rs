//! Rows of `COPY (…) TO STDOUT (FORMAT binary)`, split into fields.
//!
//! A rebuild reads the whole log in one go. Through the row protocol every row pays for
//! sqlx's per-row bookkeeping (a row object, a type check and a lookup per column); a
//! binary COPY sends the same values in the same binary forms, and splitting them is a
//! few length prefixes. See PostgreSQL's "Binary Format" of COPY.

use super::StoreError;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Splits a binary COPY stream, fed chunk by chunk in the order it arrives, into rows.
#[derive(Default)]
pub struct BinaryRows {
    /// An incomplete row (or header) carried over from the previous chunk.
    carry: Vec<u8>,
    header_read: bool,
    ended: bool,
}

/// The fields of one row: `None` is NULL.
pub type Fields<'a> = Vec<Option<&'a [u8]>>;

impl BinaryRows {
    /// Calls `row` with the fields of every row that `chunk` completes.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(&Fields<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // PostgreSQL sends one row per message, so carrying over is the exception.
        let joined;
        let mut input: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.carry);
            &joined
        };
        let mut fields: Fields<'_> = Vec::new();
        loop {
            if self.ended {
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(corrupt("data after the end of the COPY stream"))
                };
            }
            if !self.header_read {
                match header_length(input)? {
                    Some(n) => {
                        input = &input[n..];
                        self.header_read = true;
                    }
                    None => break,
                }
            }
            match split_row(input, &mut fields)? {
                Split::Row(n) => {
                    row(&fields)?;
                    input = &input[n..];
                }
                Split::End => {
                    self.ended = true;
                    input = &input[2..];
                }
                Split::Incomplete => break,
            }
        }
        self.carry.extend_from_slice(input);
        Ok(())
    }

    /// Whether the stream ended properly (its trailer was read, and nothing is left).
    pub fn finished(&self) -> bool {
        self.ended && self.carry.is_empty()
    }
}

enum Split {
    /// A row of this many bytes; its fields are in `fields`.
    Row(usize),
    /// The trailer (a field count of -1).
    End,
    Incomplete,
}

/// The length of the file header at the start of `input`, if it is all there.
fn header_length(input: &[u8]) -> Result<Option<usize>, StoreError> {
    let fixed = SIGNATURE.len() + 8;
    if input.len() < fixed {
        return Ok(None);
    }
    if &input[..SIGNATURE.len()] != SIGNATURE {
        return Err(corrupt("not a binary COPY stream"));
    }
    let extension = be_u32(&input[SIGNATURE.len() + 4..]) as usize;
    Ok((input.len() >= fixed + extension).then_some(fixed + extension))
}

fn split_row<'a>(input: &'a [u8], fields: &mut Fields<'a>) -> Result<Split, StoreError> {
    fields.clear();
    if input.len() < 2 {
        return Ok(Split::Incomplete);
    }
    let count = i16::from_be_bytes([input[0], input[1]]);
    if count == -1 {
        return Ok(Split::End);
    }
    if count < 0 {
        return Err(corrupt("a negative field count"));
    }
    let mut at = 2;
    for _ in 0..count {
        if input.len() < at + 4 {
            return Ok(Split::Incomplete);
        }
        let length = be_u32(&input[at..]) as i32;
        at += 4;
        if length == -1 {
            fields.push(None);
            continue;
        }
        let length = usize::try_from(length).map_err(|_| corrupt("a negative field length"))?;
        if input.len() < at + length {
            return Ok(Split::Incomplete);
        }
        fields.push(Some(&input[at..at + length]));
        at += length;
    }
    Ok(Split::Row(at))
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// A field as a big-endian 64-bit integer (int8, xid8, and timestamptz's microseconds).
pub fn int8(field: Option<&[u8]>, column: &str) -> Result<i64, StoreError> {
    let bytes: [u8; 8] = field
        .and_then(|f| f.try_into().ok())
        .ok_or_else(|| corrupt(&format!("{column} is not an 8-byte integer")))?;
    Ok(i64::from_be_bytes(bytes))
}

/// A text field (text, json), checked to be UTF-8.
pub fn text(field: Option<&[u8]>, column: &str) -> Result<String, StoreError> {
    let bytes = field.ok_or_else(|| corrupt(&format!("{column} is NULL")))?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| corrupt(&format!("{column} is not UTF-8")))
}

/// A uuid field: its 16 bytes.
pub fn uuid(field: Option<&[u8]>, column: &str) -> Result<uuid::Uuid, StoreError> {
    field
        .and_then(|f| uuid::Uuid::from_slice(f).ok())
        .ok_or_else(|| corrupt(&format!("{column} is not a uuid")))
}

/// A timestamptz field: microseconds since 2000-01-01 00:00:00 UTC.
pub fn timestamptz(
    field: Option<&[u8]>,
    column: &str,
) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    let micros = int8(field, column)?;
    micros
        .checked_add(POSTGRES_EPOCH_MICROS)
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(|| corrupt(&format!("{column} is out of range")))
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Corrupt(format!("binary COPY: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    Some(bytes) => {
                        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                        out.extend_from_slice(bytes);
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    /// Each row's fields, owned.
    type Rows = Vec<Vec<Option<Vec<u8>>>>;

    fn read(chunks: &[&[u8]]) -> Result<(Rows, bool), StoreError> {
        let mut rows = BinaryRows::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            rows.feed(chunk, |fields| {
                seen.push(fields.iter().map(|f| f.map(<[u8]>::to_vec)).collect());
                Ok(())
            })?;
        }
        Ok((seen, rows.finished()))
    }

    #[test]
    fn rows_split_the_same_however_the_stream_is_cut() {
        let data = stream(&[
            vec![Some(b"ab".as_slice()), None, Some(b"".as_slice())],
            vec![Some(&7i64.to_be_bytes())],
        ]);
        let expected = vec![
            vec![Some(b"ab".to_vec()), None, Some(Vec::new())],
            vec![Some(7i64.to_be_bytes().to_vec())],
        ];
        assert_eq!(read(&[&data]).unwrap(), (expected.clone(), true));
        for cut in 1..data.len() {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                read(&[a, b]).unwrap(),
                (expected.clone(), true),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_stream_cut_short_is_not_finished() {
        let data = stream(&[vec![Some(b"ab".as_slice())]]);
        let (rows, finished) = read(&[&data[..data.len() - 2]]).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(!finished);
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        assert!(read(&[b"not a copy stream at all"]).is_err());
        let mut data = stream(&[]);
        data.extend_from_slice(b"xx");
        assert!(read(&[&data]).is_err());
    }

    #[test]
    fn fields_decode_as_postgres_sends_them() {
        let at = timestamptz(Some(&0i64.to_be_bytes()), "t").unwrap();
        assert_eq!(at.to_rfc3339(), "2000-01-01T00:00:00+00:00");
        assert_eq!(int8(Some(&(-5i64).to_be_bytes()), "n").unwrap(), -5);
        assert!(int8(Some(b"123"), "n").is_err());
        assert!(text(None, "s").is_err());
        assert!(text(Some(&[0xff]), "s").is_err());
        let id = uuid::Uuid::new_v4();
        assert_eq!(uuid(Some(id.as_bytes()), "u").unwrap(), id);
    }
}
