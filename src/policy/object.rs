//! Lenient, borrowed views of the Kubernetes objects the rules read.
//!
//! Only the fields a rule looks at are declared; everything else in the object is skipped unread, so an
//! unknown field or a newer API version never causes a denial (DESIGN.md section 3). Strings borrow from
//! the request body where they contain no escapes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// A `map[string]string` such as `metadata.labels`.
pub type StringMap<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

/// A string borrowed from the body unless it contains escapes. serde's own `Cow<str>` borrows only as
/// a struct field marked `borrow`: as a map key, a map value or in a hand-written visitor it always
/// copies, which cost a Pod review some 40 allocations.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl<'a> Text<'a> {
    pub fn into_cow(self) -> Cow<'a, str> {
        self.0
    }
}

/// Deserializes an optional [`StringMap`] with its keys and values borrowed.
fn string_map<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<StringMap<'a>>, D::Error> {
    struct MapVisitor<'a>(std::marker::PhantomData<StringMap<'a>>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for MapVisitor<'a> {
        type Value = Option<StringMap<'a>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = StringMap::new();
            while let Some((Text(key), Text(value))) = map.next_entry()? {
                out.insert(key, value);
            }
            Ok(Some(out))
        }
    }
    deserializer.deserialize_option(MapVisitor(std::marker::PhantomData))
}

/// An object that could not be read as the kind it claims, with the JSON path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    /// Dotted path of the field, e.g. `metadata.labels`.
    pub path: String,
    /// What serde found wrong there.
    pub message: String,
}

/// Decodes `json` into a view, naming the field that did not fit.
pub fn decode<'de, T: Deserialize<'de>>(json: &'de str) -> Result<T, DecodeError> {
    // Tracking the path costs on every field; only a failed decode needs it, so decode again then.
    if let Ok(view) = serde_json::from_str(json) {
        return Ok(view);
    }
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        DecodeError {
            path: if path == "." { "(object)".into() } else { path },
            // serde_json appends "at line L column C", which means nothing to someone reading kubectl output.
            message: strip_position(&inner.to_string()).to_string(),
        }
    })
}

