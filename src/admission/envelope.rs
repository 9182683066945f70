//! Decoding the AdmissionReview envelope, in one pass with the object where possible.
//!
//! The request's `object` is the bulk of a review (a Pod is kilobytes). Capturing it raw and decoding
//! it again costs a second scan of those bytes; since the apiserver writes `kind` and `operation`
//! before `object`, the envelope decoder can pick the object's view as it reaches it. When it cannot
//! (other key order, other endpoint, an unfamiliar kind) the object is kept raw and decoded afterwards.

use std::borrow::Cow;
use std::fmt;

use kube::core::admission::Operation;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::policy::Endpoint;
use crate::policy::decide::Object;
use crate::policy::kinds::Mutator;
use crate::policy::object::{MapOnly, Namespace, Pod, Text};

/// Which objects the decoder may turn into views in the same pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typing {
    /// The views the endpoint's rules read.
    Views(Endpoint),
    /// None: keep every object raw.
    Raw,
}

impl From<Endpoint> for Typing {
    fn from(endpoint: Endpoint) -> Self {
        Typing::Views(endpoint)
    }
}

pub struct ReviewIn<'a> {
    pub api_version: Option<Cow<'a, str>>,
    pub kind: Option<Cow<'a, str>>,
    pub request: Option<RequestIn<'a>>,
}

pub struct RequestIn<'a> {
    pub uid: Cow<'a, str>,
    pub kind: GroupVersionKindIn<'a>,
    pub sub_resource: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    pub namespace: Option<Cow<'a, str>>,
    pub operation: Operation,
    pub dry_run: Option<bool>,
    pub object: Object<'a>,
}

#[derive(Deserialize)]
pub struct GroupVersionKindIn<'a> {
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

impl<'a> ReviewIn<'a> {
    pub fn decode(text: &'a str, typing: impl Into<Typing>) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let review = ReviewSeed(typing.into()).deserialize(&mut de)?;
        de.end()?;
        Ok(review)
    }
}

struct ReviewSeed(Typing);

