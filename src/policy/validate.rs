//! `/validate` dispatch (DESIGN.md sections 5 and 10): the kinds table says which rules a kind gets and where its
//! pod template sits. A kind not in the table is admitted without a look: an unfamiliar kind is never
//! a reason to deny.

use super::finding::Finding;
use super::istio::{
    authorization_policy, destination_rule, gateway, peer_authentication, virtual_service,
};
use super::kinds::{self, Validator};
use super::object::{DecodeError, Pod, decode, decode_at};
use super::{helmrelease, podtemplate, spire};
use crate::config::Config;

/// Every finding for one object of the given group and kind. A field the rules read that has the wrong
/// type is a `DecodeError` (the caller answers 400 BadRequest), naming the field's full path.
pub fn validate(
    group: &str,
    kind: &str,
    object_json: &str,
    cfg: &Config,
) -> Result<Vec<Finding>, DecodeError> {
    let Some(kind) = kinds::find(group, kind) else {
        return Ok(Vec::new());
    };
    match (kind.validate, kind.template) {
        (Some(Validator::HelmRelease), _) => {
            Ok(helmrelease::validate(&decode(object_json)?, &cfg.mesh))
        }
        (Some(Validator::PodTemplate), Some(path)) => match decode_at::<Pod>(object_json, path)? {
            Some(template) => podtemplate::validate(&template, &path.join(".")),
            None => Ok(Vec::new()),
        },
        (Some(Validator::AuthorizationPolicy), _) => Ok(authorization_policy::validate(
            &decode(object_json)?,
            &cfg.mesh,
        )),
        (Some(Validator::PeerAuthentication), _) => {
            Ok(peer_authentication::validate(&decode(object_json)?))
        }
        (Some(Validator::DestinationRule), _) => {
            Ok(destination_rule::validate(&decode(object_json)?))
        }
        (Some(Validator::VirtualService), _) => {
            Ok(virtual_service::validate(&decode(object_json)?))
        }
        (Some(Validator::Gateway), _) => Ok(gateway::validate(&decode(object_json)?)),
        (Some(Validator::ClusterSpiffeId), _) => Ok(spire::validate(&decode(object_json)?, cfg)),
        (Some(Validator::PodTemplate), None) | (None, _) => Ok(Vec::new()),
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
