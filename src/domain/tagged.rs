//! Events in their stored form: one JSON object whose first key, `type`, is the event's
//! stored name, followed by its fields.
//!
//! serde's internally tagged derive reads that form by buffering the whole object first
//! (serde-rs/serde#1495): half of a rebuild's decoding. So the event enums derive serde's
//! externally tagged form as inherent functions (`#[serde(remote = "Self")]`), and these
//! adapters translate on the fly: writing puts `type` first, as the internally tagged
//! derive did, and reading takes `type` first and hands the rest of the object straight
//! to the variant. An object whose `type` is not first (a `serde_json::Value`, whose keys
//! are sorted, or JSON written by hand) is buffered, as before.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{CowStrDeserializer, MapDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::ser::{self, Impossible, SerializeStruct, SerializeStructVariant};
use serde::{Deserializer, Serializer};

const TAG: &str = "type";

/// An event enum whose variants are all structs, with serde's externally tagged form
/// derived as inherent functions (`#[serde(remote = "Self")]`).
pub trait ExternallyTagged: Sized {
    fn serialize_external<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
    fn deserialize_external<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

/// Gives an event enum, declared with `#[serde(remote = "Self")]`, its stored form:
/// `Serialize` and `Deserialize` through this module.
macro_rules! stored_form {
    ($event:ident) => {
        impl serde::Serialize for $event {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::domain::tagged::serialize(self, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $event {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::domain::tagged::deserialize(d)
            }
        }

        impl $crate::domain::tagged::ExternallyTagged for $event {
            fn serialize_external<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // The inherent function that `remote = "Self"` derived.
                $event::serialize(self, s)
            }

            fn deserialize_external<'de, D: serde::Deserializer<'de>>(
                d: D,
            ) -> Result<Self, D::Error> {
                $event::deserialize(d)
            }
        }
    };
}
pub(crate) use stored_form;

/// Writes `event` as `{"type": <variant name>, <fields>…}`.
pub fn serialize<T: ExternallyTagged, S: Serializer>(event: &T, s: S) -> Result<S::Ok, S::Error> {
    event.serialize_external(TypeFirst(s))
}

/// Reads `{"type": <variant name>, <fields>…}`, with `type` anywhere. An event is read
/// from the log, so its values are taken as written, without the rules a client's
/// input must follow (`values::reading_stored`).
pub fn deserialize<'de, T: ExternallyTagged, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    crate::domain::values::reading_stored(|| d.deserialize_map(Tagged(PhantomData)))
}

struct TypeFirst<S>(S);

/// The fields of a struct variant, after its `type`.
struct Fields<S>(S);

fn not_a_struct_variant<E: ser::Error>() -> E {
    E::custom("an event must be an enum of struct variants")
}

macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<$ret, S::Error> {
            Err(not_a_struct_variant())
        }
    )*};
}

impl<S: Serializer> Serializer for TypeFirst<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = Impossible<S::Ok, S::Error>;
    type SerializeStructVariant = Fields<S::SerializeStruct>;

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let mut fields = self.0.serialize_struct(name, len + 1)?;
        fields.serialize_field(TAG, variant)?;
        Ok(Fields(fields))
    }

    refuse! {
        serialize_bool(bool) -> S::Ok;
        serialize_i8(i8) -> S::Ok;
        serialize_i16(i16) -> S::Ok;
        serialize_i32(i32) -> S::Ok;
        serialize_i64(i64) -> S::Ok;
        serialize_u8(u8) -> S::Ok;
        serialize_u16(u16) -> S::Ok;
        serialize_u32(u32) -> S::Ok;
        serialize_u64(u64) -> S::Ok;
        serialize_f32(f32) -> S::Ok;
        serialize_f64(f64) -> S::Ok;
        serialize_char(char) -> S::Ok;
        serialize_str(&str) -> S::Ok;
        serialize_bytes(&[u8]) -> S::Ok;
        serialize_none() -> S::Ok;
        serialize_unit() -> S::Ok;
        serialize_unit_struct(&'static str) -> S::Ok;
        serialize_unit_variant(&'static str, u32, &'static str) -> S::Ok;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
    }

    fn serialize_some<T: ser::Serialize + ?Sized>(self, _: &T) -> Result<S::Ok, S::Error> {
        Err(not_a_struct_variant())
    }

    fn serialize_newtype_struct<T: ser::Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(not_a_struct_variant())
    }

    fn serialize_newtype_variant<T: ser::Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(not_a_struct_variant())
    }
}

impl<S: SerializeStruct> SerializeStructVariant for Fields<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: ser::Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        self.0.serialize_field(key, value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
        self.0.skip_field(key)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

struct Tagged<T>(PhantomData<T>);

impl<'de, T: ExternallyTagged> Visitor<'de> for Tagged<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event: an object whose `type` names it")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let Some(first) = map.next_key_seed(Text)? else {
            return Err(de::Error::missing_field(TAG));
        };
        if first == TAG {
            let tag = map.next_value_seed(Text)?;
            return T::deserialize_external(Variant { tag, rest: map });
        }
        // `type` comes later: buffer the object, as serde's derive always does.
        let mut fields = serde_json::Map::new();
        fields.insert(first.into_owned(), map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            fields.insert(key, value);
        }
        let tag = match fields.remove(TAG) {
            Some(serde_json::Value::String(tag)) => tag,
            Some(_) => return Err(de::Error::custom("`type` must be a string")),
            None => return Err(de::Error::missing_field(TAG)),
        };
        let rest = MapDeserializer::<_, serde_json::Error>::new(fields.into_iter());
        T::deserialize_external(Variant {
            tag: Cow::Owned(tag),
            rest,
        })
        .map_err(de::Error::custom)
    }
}

