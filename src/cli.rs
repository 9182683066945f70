//! The command line (DESIGN.md section 2). Parsing and wiring only: no policy here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "mesh-admission",
    version,
    about = "Admission webhook for an Istio + SPIRE service mesh"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTPS admission webhook server.
    Serve(ServeArgs),
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
    /// Print the Mutating- and ValidatingWebhookConfiguration for `kubectl apply -f -`.
    WebhookConfig(WebhookConfigArgs),
    /// Mutate and validate manifests offline, exactly as the server would (a CI gate).
    Review(ReviewArgs),
    /// Print the Istio and NetworkPolicy objects the inputs' mesh annotations stand for.
    Render(RenderArgs),
    /// Keep the objects `render` would print for the cluster applied, and prune the rest.
    Controller(ControllerArgs),
    /// What is wrong with what is already there: every finding over a whole set of objects.
    Audit(AuditArgs),
    /// Who may talk to whom, and why: the sum of NetworkPolicies, PeerAuthentications and
    /// AuthorizationPolicies over manifests or the live cluster.
    Graph(GraphArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct WebhookConfigArgs {
    /// PEM file of the CA that signed the serving certificate (the caBundle).
    #[arg(long, default_value = "certs/ca.crt")]
    pub ca_bundle: PathBuf,
    /// Name of the webhook's Service (also the configurations' name).
    #[arg(long, default_value = "mesh-admission")]
    pub service: String,
    /// Namespace of the webhook's Service; never sent to the webhook.
    #[arg(long, default_value = "mesh-system")]
    pub namespace: String,
    /// What the apiserver does when the webhook cannot be reached.
    #[arg(long, value_enum, default_value_t = FailurePolicy::Fail, ignore_case = true)]
    pub failure_policy: FailurePolicy,
    /// Configuration file whose excludedNamespaces and namespaceLabel the selectors use.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Register the webhooks by URL instead of by Service: `https://HOST[:PORT]`, the server's base
    /// address (no path: /mutate and /validate are added), for a server outside the cluster and for
    /// tests. Its certificate must be valid for HOST. --service then only names the configurations.
    #[arg(
        long,
        value_name = "https://HOST:PORT",
        value_parser = crate::webhook_config::parse_base_url
    )]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReviewOutput {
    /// The mutated objects as a YAML stream, one document per object.
    Object,
    /// One JSON line per object with its JSON Patch (none for a denied object).
    Patch,
    /// One JSON line per object with the AdmissionReview replies of /mutate and /validate.
    Review,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Input: YAML or JSON, multi-document, List kinds flattened. A workload (Deployment, StatefulSet,
DaemonSet, ReplicaSet, Job, CronJob) is validated as itself, and its pod template (a
ReplicationController's too) is shown as the Pods its controller will create. An AdmissionReview (a
captured request) is reviewed as its request's object, namespace and operation.

Exit status:
  0  every object admitted (warnings go to stderr as `Warning: Kind ns/name: ...`)
  1  some object denied (each on stderr as `denied: Kind ns/name: ...`)
  2  unreadable input (with line and column), a document that is not a Kubernetes object,
     an AdmissionReview without an object, or no objects at all (unless --allow-empty)")]
pub struct ReviewArgs {
    /// YAML or JSON manifests (multi-document, List kinds too); a directory means its *.yaml,
    /// *.yml and *.json files, sorted by name, not recursive; `-` reads standard input.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: String,
    /// Succeed on input with no objects (by default that is exit 2, like `kubectl apply`).
    #[arg(long)]
    pub allow_empty: bool,
    /// Namespace for objects that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// What to print.
    #[arg(short, long, value_enum, default_value_t = ReviewOutput::Object)]
    pub output: ReviewOutput,
    /// Configuration file (YAML); the embedded default is used without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderOutput {
    /// A YAML stream, one document per object.
    Yaml,
    /// One JSON `List` (kind: List, apiVersion: v1) holding every object.
    Json,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Input: YAML or JSON, multi-document, List kinds flattened, from every -f in turn. Read are Flux
HelmReleases (any helm.toolkit.fluxcd.io version), Services, Namespaces, Deployments, StatefulSets,
DaemonSets, ReplicaSets and Pods, and existing VirtualServices, NetworkPolicies, PeerAuthentications
and AuthorizationPolicies (ours, labelled app.kubernetes.io/managed-by: mesh-admission, are skipped,
so the output can be fed back in). Everything else is ignored. Objects without a namespace are in
`default`.

Output: the generated objects sorted by kind, namespace and name; the same input always prints the
same bytes, whatever its order.

Exit status:
  0  generated (warnings go to stderr as `Warning: Kind ns/name: ...`)
  1  some input refused: invalid mesh annotations or a conflict (each on stderr as
     `error: Kind ns/name: ...`); the objects not concerned are still printed
  2  unreadable input or configuration, or no objects at all (unless --allow-empty)")]
pub struct RenderArgs {
    /// YAML or JSON manifests (multi-document, List kinds too); a directory means its *.yaml,
    /// *.yml and *.json files, sorted by name, not recursive; `-` reads standard input. Repeat for
    /// several files; without it, standard input is read.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Configuration file (YAML) whose `mesh` section says what to generate; the embedded default
    /// is used without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = RenderOutput::Yaml)]
    pub output: RenderOutput,
    /// Succeed on input with no objects (by default that is exit 2, as for `review`).
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditOutput {
    /// The findings grouped by namespace, one line each.
    Table,
    /// A JSON array of `{rule, level, object, message}` (docs/audit.md).
    Json,
    /// The OpenReports Report and ClusterReport objects the controller writes, as a YAML stream.
    Reports,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Input: YAML or JSON, multi-document, List kinds flattened, from every -f in turn, read as one set
(as if stored together in one cluster). Objects without a namespace are in `default`. Namespaces
and pods are judged as admission stores them (labels the webhook adds included).

Findings: every section 4, 5 and 10 finding of the webhook for each object, with its message, and
the findings only the set shows: spire-registration-missing, spire-registration-ambiguous,
spire-id-format, principal-unknown, selector-matches-nothing, port-not-declared,
second-namespace-peer-authentication, route-destination-missing (docs/audit.md).

Exit status:
  0  no error found (warnings alone leave it 0)
  1  some error found
  2  unreadable input or configuration, no objects at all (unless --allow-empty), or with
     --cluster a cluster that cannot be read")]
pub struct AuditArgs {
    #[command(flatten)]
    pub input: MeshInput,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = AuditOutput::Table)]
    pub output: AuditOutput,
}

/// Where the commands that read a whole mesh (`audit`, `graph`) read it from.
#[derive(Debug, clap::Args)]
pub struct MeshInput {
    /// YAML or JSON manifests (multi-document, List kinds too); a directory means its *.yaml,
    /// *.yml and *.json files, sorted by name, not recursive; `-` reads standard input. Repeat for
    /// several files; without it, standard input is read.
    #[arg(short = 'f', long = "filename", conflicts_with = "cluster")]
    pub files: Vec<String>,
    /// Read the live cluster instead (kubeconfig as kubectl finds it: KUBECONFIG, ~/.kube/config,
    /// or the in-cluster service account), read-only: every kind of the model listed once. Kinds
    /// whose CRDs are not installed are left out (said on stderr).
    #[arg(long)]
    pub cluster: bool,
    /// Configuration file (YAML): the webhook's settings and `mesh` (trustDomain, gateways,
    /// rootNamespace, spireClassName…); the embedded default is used without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Succeed on input with no objects (by default that is exit 2, as for `render`).
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphOutput {
    /// One line per allowed or partial connection, then the denied ones grouped by layer.
    Table,
    /// Workloads and connections with their deciding objects (docs/graph.md has the schema).
    Json,
    /// Graphviz dot, namespaces as clusters.
    Dot,
    /// An SVG picture, laid out in-process.
    Svg,
    /// One self-contained HTML page: the picture, the table, a filter, explanations on click.
    Html,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Input: as for `render`, or the live cluster with --cluster (kinds whose CRDs are not installed are
named on stderr and left out); the objects `render` would generate from the inputs' mesh
annotations are added (replacing objects of the same name) unless --no-generated. Workloads are named
`namespace/name`, gateways of mesh.gateways `namespace/<gateway name>`, other clients `outside`.

Exit status:
  0  the graph (or the explanation) was printed; with --diff: no connection became more open
  1  with --diff: some connection became more open (denied -> partial or allowed, partial -> allowed)
  2  unreadable input or configuration, an object the model cannot read, the cluster not readable,
     an unknown workload for --explain, or no objects at all (unless --allow-empty)")]
pub struct GraphArgs {
    #[command(flatten)]
    pub input: MeshInput,
    /// Leave out the objects `render` would generate from the inputs.
    #[arg(long)]
    pub no_generated: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = GraphOutput::Table)]
    pub output: GraphOutput,
    /// Print every layer's decision for connections from SRC to DST (`namespace/name`), on PORT
    /// or on every declared port of DST.
    #[arg(long, num_args = 2, value_names = ["SRC", "DST[:PORT]"])]
    pub explain: Option<Vec<String>>,
    /// Compare with the graph of these inputs (the target branch): print the connections whose
    /// verdict changed; exit 1 when one became more open.
    #[arg(long, value_name = "BASE_FILE", num_args = 1.., action = clap::ArgAction::Append)]
    pub diff: Vec<String>,
    /// Only connections from this namespace (`NS`) or workload (`NS/NAME`, `outside`).
    #[arg(long, value_name = "NS[/NAME]")]
    pub from: Option<String>,
    /// Only connections to this namespace (`NS`) or workload (`NS/NAME`).
    #[arg(long, value_name = "NS[/NAME]")]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS admission port.
    #[arg(long, env = "MESH_ADMISSION_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP admin port (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "MESH_ADMISSION_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,
    /// Serving certificate (PEM, leaf first); reloaded when the file changes.
    #[arg(long, env = "MESH_ADMISSION_TLS_CERT", default_value = "certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "MESH_ADMISSION_TLS_KEY", default_value = "certs/tls.key")]
    pub tls_key: PathBuf,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, env = "MESH_ADMISSION_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Configuration file (YAML); the embedded default is used without it.
    #[arg(long, env = "MESH_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "MESH_ADMISSION_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `mesh_admission=debug`.
    #[arg(long, env = "MESH_ADMISSION_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Largest accepted request body in bytes; larger bodies get 413. Overrides `maxBodyBytes` of
    /// the configuration [default: 8388608, the embedded configuration's maxBodyBytes]
    #[arg(long, env = "MESH_ADMISSION_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// After the first SIGTERM, keep accepting connections this long so endpoints can update.
    #[arg(long, env = "MESH_ADMISSION_SHUTDOWN_GRACE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Headers and body of a request must arrive within this time of its first byte.
    #[arg(long, env = "MESH_ADMISSION_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// How often the certificate files are checked for new content.
    #[arg(long, env = "MESH_ADMISSION_CERT_RELOAD_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub cert_reload_interval: Duration,
    /// Generate development certificates (as `certs` with its defaults) in the directory of
    /// --tls-cert when the files are missing. Existing files are never overwritten.
    #[arg(long, env = "MESH_ADMISSION_DEV_CERTS")]
    pub dev_certs: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Talks to the cluster of KUBECONFIG (or the in-cluster service account). Watches Flux HelmReleases,
Services, Namespaces, Deployments, StatefulSets, DaemonSets, ReplicaSets, Pods and every
VirtualService, NetworkPolicy, PeerAuthentication and AuthorizationPolicy; applies what `render`
generates for them with server-side apply (field manager mesh-admission) and deletes the objects
labelled app.kubernetes.io/managed-by: mesh-admission that nothing wants any more. Only the holder
of the Lease mesh-admission-controller writes. Identity: POD_NAME, else hostname and process id.")]
pub struct ControllerArgs {
    /// Configuration file (YAML) whose `mesh` section says what to generate; the embedded default
    /// is used without it.
    #[arg(long, env = "MESH_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the plain-HTTP admin port (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "MESH_ADMISSION_ADMIN_LISTEN",
        default_value = "0.0.0.0:9091"
    )]
    pub admin_listen: SocketAddr,
    /// Namespace of the leader Lease; default: POD_NAMESPACE, else the service account's
    /// namespace, else `default`.
    #[arg(long, env = "MESH_ADMISSION_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Changes arriving within this time of each other are reconciled together.
    #[arg(long, env = "MESH_ADMISSION_DEBOUNCE", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// Reconcile this often even when nothing changed (it writes only what differs).
    #[arg(long, env = "MESH_ADMISSION_RESYNC", default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// How often the leader audits the cluster and writes the OpenReports Reports (only those
    /// that changed), when their CRDs are installed, besides after every reconcile.
    #[arg(long, env = "MESH_ADMISSION_REPORT_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub report_interval: Duration,
    /// The version of Flux's HelmRelease to watch (e.g. `v2`); default: the one the apiserver
    /// prefers, asked at start-up.
    #[arg(long, env = "MESH_ADMISSION_HELM_RELEASE_VERSION")]
    pub helm_release_version: Option<String>,
    /// Writes sent to the apiserver at once.
    #[arg(long, env = "MESH_ADMISSION_PARALLEL", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Log format.
    #[arg(long, env = "MESH_ADMISSION_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `mesh_admission=debug`.
    #[arg(long, env = "MESH_ADMISSION_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Name of the webhook's Service.
    #[arg(long, default_value = "mesh-admission")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "mesh-system")]
    pub namespace: String,
    /// Output directory (ca.crt, ca.key, tls.crt, tls.key). An existing CA there is reused.
    #[arg(long, default_value = "certs/")]
    pub out: PathBuf,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["mesh-admission", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(args.admin_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(args.tls_cert, PathBuf::from("certs/tls.crt"));
        assert_eq!(args.tls_key, PathBuf::from("certs/tls.key"));
        assert_eq!(args.shutdown_grace, Duration::from_secs(2));
        assert_eq!(args.request_timeout, Duration::from_secs(10));
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn serve_help_shows_the_body_limit_the_embedded_configuration_sets() {
        let mut serve = Cli::command();
        let help = serve
            .find_subcommand_mut("serve")
            .unwrap()
            .render_help()
            .to_string();
        let default = crate::config::Config::default().max_body_bytes;
        assert!(
            help.contains(&format!("[default: {default},")),
            "--max-body-bytes must show its default {default}:\n{help}"
        );
    }

    #[test]
    fn durations_are_read_by_humantime() {
        let timeout = |value: &str| {
            Cli::try_parse_from(["mesh-admission", "serve", "--request-timeout", value]).map(
                |cli| match cli.command {
                    Command::Serve(args) => args.request_timeout,
                    _ => unreachable!(),
                },
            )
        };
        assert_eq!(timeout("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(timeout("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(timeout("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(timeout("2h").unwrap(), Duration::from_secs(7200));
        assert!(timeout("soon").is_err());
        // A unit is required, as in Go's (and so Kubernetes') durations.
        assert!(timeout("3").is_err());
    }
}