/// Decodes an owned value (used by `review`, whose objects come from YAML).
pub fn decode_owned<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| DecodeError {
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Implements `Deserialize` for a view derived with `#[serde(remote = "Self")]`, accepting only a JSON
/// object. A plainly derived struct also accepts an array (fields by position), so `"metadata": []`
/// would decode, and the patch built for it (`add /metadata/labels`) would not apply to the object.
macro_rules! map_only {
    ($view:ident<$a:lifetime>, $what:literal) => {
        impl<'de: $a, $a> serde::Deserialize<'de> for $view<$a> {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct MapOnly<$a>(std::marker::PhantomData<$view<$a>>);
                impl<'de: $a, $a> serde::de::Visitor<'de> for MapOnly<$a> {
                    type Value = $view<$a>;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($what)
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$view<$a>, A::Error> {
                        $view::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(MapOnly(std::marker::PhantomData))
            }
        }
    };
    ($view:ident, $what:literal) => {
        impl<'de> serde::Deserialize<'de> for $view {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct MapOnly;
                impl<'de> serde::de::Visitor<'de> for MapOnly {
                    type Value = $view;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($what)
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$view, A::Error> {
                        $view::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(MapOnly)
            }
        }
    };
}
pub(crate) use map_only;

map_only!(ObjectMeta<'a>, "an object (ObjectMeta)");
map_only!(Namespace<'a>, "a Namespace object");
map_only!(Pod<'a>, "a Pod object");
map_only!(PodSpec<'a>, "an object (PodSpec)");
map_only!(Container<'a>, "an object (Container)");
map_only!(VolumeMount<'a>, "an object (VolumeMount)");

/// `metadata` as the rules read it.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self")]
pub struct ObjectMeta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    /// `None` when absent or `null`.
    #[serde(borrow, default, deserialize_with = "string_map")]
    pub labels: Option<StringMap<'a>>,
    /// `None` when absent or `null`.
    #[serde(borrow, default, deserialize_with = "string_map")]
    pub annotations: Option<StringMap<'a>>,
}

impl ObjectMeta<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(|v| v.as_ref())
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(|v| v.as_ref())
    }
}

/// A Namespace.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self")]
pub struct Namespace<'a> {
    #[serde(borrow, default)]
    pub metadata: Option<ObjectMeta<'a>>,
}

/// A Pod: the parts section 4 reads.
#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self")]
pub struct Pod<'a> {
    #[serde(borrow, default)]
    pub metadata: Option<ObjectMeta<'a>>,
    #[serde(borrow, default)]
    pub spec: Option<PodSpec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(remote = "Self")]
pub struct PodSpec<'a> {
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(borrow, default)]
    pub volumes: Option<Vec<Volume<'a>>>,
    /// Kept unread until a rule needs it (only `spiffe.io/workload-api-mount` does, through
    /// [`PodSpec::containers`]): containers are most of a pod's bytes, and reading them field by field
    /// cost a tenth of every review.
    #[serde(borrow, default, rename = "containers")]
    pub raw_containers: Option<&'a RawValue>,
}

impl<'a> PodSpec<'a> {
    /// The containers, read now; `None` when absent or `null`. A container list that does not fit
    /// is named from the object's root (`spec.containers[0]`).
    pub fn containers(&self) -> Result<Option<Vec<Container<'a>>>, DecodeError> {
        let Some(raw) = self.raw_containers else {
            return Ok(None);
        };
        decode::<Option<Vec<Container<'a>>>>(raw.get()).map_err(|e| DecodeError {
            path: match e.path.as_str() {
                "(object)" => "spec.containers".into(),
                path => format!("spec.containers{path}"),
            },
            message: e.message,
        })
    }
}