/// A string, borrowed from the input when it can be.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

/// The externally tagged form, seen through the rest of an internally tagged object:
/// the variant named by `tag`, whose fields are what is left of `rest`.
struct Variant<'de, M> {
    tag: Cow<'de, str>,
    rest: M,
}

impl<'de, M: MapAccess<'de>> Deserializer<'de> for Variant<'de, M> {
    type Error = M::Error;

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, M::Error> {
        visitor.visit_enum(self)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, M::Error> {
        Err(de::Error::custom(
            "an event must be an enum of struct variants",
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

impl<'de, M: MapAccess<'de>> de::EnumAccess<'de> for Variant<'de, M> {
    type Error = M::Error;
    type Variant = Rest<M>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Rest<M>), M::Error> {
        let tag: CowStrDeserializer<'de, M::Error> = self.tag.into_deserializer();
        Ok((seed.deserialize(tag)?, Rest(self.rest)))
    }
}

struct Rest<M>(M);

impl<'de, M: MapAccess<'de>> de::VariantAccess<'de> for Rest<M> {
    type Error = M::Error;

    fn unit_variant(self) -> Result<(), M::Error> {
        Err(de::Error::custom("an event must be a struct variant"))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, M::Error> {
        Err(de::Error::custom("an event must be a struct variant"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, M::Error> {
        Err(de::Error::custom("an event must be a struct variant"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, M::Error> {
        visitor.visit_map(self.0)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use crate::domain::order::OrderEvent;
    use crate::domain::values::{Currency, Money, OrderId, PaymentId};

    fn captured() -> OrderEvent {
        let usd = Currency::parse("USD").unwrap();
        OrderEvent::PaymentCaptured {
            order_id: OrderId::parse("o-1").unwrap(),
            payment_id: PaymentId::parse("p-1").unwrap(),
            amount: Money::parse(500, usd).unwrap(),
            captured_total: Money::parse(500, usd).unwrap(),
            captured_at: Utc.with_ymd_and_hms(2026, 11, 22, 5, 0, 0).unwrap(),
        }
    }

    const STORED: &str = r#"{"type":"payment.captured","order_id":"o-1","payment_id":"p-1","amount":{"amount":500,"currency":"USD"},"captured_total":{"amount":500,"currency":"USD"},"captured_at":"2026-11-22T05:00:00Z"}"#;

    #[test]
    fn an_event_is_written_with_its_type_first_then_its_fields_in_order() {
        assert_eq!(serde_json::to_string(&captured()).unwrap(), STORED);
    }

    #[test]
    fn an_event_reads_back_wherever_its_type_is() {
        assert_eq!(
            serde_json::from_str::<OrderEvent>(STORED).unwrap(),
            captured()
        );
        let type_last = r#"{"order_id":"o-1","payment_id":"p-1","amount":{"amount":500,"currency":"USD"},"captured_total":{"amount":500,"currency":"USD"},"captured_at":"2026-11-22T05:00:00Z","type":"payment.captured"}"#;
        assert_eq!(
            serde_json::from_str::<OrderEvent>(type_last).unwrap(),
            captured()
        );
        // A JSON value's keys are sorted, so `type` is not first: how aggregates load.
        let value: serde_json::Value = serde_json::from_str(STORED).unwrap();
        assert_eq!(
            serde_json::from_value::<OrderEvent>(value).unwrap(),
            captured()
        );
    }

    #[test]
    fn an_event_without_a_known_type_or_with_a_bad_field_is_refused() {
        for bad in [
            r#"{"order_id":"o-1"}"#,
            r#"{}"#,
            r#"{"type":"payment.vanished","order_id":"o-1"}"#,
            r#"{"order_id":"o-1","type":7}"#,
            r#"{"type":"payment.captured","order_id":"o-1"}"#,
            r#"{"type":"payment.captured","order_id":7,"payment_id":"p-1","amount":{"amount":500,"currency":"USD"},"captured_total":{"amount":500,"currency":"USD"},"captured_at":"2026-11-22T05:00:00Z"}"#,
            r#"{"type":"payment.captured","order_id":"o-1","payment_id":"p-1","amount":{"amount":500,"currency":"XAU"},"captured_total":{"amount":500,"currency":"USD"},"captured_at":"2026-11-22T05:00:00Z"}"#,
            r#"["payment.captured"]"#,
        ] {
            assert!(serde_json::from_str::<OrderEvent>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stored_value_the_api_would_refuse_today_is_read_as_written() {
        // An empty id, a dot segment, control characters: facts already in a log.
        let stored = r#"{"type":"payment.failed","order_id":"","payment_id":"..","amount":{"amount":500,"currency":"USD"},"reason":"a\u0000b\u001b","failed_at":"2026-11-22T05:00:00Z"}"#;
        let OrderEvent::PaymentFailed {
            order_id,
            payment_id,
            reason,
            ..
        } = serde_json::from_str::<OrderEvent>(stored).unwrap()
        else {
            panic!("a payment.failed")
        };
        assert_eq!(order_id.as_str(), "");
        assert_eq!(payment_id.as_str(), "..");
        assert_eq!(
            reason.as_str(),
            "a\u{fffd}b\u{1b}",
            "a NUL is read as U+FFFD"
        );
        // The rules still hold for anything else.
        assert!(serde_json::from_str::<crate::domain::values::OrderId>(r#""""#).is_err());
    }
}
