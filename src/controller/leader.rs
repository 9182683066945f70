//! Leader election on the Lease `mesh-admission-controller` with `kube-lease-manager` (maintained,
//! built on kube 5, server-side apply on coordination.k8s.io/v1 Lease). Only the leader writes;
//! the others keep their stores warm to take over at once.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Lease's name (DESIGN.md section 9).
pub const LEASE_NAME: &str = "mesh-admission-controller";
/// A leader that stops renewing loses the Lease after this long; with the other replica's wait
/// for the expiry and its jitter (at most 1 s), takeover is within 20 s of the leader's death.
const LEASE_SECONDS: u64 = 15;
/// The leader renews this long before expiry.
const RENEW_BEFORE_SECONDS: u64 = 5;

/// The Lease's namespace: the flag, else the pod's namespace (`POD_NAMESPACE` from the downward
/// API), else the client's (the service account's in a cluster, the kubeconfig context's outside).
pub fn namespace(flag: Option<&str>, client: &Client) -> String {
    let pod = std::env::var("POD_NAMESPACE").ok();
    let named = flag.map(str::to_owned).into_iter().chain(pod);
    let namespace = named.into_iter().find(|n| !n.is_empty());
    namespace.unwrap_or_else(|| client.default_namespace().to_owned())
}

/// This replica's identity: `POD_NAME`, else `<hostname>-<pid>`.
pub fn identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.is_empty()
    {
        return name;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

/// A running election: `leading` says whether this replica holds the Lease.
pub struct Election {
    pub leading: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Election {
    pub async fn start(
        client: Client,
        namespace: &str,
        identity: &str,
    ) -> Result<Election, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(RENEW_BEFORE_SECONDS)
            .build()
            .await?;
        let (leading, task) = manager.watch().await;
        Ok(Election { leading, task })
    }

    /// Gives the Lease up (when held), so that another replica need not wait for it to expire.
    /// Every clone of `leading` must be dropped first: the channel closes with its last receiver.
    pub async fn release(self) {
        // Closing the channel makes the manager's task release the Lease and end.
        drop(self.leading);
        match tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("leader Lease released"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "could not release the leader Lease"),
            Ok(Err(error)) => tracing::warn!(%error, "leader election task failed"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_flag_wins_over_the_environment() {
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        assert_eq!(namespace(Some("mesh-system"), &client), "mesh-system");
    }

    #[test]
    fn identity_is_never_empty() {
        assert!(!identity().is_empty());
    }
}
