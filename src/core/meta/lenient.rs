//! Tolerant field types for Meta's JSON: a field of the wrong type reads as absent, never as an
//! error, so one odd field cannot make a whole webhook unreadable.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::core::time::Millis;

/// Any JSON scalar, or `Other` for null, objects and arrays (which are consumed and dropped).
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool,
    Other,
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(v)
            .map(Scalar::Int)
            .unwrap_or(Scalar::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool)
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Scalar, A::Error> {
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Scalar, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// A string; numbers are taken as their decimal text (Meta mixes the two for ids).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LStr(pub Option<String>);

impl<'de> Deserialize<'de> for LStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(LStr(match d.deserialize_any(ScalarVisitor)? {
            Scalar::Str(s) => Some(s),
            Scalar::Int(i) => Some(i.to_string()),
            Scalar::Float(f) => Some(f.to_string()),
            Scalar::Bool | Scalar::Other => None,
        }))
    }
}

impl LStr {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A number; numeric strings are accepted.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LNum(pub Option<f64>);

impl<'de> Deserialize<'de> for LNum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(LNum(match d.deserialize_any(ScalarVisitor)? {
            Scalar::Int(i) => Some(i as f64),
            Scalar::Float(f) => Some(f),
            Scalar::Str(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            Scalar::Bool | Scalar::Other => None,
        }))
    }
}

impl LNum {
    /// The value when it is a whole number.
    pub fn int(self) -> Option<i64> {
        self.0
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    }
}

/// Meta's timestamp: Unix seconds as a string (or, in `account_update`, an integer).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LTime(pub Option<Millis>);

impl<'de> Deserialize<'de> for LTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Any whole number of seconds reads: one that is no time Meta sends (before 1970, after
        // year 9000) is the reader's to park, with the reason.
        let secs = LNum::deserialize(d)?.int();
        Ok(LTime(secs.map(|s| Millis(s.saturating_mul(1000)))))
    }
}

/// An object of type `T`; anything that is not an object reads as absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<T> Obj<T> {
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Option<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(Some)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<Option<T>, A::Error> {
                ScalarVisitor.visit_seq(s).map(|_| None)
            }
            fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_unit<E>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_none<E>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
                d.deserialize_any(self)
            }
        }
        d.deserialize_any(V(PhantomData)).map(Obj)
    }
}

/// An array of `T`; anything that is not an array reads as empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Arr<T>(pub Vec<T>);

impl<T> Default for Arr<T> {
    fn default() -> Self {
        Arr(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Arr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Vec<T>, A::Error> {
                let mut out = Vec::with_capacity(s.size_hint().unwrap_or(0).min(1024));
                while let Some(x) = s.next_element()? {
                    out.push(x);
                }
                Ok(out)
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Vec<T>, A::Error> {
                ScalarVisitor.visit_map(m).map(|_| Vec::new())
            }
            fn visit_str<E>(self, _: &str) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_unit<E>(self) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_none<E>(self) -> Result<Vec<T>, E> {
                Ok(Vec::new())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
                d.deserialize_any(self)
            }
        }
        d.deserialize_any(V(PhantomData)).map(Arr)
    }
}

/// An array kept as the raw JSON of each element (so each item keeps its exact bytes), read in
/// the same pass as its parent.
#[derive(Debug, Default)]
pub enum RawList<'a> {
    /// Absent or null.
    #[default]
    Absent,
    List(Vec<&'a serde_json::value::RawValue>),
    /// Present but not an array.
    NotList,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawList<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<RawList<'a>, A::Error> {
                let mut out = Vec::with_capacity(s.size_hint().unwrap_or(0).min(1024));
                while let Some(x) = s.next_element()? {
                    out.push(x);
                }
                Ok(RawList::List(out))
            }
            fn visit_unit<E>(self) -> Result<RawList<'a>, E> {
                Ok(RawList::Absent)
            }
            fn visit_none<E>(self) -> Result<RawList<'a>, E> {
                Ok(RawList::Absent)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawList<'a>, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawList<'a>, A::Error> {
                ScalarVisitor.visit_map(m).map(|_| RawList::NotList)
            }
            fn visit_str<E>(self, _: &str) -> Result<RawList<'a>, E> {
                Ok(RawList::NotList)
            }
            fn visit_i64<E>(self, _: i64) -> Result<RawList<'a>, E> {
                Ok(RawList::NotList)
            }
            fn visit_u64<E>(self, _: u64) -> Result<RawList<'a>, E> {
                Ok(RawList::NotList)
            }
            fn visit_f64<E>(self, _: f64) -> Result<RawList<'a>, E> {
                Ok(RawList::NotList)
            }
            fn visit_bool<E>(self, _: bool) -> Result<RawList<'a>, E> {
                Ok(RawList::NotList)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct Probe {
        s: LStr,
        n: LNum,
        t: LTime,
        o: Obj<Inner>,
        a: Arr<LStr>,
    }

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(default)]
    struct Inner {
        body: LStr,
    }

    #[test]
    fn right_types_are_read() {
        let p: Probe = serde_json::from_str(
            r#"{"s":"x","n":"1.5","t":"1764000000","o":{"body":"hi"},"a":["a",2]}"#,
        )
        .unwrap();
        assert_eq!(p.s.get(), Some("x"));
        assert_eq!(p.n.0, Some(1.5));
        assert_eq!(p.t.0, Some(Millis::from_secs(1764000000)));
        assert_eq!(p.o.get().unwrap().body.get(), Some("hi"));
        assert_eq!(p.a.0, vec![LStr(Some("a".into())), LStr(Some("2".into()))]);
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let p: Probe = serde_json::from_str(r#"{"s":{"deep":[1,2,{"x":null}]},"n":"abc","t":true,"o":"text","a":{"k":1},"extra":[1]}"#).unwrap();
        assert_eq!(p.s.get(), None);
        assert_eq!(p.n.0, None);
        assert_eq!(p.t.0, None);
        assert!(p.o.get().is_none());
        assert!(p.a.0.is_empty());
        let p: Probe =
            serde_json::from_str(r#"{"s":null,"n":null,"t":-5,"o":[1],"a":"x"}"#).unwrap();
        assert_eq!(p.s.get(), None);
        assert_eq!(
            p.t.0,
            Some(Millis(-5000)),
            "read as sent: the reader parks a time Meta never sends"
        );
        assert!(p.o.get().is_none());
    }
}
