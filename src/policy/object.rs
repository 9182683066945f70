//! Lenient, borrowed views of the Kubernetes objects the rules read: one set for mutation and
//! validation alike.
//!
//! Only the fields a rule looks at are declared; everything else in the object is skipped unread, so an
//! unknown field or a newer API version never causes a denial (DESIGN.md section 3). Strings in struct
//! fields borrow from the request body where they contain no escapes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A `map[string]string` such as `metadata.labels`.
pub type StringMap = BTreeMap<String, String>;

/// A string borrowed from the body unless it contains escapes, for hand-written visitors (serde's
/// own `Cow<str>` borrows only as a struct field marked `borrow`).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl<'a> Text<'a> {
    pub fn into_cow(self) -> Cow<'a, str> {
        self.0
    }
}

/// A view that accepts only a JSON object. A derived struct also accepts an array (fields by
/// position), so `"metadata": []` would decode, and the patch built for it (`add /metadata/labels`)
/// would not apply to the object. Every view field goes through this (see [`object`], [`objects`]).
#[derive(Debug)]
pub struct MapOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = MapOnly<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `an object (PodSpec)`: the view's own name, without its module path.
                let name = std::any::type_name::<T>();
                let name = name.split('<').next().unwrap_or(name);
                write!(
                    f,
                    "an object ({})",
                    name.rsplit("::").next().unwrap_or(name)
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MapOnly<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(MapOnly)
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// An optional view field: absent or `null` is `None`, anything but an object an error.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<MapOnly<T>>::deserialize(deserializer)?.map(|MapOnly(view)| view))
}

/// An optional list of views: absent or `null` is `None`, each element must be an object.
pub fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    let list = Option::<Vec<MapOnly<T>>>::deserialize(deserializer)?;
    Ok(list.map(|views| views.into_iter().map(|MapOnly(view)| view).collect()))
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

impl DecodeError {
    /// The same error for a view that sits at `at` (dotted) in the object the user wrote.
    pub fn under(self, at: &str) -> Self {
        let path = match (at, self.path.as_str()) {
            ("", _) => return self,
            (_, "(object)") => at.to_owned(),
            (_, path) if path.starts_with('[') => format!("{at}{path}"),
            (_, path) => format!("{at}.{path}"),
        };
        DecodeError { path, ..self }
    }
}

/// Decodes `json` into a view (which must be a JSON object), naming the field that did not fit.
pub fn decode<'de, T: Deserialize<'de>>(json: &'de str) -> Result<T, DecodeError> {
    decode_as::<MapOnly<T>>(json).map(|MapOnly(view)| view)
}

/// Decodes `json` as `T` itself (an object, a list, …), naming the field that did not fit.
fn decode_as<'de, T: Deserialize<'de>>(json: &'de str) -> Result<T, DecodeError> {
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

fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// The view at `path` (keys of nested objects) in the object `json`: `None` when a key on the way is
/// absent or `null`. The object and each level on the way must be JSON objects; a level that is not
/// is named in the error (`spec.jobTemplate`).
pub fn decode_at<'de, T: Deserialize<'de>>(
    json: &'de str,
    path: &[&str],
) -> Result<Option<T>, DecodeError> {
    let seed = || At {
        path,
        view: PhantomData::<T>,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    if let Ok(view) = seed()
        .deserialize(&mut de)
        .and_then(|view| de.end().map(|()| view))
    {
        return Ok(view);
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let mut track = serde_path_to_error::Track::new();
    let result = seed()
        .deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
        .and_then(|view| de.end().map(|()| view));
    result.map_err(|e| {
        let path = track.path().to_string();
        DecodeError {
            path: if path == "." { "(object)".into() } else { path },
            message: strip_position(&e.to_string()).to_string(),
        }
    })
}

/// Walks `path` down to the view; the root must be an object, levels below may be `null`.
struct At<'p, T> {
    path: &'p [&'p str],
    view: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for At<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        if self.path.is_empty() {
            return MapOnly::<T>::deserialize(deserializer).map(|MapOnly(view)| Some(view));
        }
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for At<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(Text(key)) = map.next_key()? {
            if key == self.path[0] {
                found = map.next_value_seed(Below(At {
                    path: &self.path[1..],
                    view: PhantomData,
                }))?;
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A level below the root: `null` ends the walk.
struct Below<'p, T>(At<'p, T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Below<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Below<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        self.0.deserialize(deserializer)
    }
}

/// `metadata` as the rules read it.
#[derive(Debug, Default, Deserialize)]
pub struct ObjectMeta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    /// `None` when absent or `null`.
    #[serde(default)]
    pub labels: Option<StringMap>,
    /// `None` when absent or `null`.
    #[serde(default)]
    pub annotations: Option<StringMap>,
}

impl ObjectMeta<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(String::as_str)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// An object of which only `metadata` is read: a Namespace, a HelmRelease of any version.
#[derive(Debug, Default, Deserialize)]
pub struct Resource<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub metadata: Option<ObjectMeta<'a>>,
}