/// A volume: its name, its CSI source if it has one, and how many other sources it declares (their
/// content is skipped unread: a projected volume can be large).
#[derive(Debug, Default)]
pub struct Volume<'a> {
    pub name: Option<Cow<'a, str>>,
    pub csi: Option<CsiSource<'a>>,
    /// Keys other than `name` and `csi`, i.e. other sources.
    pub other_sources: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsiSource<'a> {
    #[serde(borrow, default)]
    pub driver: Option<Cow<'a, str>>,
    #[serde(default)]
    pub read_only: Option<bool>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Volume<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VolumeVisitor<'a>(std::marker::PhantomData<Volume<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for VolumeVisitor<'a> {
            type Value = Volume<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a volume")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Volume<'a>, A::Error> {
                let mut volume = Volume::default();
                while let Some(Text(key)) = map.next_key()? {
                    match key.as_ref() {
                        "name" => {
                            volume.name = map.next_value::<Option<Text>>()?.map(Text::into_cow)
                        }
                        "csi" => volume.csi = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            volume.other_sources += 1;
                        }
                    }
                }
                Ok(volume)
            }
        }
        deserializer.deserialize_map(VolumeVisitor(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(remote = "Self")]
pub struct Container<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub volume_mounts: Option<Vec<VolumeMount<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self")]
pub struct VolumeMount<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_unread_types_are_ignored() {
        let pod: Pod = decode(r#"{"apiVersion":"v9","status":42,"metadata":{"labels":{"a":"b"},"x":[1]},"spec":{"containers":[{"name":"c","image":7}]}}"#).unwrap();
        assert_eq!(pod.metadata.unwrap().label("a"), Some("b"));
    }

    #[test]
    fn a_field_the_rules_read_with_the_wrong_type_is_named() {
        let err = decode::<Pod>(r#"{"metadata":{"labels":"app=web"}}"#).unwrap_err();
        assert_eq!(err.path, "metadata.labels");
        assert!(err.message.contains("expected a map"), "{}", err.message);
        assert!(!err.message.contains("line"), "{}", err.message);
    }

    #[test]
    fn null_maps_read_as_absent() {
        let pod: Pod = decode(r#"{"metadata":{"labels":null,"annotations":null}}"#).unwrap();
        let meta = pod.metadata.unwrap();
        assert!(meta.labels.is_none() && meta.annotations.is_none());
    }

    #[test]
    fn arrays_where_the_rules_read_objects_are_refused() {
        for (json, path) in [
            ("[]", "(object)"),
            (r#"{"metadata":[]}"#, "metadata"),
            (r#"{"metadata":["n"]}"#, "metadata"),
            (r#"{"spec":[]}"#, "spec"),
            (r#"{"spec":{"volumes":[[]]}}"#, "spec.volumes[0]"),
        ] {
            let err = decode::<Pod>(json).unwrap_err();
            assert_eq!(err.path, path, "{json}");
            assert!(
                err.message.contains("invalid type: sequence"),
                "{json}: {}",
                err.message
            );
        }
        assert_eq!(decode::<Namespace>("[]").unwrap_err().path, "(object)");
        assert_eq!(
            decode::<Namespace>(r#"{"metadata":[]}"#).unwrap_err().path,
            "metadata"
        );
    }

    #[test]
    fn containers_are_read_only_when_asked_for_and_named_from_the_root() {
        let pod: Pod = decode(r#"{"spec":{"containers":[["c"]]}}"#).expect("unread until asked");
        let err = pod.spec.unwrap().containers().unwrap_err();
        assert_eq!(err.path, "spec.containers[0]");
        assert!(
            err.message.contains("invalid type: sequence"),
            "{}",
            err.message
        );

        for (json, path) in [
            (r#"{"spec":{"containers":"c"}}"#, "spec.containers"),
            (
                r#"{"spec":{"containers":[{"volumeMounts":[[]]}]}}"#,
                "spec.containers[0].volumeMounts[0]",
            ),
        ] {
            let pod: Pod = decode(json).unwrap();
            assert_eq!(
                pod.spec.unwrap().containers().unwrap_err().path,
                path,
                "{json}"
            );
        }

        let pod: Pod =
            decode(r#"{"spec":{"containers":[{"name":"a","volumeMounts":[{"name":"v"}]}]}}"#)
                .unwrap();
        let containers = pod.spec.unwrap().containers().unwrap().unwrap();
        assert_eq!(containers[0].name.as_deref(), Some("a"));
        let pod: Pod = decode(r#"{"spec":{"containers":null}}"#).unwrap();
        assert!(pod.spec.unwrap().containers().unwrap().is_none());
    }

    #[test]
    fn map_entries_and_volume_names_borrow_from_the_body_unless_escaped() {
        let pod: Pod = decode(
            r#"{"metadata":{"labels":{"app":"web","a\/b":"x"},"annotations":{"k":"\u00e9"}},"spec":{"volumes":[{"name":"v"}]}}"#,
        )
        .unwrap();
        let meta = pod.metadata.unwrap();
        let labels = meta.labels.unwrap();
        for (key, value) in labels.iter().filter(|(k, _)| *k == "app") {
            assert!(matches!((key, value), (Cow::Borrowed(_), Cow::Borrowed(_))));
        }
        let (escaped_key, _) = labels.iter().find(|(k, _)| *k == "a/b").unwrap();
        assert!(matches!(escaped_key, Cow::Owned(_)));
        let annotations = meta.annotations.unwrap();
        assert!(matches!(annotations.get("k"), Some(Cow::Owned(v)) if v == "é"));
        let volumes = pod.spec.unwrap().volumes.unwrap();
        assert!(matches!(volumes[0].name, Some(Cow::Borrowed("v"))));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let pod: Pod = decode(r#"{"metadata":{"labels":{"a\/b":"\u00e9"}}}"#).unwrap();
        assert_eq!(pod.metadata.unwrap().label("a/b"), Some("é"));
    }
}