impl<'de> DeserializeSeed<'de> for ReviewSeed {
    type Value = ReviewIn<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ReviewSeed {
    type Value = ReviewIn<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionReview object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut review = ReviewIn {
            api_version: None,
            kind: None,
            request: None,
        };
        while let Some(Text(key)) = map.next_key()? {
            match key.as_ref() {
                "apiVersion" => review.api_version = optional_text(&mut map)?,
                "kind" => review.kind = optional_text(&mut map)?,
                "request" => review.request = map.next_value_seed(OptionalRequest(self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(review)
    }
}

/// `request`, which may be `null`.
struct OptionalRequest(Typing);

impl<'de> DeserializeSeed<'de> for OptionalRequest {
    type Value = Option<RequestIn<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalRequest {
    type Value = Option<RequestIn<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionRequest object")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer
            .deserialize_map(RequestVisitor(self.0))
            .map(Some)
    }
}

struct RequestVisitor(Typing);

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = RequestIn<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionRequest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut uid, mut kind, mut operation) = (None, None, None);
        let (mut sub_resource, mut name, mut namespace, mut dry_run) = (None, None, None, None);
        let mut object = Object::Absent;
        while let Some(Text(key)) = map.next_key()? {
            match key.as_ref() {
                "uid" => uid = Some(map.next_value::<Text>()?.into_cow()),
                "kind" => kind = Some(map.next_value::<GroupVersionKindIn<'de>>()?),
                "subResource" => sub_resource = optional_text(&mut map)?,
                "name" => name = optional_text(&mut map)?,
                "namespace" => namespace = optional_text(&mut map)?,
                "operation" => operation = Some(parse_operation(map.next_value::<Text>()?.0)?),
                "dryRun" => dry_run = map.next_value()?,
                "object" => {
                    let view = match (self.0, &kind, &operation) {
                        (Typing::Views(endpoint), Some(kind), Some(op)) => {
                            endpoint.view(&kind.group, &kind.kind, op)
                        }
                        _ => None,
                    };
                    object = match view {
                        Some(Mutator::Pod) => map
                            .next_value::<Option<MapOnly<Pod<'de>>>>()?
                            .map_or(Object::Absent, |MapOnly(pod)| Object::Pod(pod)),
                        Some(Mutator::Namespace) => map
                            .next_value::<Option<MapOnly<Namespace<'de>>>>()?
                            .map_or(Object::Absent, |MapOnly(ns)| Object::Namespace(ns)),
                        None => map
                            .next_value::<Option<&'de RawValue>>()?
                            .map_or(Object::Absent, |raw| Object::Raw(raw.get())),
                    };
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(RequestIn {
            uid: uid.ok_or_else(|| de::Error::missing_field("uid"))?,
            kind: kind.ok_or_else(|| de::Error::missing_field("kind"))?,
            sub_resource,
            name,
            namespace,
            operation: operation.ok_or_else(|| de::Error::missing_field("operation"))?,
            dry_run,
            object,
        })
    }
}

/// The next value as an optional string, borrowed from the body where it can be.
fn optional_text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_value::<Option<Text<'de>>>()?.map(Text::into_cow))
}

/// Reads `operation` as a string first: serde_json's enum decoder reports a non-string value (`false`,
/// `1`, `[]`) as the *syntax* error "expected value", which would make a well-formed JSON body look
/// like broken JSON to the client.
fn parse_operation<E: de::Error>(name: Cow<'_, str>) -> Result<Operation, E> {
    const VARIANTS: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT"];
    match name.as_ref() {
        "CREATE" => Ok(Operation::Create),
        "UPDATE" => Ok(Operation::Update),
        "DELETE" => Ok(Operation::Delete),
        "CONNECT" => Ok(Operation::Connect),
        other => Err(E::unknown_variant(other, VARIANTS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str, typing: Typing) -> RequestIn<'_> {
        ReviewIn::decode(body, typing).unwrap().request.unwrap()
    }

    #[test]
    fn the_object_is_decoded_in_the_same_pass_when_its_kind_came_first() {
        let kind_first = r#"{"request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"name":"p"}}}}"#;
        assert!(matches!(
            request(kind_first, Endpoint::Mutate.into()).object,
            Object::Pod(_)
        ));
        // Validation and pod updates keep the object raw.
        assert!(matches!(
            request(kind_first, Endpoint::Validate.into()).object,
            Object::Raw(_)
        ));
        let update = kind_first.replace("CREATE", "UPDATE");
        assert!(matches!(
            request(&update, Endpoint::Mutate.into()).object,
            Object::Raw(_)
        ));
        assert!(matches!(
            request(kind_first, Typing::Raw).object,
            Object::Raw(_)
        ));
    }

    #[test]
    fn strings_borrow_from_the_body_and_escaped_keys_still_match() {
        let body = r#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"u-1","kind":{"kind":"Pod"},"\u006eame":"p","namespace":"ns","operation":"DELETE"}}"#;
        let review = ReviewIn::decode(body, Typing::Raw).unwrap();
        assert!(matches!(review.api_version, Some(Cow::Borrowed(_))));
        let r = review.request.unwrap();
        assert!(matches!(r.uid, Cow::Borrowed("u-1")));
        assert!(matches!(r.namespace, Some(Cow::Borrowed("ns"))));
        assert_eq!(r.name.as_deref(), Some("p"));
    }

    #[test]
    fn any_key_order_is_read() {
        let object_first = r#"{"request":{"object":{"metadata":{"name":"n"}},"operation":"UPDATE","kind":{"kind":"Namespace"},"uid":"u"},"kind":"AdmissionReview"}"#;
        let r = request(object_first, Endpoint::Mutate.into());
        assert!(matches!(r.object, Object::Raw(raw) if raw == r#"{"metadata":{"name":"n"}}"#));
        assert_eq!((r.uid.as_ref(), r.kind.kind.as_ref()), ("u", "Namespace"));
        let null =
            r#"{"request":{"uid":"u","kind":{"kind":"Pod"},"operation":"DELETE","object":null}}"#;
        assert!(matches!(
            request(null, Endpoint::Mutate.into()).object,
            Object::Absent
        ));
        assert!(
            ReviewIn::decode(r#"{"request":null}"#, Typing::Raw)
                .unwrap()
                .request
                .is_none()
        );
    }

    #[test]
    fn missing_fields_and_trailing_bytes_are_errors() {
        for body in [
            r#"{"request":{"kind":{"kind":"Pod"},"operation":"CREATE"}}"#,
            r#"{"request":{"uid":"u","operation":"CREATE"}}"#,
            r#"{"request":{"uid":"u","kind":{"kind":"Pod"}}}"#,
            r#"{"request":{"uid":"u","kind":{"kind":"Pod"},"operation":"PATCH"}}"#,
            r#"{} {}"#,
        ] {
            assert!(ReviewIn::decode(body, Typing::Raw).is_err(), "{body}");
        }
    }
}
