//! Pod creations going on in the background while a test changes something (rotates certificates,
//! replaces replicas): the load engine's pod creations ([`PodCreations`]) over one HTTP/2
//! connection with the control plane's admin token, run on a test's runtime until finished.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::control_plane::ControlPlane;
use crate::load::{self, Plan, PodCreations, Progress, Report, pods_target};
use crate::process::wait_until;

/// How long one creation (or the connection's handshake) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct PodTraffic {
    progress: Arc<Progress>,
    run: JoinHandle<Result<Report, String>>,
}

impl PodTraffic {
    /// Starts creating `pods` in `namespace`, `in_flight` at a time, at most `max_pods` of them and
    /// for at most `max_time`.
    pub fn start(
        runtime: &Runtime,
        cp: &ControlPlane,
        namespace: &str,
        pods: PodCreations,
        in_flight: usize,
        (max_pods, max_time): (u64, Duration),
    ) -> PodTraffic {
        let (url, ca, token) = (cp.url(), cp.ca_file(), cp.admin_token());
        let target = pods_target(url, ca, token, namespace, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let plan = Plan {
            connections: 1,
            in_flight,
            rate: 0.0,
            duration: max_time,
            max_requests: max_pods,
        };
        let progress = Arc::new(Progress::default());
        let run = runtime.spawn(load::run_with(
            target,
            plan,
            Arc::new(pods),
            progress.clone(),
        ));
        PodTraffic { progress, run }
    }

    /// Pods created so far.
    pub fn created(&self) -> u64 {
        self.progress.ok()
    }

    /// Waits until `more` pods were created after this call, or until a creation failed (which
    /// [`PodTraffic::finish`] reports); fails the test after `limit`.
    pub fn wait_for_more(&self, more: u64, limit: Duration) {
        let target = self.created() + more;
        let what = format!("{target} pods created ({} so far)", self.created());
        wait_until(&what, limit, Duration::from_millis(20), || {
            self.created() >= target || self.progress.not_ok() > 0
        });
    }

    /// Stops, waits for the creations under way, and returns what the whole run did.
    pub fn finish(self, runtime: &Runtime) -> Report {
        self.progress.stop();
        let report = runtime
            .block_on(self.run)
            .unwrap_or_else(|e| panic!("the pod traffic task: {e}"))
            .unwrap_or_else(|e| panic!("pod traffic: {e}"));
        assert_eq!(report.lost_lanes, 0, "pod traffic lanes did not finish");
        report
    }
}
