//! Label selectors as Kubernetes evaluates them: `matchLabels` and `matchExpressions` (`In`,
//! `NotIn`, `Exists`, `DoesNotExist`), all of which must hold. An empty selector selects everything;
//! an operator Kubernetes does not know selects nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::object::StringMap;

/// Whether `selector` selects an object with `labels`.
pub fn matches(selector: &LabelSelector, labels: &StringMap) -> bool {
    let equal = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    equal
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether a plain `matchLabels` map (Istio's selectors, a Service's selector) selects `labels`.
pub fn matches_labels(selector: &StringMap, labels: &StringMap) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(json: serde_json::Value) -> LabelSelector {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let labels = StringMap::from([("app".into(), "web".into()), ("tier".into(), "fe".into())]);
        let cases = [
            (json!({}), true),
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["fe"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}),
                false,
            ),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}),
                false,
            ),
        ];
        for (json, want) in cases {
            assert_eq!(matches(&selector(json.clone()), &labels), want, "{json}");
        }
        assert!(matches_labels(&StringMap::new(), &labels));
        assert!(!matches_labels(
            &StringMap::from([("app".into(), "x".into())]),
            &labels
        ));
    }
}
