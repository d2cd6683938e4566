//! Rows as CSV lines for `COPY … (FORMAT csv)`, written straight from each row's serde
//! form: every field lands in its column's slot, and the slots are joined in the table's
//! column order. No intermediate JSON value, and no allocation per row once warm.
//!
//! It only writes text; sending it to the database is [`Tx`](super::Tx)'s.

use std::fmt::{self, Display, Write as _};

use serde::ser::{self, Impossible, Serialize, SerializeStruct, Serializer};

use super::Table;

#[derive(Debug)]
pub struct Error(String);

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

fn unsupported(what: &str) -> Error {
    Error(format!("a view row field cannot be {what}"))
}

pub struct RowWriter {
    columns: Vec<&'static str>,
    /// Each column's CSV text for the row being written; `None` is NULL.
    slots: Vec<Option<String>>,
    spare: Vec<String>,
}

impl RowWriter {
    pub fn new(table: &Table) -> Self {
        Self {
            columns: table.columns.iter().map(|c| c.name).collect(),
            slots: table.columns.iter().map(|_| None).collect(),
            spare: Vec::new(),
        }
    }

    /// Appends `row` to `out` as one CSV line. Fields that are no column are ignored;
    /// columns that no field fills are NULL.
    pub fn write<R: Serialize + ?Sized>(&mut self, row: &R, out: &mut String) -> Result<(), Error> {
        for slot in &mut self.slots {
            if let Some(text) = slot.take() {
                self.spare.push(text);
            }
        }
        row.serialize(RowSerializer { writer: self })?;
        for (i, slot) in self.slots.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if let Some(text) = slot {
                out.push_str(text);
            }
        }
        out.push('\n');
        Ok(())
    }
}

struct RowSerializer<'a> {
    writer: &'a mut RowWriter,
}

impl SerializeStruct for RowSerializer<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let writer = &mut *self.writer;
        let Some(i) = writer.columns.iter().position(|c| *c == key) else {
            return Ok(());
        };
        let mut text = writer.spare.pop().unwrap_or_default();
        text.clear();
        if value.serialize(FieldSerializer { out: &mut text })? {
            writer.slots[i] = Some(text);
        } else {
            writer.spare.push(text);
        }
        Ok(())
    }

    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

macro_rules! not_a_row {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<$ret, Error> {
            Err(Error("a view row must serialise as a struct".into()))
        }
    )*};
}

impl<'a> Serializer for RowSerializer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }

    not_a_row! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(Error("a view row must serialise as a struct".into()))
    }
}

/// One field's value as CSV text. `Ok(false)` means NULL (nothing written).
struct FieldSerializer<'a> {
    out: &'a mut String,
}

impl FieldSerializer<'_> {
    fn plain(self, value: impl Display) -> Result<bool, Error> {
        write!(self.out, "{value}").map_err(|e| Error(e.to_string()))?;
        Ok(true)
    }

    /// Integers skip the formatting machinery: a rebuild writes millions of them.
    fn integer(self, value: impl itoa::Integer) -> Result<bool, Error> {
        self.out.push_str(itoa::Buffer::new().format(value));
        Ok(true)
    }

    /// A quoted field, so that an empty text is not NULL, with `"` doubled and each NUL
    /// written as U+FFFD: PostgreSQL's COPY refuses a NUL, which would fail the rebuild
    /// (see `nul`; live batches write the same text).
    fn quoted(self, value: &(impl Display + ?Sized)) -> Result<bool, Error> {
        self.out.push('"');
        let start = self.out.len();
        write!(self.out, "{value}").map_err(|e| Error(e.to_string()))?;
        if self.out[start..].contains(['"', '\0']) {
            let escaped = super::nul::text(&self.out[start..]).replace('"', "\"\"");
            self.out.truncate(start);
            self.out.push_str(&escaped);
        }
        self.out.push('"');
        Ok(true)
    }

    /// [`Self::quoted`] for a text at hand, copied without the formatting machinery.
    fn quoted_str(self, value: &str) -> Result<bool, Error> {
        self.out.reserve(value.len() + 2);
        self.out.push('"');
        let mut rest = value;
        while let Some(at) = rest.find(['"', '\0']) {
            self.out.push_str(&rest[..at]);
            self.out.push_str(if rest.as_bytes()[at] == b'"' {
                "\"\""
            } else {
                "\u{fffd}"
            });
            rest = &rest[at + 1..];
        }
        self.out.push_str(rest);
        self.out.push('"');
        Ok(true)
    }
}

