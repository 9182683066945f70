//! SPIRE's ClusterSPIFFEIDs (`spire.spiffe.io/v1alpha1`, cluster-scoped): which pods SPIRE registers,
//! and with which SPIFFE ID (DESIGN.md section 13).

use serde::{Deserialize, Serialize};

use super::object::Object;
use super::selector::LabelSelector;

pub type ClusterSpiffeId = Object<ClusterSpiffeIdSpec>;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpiffeIdSpec {
    /// A Go template such as `spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}`.
    #[serde(default, rename = "spiffeIDTemplate")]
    pub spiffe_id_template: Option<String>,
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    /// The SPIRE controller manager class that acts on it.
    #[serde(default)]
    pub class_name: Option<String>,
    /// Applies only to pods no other (non-fallback) ClusterSPIFFEID selects.
    #[serde(default)]
    pub fallback: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_istio_sample_reads() {
        let id: ClusterSpiffeId = serde_json::from_value(json!({
            "apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEID",
            "metadata": {"name": "example"},
            "spec": {"spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
                     "podSelector": {"matchLabels": {"spiffe.io/spire-managed-identity": "true"}},
                     "workloadSelectorTemplates": ["k8s:ns:{{ .PodMeta.Namespace }}"]},
        }))
        .unwrap();
        assert!(id.spec.spiffe_id_template.unwrap().contains("/sa/"));
        assert_eq!(id.spec.fallback, None);
        assert!(id.spec.pod_selector.unwrap().match_labels.is_some());
    }
}