pub type Namespace<'a> = Resource<'a>;
pub type HelmRelease<'a> = Resource<'a>;

/// A Pod, or the pod template of a workload: what the mutation (section 4) and the validation
/// (section 5) rules read.
#[derive(Debug, Default, Deserialize)]
pub struct Pod<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub metadata: Option<ObjectMeta<'a>>,
    #[serde(borrow, default, deserialize_with = "object")]
    pub spec: Option<PodSpec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec<'a> {
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(borrow, default, deserialize_with = "objects")]
    pub volumes: Option<Vec<Volume<'a>>>,
    /// Kept unread until a rule needs them ([`PodSpec::containers`]): containers are most of a pod's
    /// bytes, and the mutation of a pod reads them only for `spiffe.io/workload-api-mount`.
    #[serde(borrow, default, rename = "containers")]
    raw_containers: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "initContainers")]
    raw_init_containers: Option<&'a RawValue>,
}

impl<'a> PodSpec<'a> {
    /// The containers, read now; `None` when absent or `null`. A list that does not fit is named
    /// from the pod's root (`spec.containers[0]`).
    pub fn containers(&self) -> Result<Option<Vec<Container<'a>>>, DecodeError> {
        containers(self.raw_containers, "spec.containers")
    }

    /// The init containers, read now, as [`PodSpec::containers`].
    pub fn init_containers(&self) -> Result<Option<Vec<Container<'a>>>, DecodeError> {
        containers(self.raw_init_containers, "spec.initContainers")
    }
}

fn containers<'a>(
    raw: Option<&'a RawValue>,
    at: &str,
) -> Result<Option<Vec<Container<'a>>>, DecodeError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct List<'a>(#[serde(borrow, deserialize_with = "objects")] Option<Vec<Container<'a>>>);
    decode_as::<List<'a>>(raw.get())
        .map(|List(list)| list)
        .map_err(|e| e.under(at))
}

/// A container: what the mount rule (its name and mounts) and the validation rules (ports, env,
/// restart policy) read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "objects")]
    pub volume_mounts: Option<Vec<VolumeMount<'a>>>,
    /// `Always` on an init container makes it a native sidecar, running as long as the pod.
    #[serde(borrow, default)]
    pub restart_policy: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "objects")]
    pub ports: Option<Vec<ContainerPort>>,
    #[serde(borrow, default, deserialize_with = "objects")]
    pub env: Option<Vec<EnvVar<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct VolumeMount<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Wider than the `int32` of the API so that an out-of-range number is ignored, not a decode error.
    #[serde(default)]
    pub container_port: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EnvVar<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    /// Absent when the variable comes from `valueFrom`.
    #[serde(borrow, default)]
    pub value: Option<Cow<'a, str>>,
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
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VolumeVisitor<'a>(PhantomData<Volume<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for VolumeVisitor<'a> {
            type Value = Volume<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a volume")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Volume<'a>, A::Error> {
                let mut volume = Volume::default();
                while let Some(Text(key)) = map.next_key()? {
                    match key.as_ref() {
                        "name" => {
                            volume.name = map.next_value::<Option<Text>>()?.map(Text::into_cow)
                        }
                        "csi" => volume.csi = map.next_value()?,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                            volume.other_sources += 1;
                        }
                    }
                }
                Ok(volume)
            }
        }
        deserializer.deserialize_map(VolumeVisitor(PhantomData))
    }
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
    fn volume_names_borrow_from_the_body_unless_escaped() {
        let pod: Pod = decode(r#"{"spec":{"volumes":[{"name":"v"},{"name":"\u0076"}]}}"#).unwrap();
        let volumes = pod.spec.unwrap().volumes.unwrap();
        assert!(matches!(volumes[0].name, Some(Cow::Borrowed("v"))));
        assert!(matches!(&volumes[1].name, Some(Cow::Owned(v)) if v == "v"));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let pod: Pod = decode(r#"{"metadata":{"labels":{"a\/b":"\u00e9"}}}"#).unwrap();
        assert_eq!(pod.metadata.unwrap().label("a/b"), Some("é"));
    }
}