macro_rules! plain {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method(self, value: $ty) -> Result<bool, Error> {
            self.plain(value)
        }
    )*};
}

macro_rules! integer {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method(self, value: $ty) -> Result<bool, Error> {
            self.integer(value)
        }
    )*};
}

impl Serializer for FieldSerializer<'_> {
    type Ok = bool;
    type Error = Error;
    type SerializeSeq = Impossible<bool, Error>;
    type SerializeTuple = Impossible<bool, Error>;
    type SerializeTupleStruct = Impossible<bool, Error>;
    type SerializeTupleVariant = Impossible<bool, Error>;
    type SerializeMap = Impossible<bool, Error>;
    type SerializeStruct = Impossible<bool, Error>;
    type SerializeStructVariant = Impossible<bool, Error>;

    plain! {
        serialize_bool(bool);
        serialize_f32(f32);
        serialize_f64(f64);
    }

    integer! {
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
    }

    fn serialize_char(self, value: char) -> Result<bool, Error> {
        self.quoted(&value)
    }

    fn serialize_str(self, value: &str) -> Result<bool, Error> {
        self.quoted_str(value)
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<bool, Error> {
        self.quoted(value)
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<bool, Error> {
        Err(unsupported("bytes"))
    }

    fn serialize_none(self) -> Result<bool, Error> {
        Ok(false)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<bool, Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<bool, Error> {
        Ok(false)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<bool, Error> {
        Ok(false)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<bool, Error> {
        self.quoted(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<bool, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<bool, Error> {
        Err(unsupported("an enum with data"))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(unsupported("a list"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(unsupported("a tuple"))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(unsupported("a tuple"))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(unsupported("an enum with data"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(unsupported("a map"))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(unsupported("a struct"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(unsupported("an enum with data"))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use serde::Serialize;

    use crate::store::views::{bigint, csv, fixed_time, text, Table};

    static ROWS: Table = Table {
        name: "rows",
        columns: &[
            text("id"),
            bigint("n"),
            text("note"),
            text("at"),
            bigint("maybe"),
        ],
        indexes: &[],
    };

    #[derive(Serialize)]
    struct Row {
        // Out of column order on purpose, with a field that is no column.
        note: Option<String>,
        id: String,
        ignored: i64,
        n: i64,
        #[serde(with = "fixed_time")]
        at: DateTime<Utc>,
    }

    #[test]
    fn csv_rows_follow_the_column_order_and_quote_every_text() {
        let mut writer = csv::RowWriter::new(&ROWS);
        let mut out = String::new();
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 9, 5, 7).unwrap();
        for row in [
            Row {
                note: Some("say \"hi\", twice\nplease".into()),
                id: "a,1".into(),
                ignored: 7,
                n: -42,
                at,
            },
            Row {
                note: None,
                id: "".into(),
                ignored: 0,
                n: 0,
                at,
            },
        ] {
            writer.write(&row, &mut out).unwrap();
        }
        assert_eq!(
            out,
            "\"a,1\",-42,\"say \"\"hi\"\", twice\nplease\",\"2026-11-21T09:05:07.000000Z\",\n\
             \"\",0,,\"2026-11-21T09:05:07.000000Z\",\n"
        );
    }

    #[test]
    fn a_nul_is_written_as_the_replacement_character() {
        let mut writer = csv::RowWriter::new(&ROWS);
        let mut out = String::new();
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 9, 5, 7).unwrap();
        let row = Row {
            note: Some("\0\"\0".into()),
            id: "a\0".into(),
            ignored: 0,
            n: 1,
            at,
        };
        writer.write(&row, &mut out).unwrap();
        assert_eq!(
            out,
            "\"a\u{fffd}\",1,\"\u{fffd}\"\"\u{fffd}\",\"2026-11-21T09:05:07.000000Z\",\n"
        );
        let mut quoted = String::new();
        super::FieldSerializer { out: &mut quoted }
            .quoted(&"x\0\"")
            .unwrap();
        assert_eq!(quoted, "\"x\u{fffd}\"\"\"");
    }
}
