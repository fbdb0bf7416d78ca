//! The `skiff` command: `skiff up` runs a whole cluster in this process.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use skiff::config::Config;
use skiff::{bench, system};

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A Kubernetes-compatible orchestrator on actors"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

// Parsed once at start: the size of its largest variant does not matter.
#[derive(Subcommand)]
enum TokenAction {
    /// Make a token and print it.
    Create {
        /// How long it is good for (24h, 90m, ...; 0: for ever).
        #[arg(long, default_value = "24h")]
        ttl: String,
        #[arg(long, default_value = "")]
        description: String,
        /// What it may be used for: authentication, signing.
        #[arg(long, value_delimiter = ',', default_value = "authentication,signing")]
        usages: Vec<String>,
        /// Extra groups it authenticates in (system:bootstrappers:...).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "system:bootstrappers:kubeadm:default-node-token"
        )]
        groups: Vec<String>,
    },
    /// List the tokens.
    List,
    /// Delete tokens (by id or whole token): they are refused from then on.
    Delete { tokens: Vec<String> },
}

/// Where the objects live when not in the embedded RocksDB (k3s' flags of these names;
/// each overrides its `[store]` key).
#[derive(clap::Args, Default)]
struct DatastoreFlags {
    /// etcd members: `http://h1:2379,http://h2:2379` (or `https://`).
    #[arg(long)]
    datastore_endpoint: Option<String>,
    /// The keys' prefix in etcd (default /registry).
    #[arg(long)]
    datastore_prefix: Option<String>,
    /// The CA of the etcd members' serving certificates.
    #[arg(long)]
    datastore_cafile: Option<PathBuf>,
    /// A client certificate for etcd, with --datastore-keyfile.
    #[arg(long)]
    datastore_certfile: Option<PathBuf>,
    #[arg(long)]
    datastore_keyfile: Option<PathBuf>,
}

impl DatastoreFlags {
    fn apply(self, store: &mut skiff::config::StoreConfig) {
        if let Some(e) = self.datastore_endpoint {
            store.datastore_endpoint = e;
        }
        if let Some(p) = self.datastore_prefix {
            store.datastore_prefix = p;
        }
        if let Some(f) = self.datastore_cafile {
            store.datastore_cafile = Some(f);
        }
        if let Some(f) = self.datastore_certfile {
            store.datastore_certfile = Some(f);
        }
        if let Some(f) = self.datastore_keyfile {
            store.datastore_keyfile = Some(f);
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Bring a cluster up in this process and serve the Kubernetes API until interrupted.
    Up {
        /// Configuration file (default: config/skiff.toml if present, else built-in).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides cluster.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve plain HTTP with no authentication (every caller is an administrator),
        /// instead of HTTPS with the cluster's CA and tokens. For tests of the old path.
        #[arg(long)]
        insecure_http: bool,
        #[command(flatten)]
        datastore: DatastoreFlags,
    },
    /// Run the control plane only (store, API server, controllers, scheduler); nodes join
    /// it with `skiff node`.
    Server {
        /// Configuration file (default: config/skiff.toml if present, else built-in).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides cluster.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve plain HTTP with no authentication (every caller is an administrator).
        #[arg(long)]
        insecure_http: bool,
        #[command(flatten)]
        datastore: DatastoreFlags,
    },
    /// Run one node (kubelet and proxy) that joins the cluster at --server.
    Node {
        /// The API server, e.g. https://10.0.0.1:6443; several, comma-separated
        /// (https://a:6443,https://b:6443), when the cluster has several: the node moves
        /// on to the next when one cannot be reached.
        #[arg(long)]
        server: String,
        /// The cluster's join token; needed only until the node holds its own credential.
        #[arg(long, env = "SKIFF_JOIN_TOKEN")]
        token: Option<String>,
        /// The cluster CA certificate (the server's <data-dir>/pki/ca.crt).
        #[arg(long, required_unless_present = "ca_cert_hash")]
        ca_file: Option<PathBuf>,
        /// Instead of --ca-file: learn the CA from the server and trust it only if its
        /// public key matches this pin (`sha256:<hex>`, logged by the server at start).
        #[arg(long, conflicts_with = "ca_file")]
        ca_cert_hash: Option<String>,
        /// The node's name.
        #[arg(long)]
        name: String,
        /// Where the node keeps its credential.
        #[arg(long)]
        data_dir: PathBuf,
        /// `docker` or `sim` (a hollow node).
        #[arg(long, default_value = "docker")]
        runtime: String,
        /// The node's address (InternalIP; its proxy listens for node ports there).
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        /// Seconds between node status heartbeats.
        #[arg(long, default_value_t = 10)]
        heartbeat_seconds: u64,
        /// Labels as key=value, repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// The cluster's pod range (the server's `[network] cluster_cidr`): this node's
        /// pods run on a bridge holding its block of it, and the other nodes' blocks are
        /// routed through them. Empty: pods stay on the engine's default bridge.
        #[arg(long, default_value = "10.42.0.0/16")]
        cluster_cidr: String,
        /// How this host reaches the other nodes' pods: `host-gw` (routes through their
        /// addresses, on a shared link) or `vxlan` (an overlay over any IP network).
        #[arg(long, default_value = "host-gw")]
        network_backend: String,
        /// The cluster's service range (the server's `[gateway] service_cidr`): ClusterIPs
        /// and node ports are programmed into this host's kernel (nftables). Empty: node
        /// ports are served by the userspace proxy and ClusterIPs are not reachable here.
        #[arg(long, default_value = "10.96.0.0/16")]
        service_cidr: String,
        /// The port of the node's server (logs, exec, attach, port-forward, stats for the
        /// API server) on `--address`; 0: any free port.
        #[arg(long, default_value_t = 10250)]
        server_port: u16,
    },
    /// Create pods through the HTTP API with concurrent clients; print creates/s and latency.
    Bench {
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Target an existing cluster instead of starting one in a temporary directory.
        #[arg(long)]
        server: Option<String>,
    },
    /// Bootstrap tokens for joining nodes (as `kubeadm token`), through the API with the
    /// administrator's kubeconfig.
    Token {
        /// The administrator's kubeconfig (default: $KUBECONFIG, else the one the server
        /// writes in its data directory).
        #[arg(long, global = true)]
        kubeconfig: Option<PathBuf>,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Build the local images pods need, with no registry: the pause image (from skiff's
    /// own static pause program) and the test image from Debian's busybox-static.
    Images {
        /// The static busybox binary (Debian's `busybox-static` package).
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
    },
    /// Run the control plane with hollow nodes under a seeded random schedule of actions
    /// and faults, checking the cluster's invariants after every step. Exits non-zero,
    /// printing the seed, when one breaks.
    Sim {
        /// Seeds to run, from --seed on.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// The first seed (default: $SKIFF_SIM_SEED, else 1): a seed is its schedule.
        #[arg(long, env = "SKIFF_SIM_SEED", default_value_t = 1)]
        seed: u64,
        /// Steps per seed.
        #[arg(long, default_value_t = 40)]
        steps: usize,
        /// Hollow nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Run a known-bad cluster (a second replication controller, as two
        /// controller-managers without leader election): the invariants must catch it.
        #[arg(long)]
        rogue_replication: bool,
    },
    /// Start hollow (simulated) nodes and report the memory each costs.
    BenchHollow {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
    },
    /// Start a burst of pods on one Docker node and report startup latency (create to
    /// Running), next to the same containers started straight through the engine.
    BenchStartup {
        #[arg(long, default_value_t = 20)]
        pods: usize,
    },
    /// Time the kernel proxy's sync of many Services (EndpointSlices to one nftables
    /// transaction), in a table of the benchmark's own (root and nft needed).
    BenchRules {
        #[arg(long, default_value_t = 1000)]
        services: usize,
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
    },
    /// Register simulated nodes, create pods, and report pods scheduled per second and the
    /// scheduler's memory, for each node count.
    BenchScheduler {
        #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
        nodes: Vec<usize>,
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// Pods carry topology spread constraints, a preferred node affinity and a
        /// preferred pod anti-affinity (the workload plugins' paths).
        #[arg(long)]
        workload: bool,
    },
}

/// Info, but for the DNS library, which logs every query at info (two lines each; at
/// 100,000 queries a second the log would be most of the server's work).
const DEFAULT_LOG: &str =
    "info,hickory_server=warn,hickory_proto=warn,hickory_resolver=warn,hickory_net=warn";

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] skiff::config::ConfigError),
    #[error(transparent)]
    System(#[from] system::SystemError),
    #[error(transparent)]
    Bench(#[from] bench::BenchError),
    #[error(transparent)]
    BenchScheduler(#[from] skiff::bench_scheduler::SchedulerBenchError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("container runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    BenchHollow(#[from] skiff::bench_hollow::HollowBenchError),
    #[error(transparent)]
    BenchRules(#[from] skiff::bench_rules::RulesBenchError),
    #[error(transparent)]
    BenchStartup(#[from] skiff::bench_startup::StartupBenchError),
    #[error("cannot join the cluster")]
    Join(#[from] skiff::join::JoinError),
    #[error("{0}")]
    Node(String),
    #[error(transparent)]
    Token(#[from] skiff::token::TokenError),
    #[error(transparent)]
    Sim(#[from] skiff::sim::SimError),
    #[error("{0}")]
    SimFailed(String),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(file: Option<PathBuf>) -> Result<Config, CliError> {
    let default = PathBuf::from("config/skiff.toml");
    let file = file.or_else(|| default.exists().then_some(default));
    Ok(Config::load(file.as_deref())?)
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label {s:?} is not key=value"))
}

async fn up(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    insecure_http: bool,
    datastore: DatastoreFlags,
    control_plane_only: bool,
) -> Result<(), CliError> {
    let mut cfg = load_config(config)?;
    datastore.apply(&mut cfg.store);
    if let Some(dir) = data_dir {
        cfg.cluster.data_dir = dir;
    }
    if insecure_http {
        cfg.gateway.insecure_http = true;
    }
    if control_plane_only {
        cfg.nodes.clear();
    }
    let sys = system::start(&cfg).await?;
    if let Some(c) = &sys.credentials {
        // What a node on another machine needs to join: the token (a secret, so only its
        // file is named) and the CA's pin.
        let pin = c.ca.cert_hash().unwrap_or_default();
        tracing::info!(
            ca = %c.pki_dir.join(skiff_actors::pki::CA_CERT).display(),
            join_token = %c.pki_dir.join(skiff_actors::pki::JOIN_TOKEN).display(),
            ca_cert_hash = %pin,
            "TLS and authentication on"
        );
    }
    // The join token is shown once, when it is made (never logged); `skiff token create`
    // makes more. One write with the ready line: a reader may stop after that line.
    let join = match sys.credentials.as_ref().filter(|c| c.join_token_new) {
        Some(c) => format!(
            "\njoin nodes with: skiff node --server {} --token {} --ca-cert-hash {} --name <node>",
            sys.url(),
            c.join_token,
            c.ca.cert_hash().unwrap_or_default()
        ),
        None => String::new(),
    };
    // `println!` would write this in pieces (the join line's newline flushes the first
    // line alone) and panic if the reader had gone by the last piece: one write, and a
    // reader that went away is no reason to stop the server.
    let ready = format!(
        "skiff API ready at {} (kubeconfig: {}){join}\n",
        sys.url(),
        sys.kubeconfig.display()
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(ready.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "could not print the ready line");
        }
    }
    stop_signal().await?;
    tracing::info!("interrupted; shutting down");
    sys.shutdown().await;
    Ok(())
}

/// `skiff sim`: each seed in turn; the first that breaks an invariant ends the run.
async fn run_sim(
    first: u64,
    seeds: u64,
    steps: usize,
    nodes: usize,
    rogue_replication: bool,
) -> Result<(), CliError> {
    // The panics the schedule injects are expected: one log line each (the guard's), not
    // a backtrace; any other panic is reported as usual.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.starts_with("injected"));
        if !injected {
            default_hook(info);
        }
    }));
    let flags = if rogue_replication {
        " --rogue-replication"
    } else {
        ""
    };
    for seed in first..first.saturating_add(seeds) {
        let opts = skiff::sim::SimOptions {
            seed,
            steps,
            nodes,
            rogue_replication,
            ..skiff::sim::SimOptions::default()
        };
        let started = std::time::Instant::now();
        let report = skiff::sim::run(&opts).await?;
        if !report.passed() {
            for (i, step) in report.steps.iter().enumerate() {
                eprintln!("  step {i}: {step}");
            }
            return Err(CliError::SimFailed(format!(
                "seed {seed} broke the invariants (replay: SKIFF_SIM_SEED={seed} skiff sim --steps {steps} --nodes {nodes}{flags}):\n  {}",
                report.violations.join("\n  ")
            )));
        }
        println!(
            "seed {seed}: {} steps, invariants held, converged ({:.1} s)",
            report.steps.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `skiff node`: join the cluster (once, with the join token), then run the node's
/// kubelet and proxy against the API server until interrupted.
async fn run_node(opts: NodeOptions) -> Result<(), CliError> {
    use skiff_actors::client::{ApiClient, Credentials, HttpClient};
    use std::sync::Arc;
    let ca_pem = match (&opts.ca_file, &opts.ca_cert_hash) {
        (Some(file), _) => std::fs::read_to_string(file).map_err(|e| {
            CliError::Node(format!("cannot read the CA file {}: {e}", file.display()))
        })?,
        (None, Some(pin)) => skiff_actors::client::bootstrap::discover_ca(&opts.server, pin)
            .await
            .map_err(|e| CliError::Node(e.to_string()))?,
        (None, None) => {
            return Err(CliError::Node(
                "--ca-file or --ca-cert-hash is required".into(),
            ))
        }
    };
    let files = skiff::join::NodeCredentialFiles::in_dir(&opts.data_dir);
    let identity = skiff::join::node_identity(
        &opts.server,
        &ca_pem,
        &opts.node.name,
        opts.token.as_deref(),
        &files,
    )
    .await?;
    let creds = Credentials {
        ca_pem: Some(ca_pem.clone().into_bytes()),
        identity_pem: Some(identity.into_bytes()),
        token: None,
    };
    let http = Arc::new(
        HttpClient::with_credentials(&opts.server, &creds)
            .map_err(|e| CliError::Node(e.to_string()))?,
    );
    // The certificate is renewed before it runs out, for as long as the node runs.
    let cert_pem = std::fs::read_to_string(&files.cert)?;
    actix_rt::spawn(skiff::join::keep_renewing(
        http.clone(),
        opts.node.name.clone(),
        files,
        cert_pem,
    ));
    let client: Arc<dyn ApiClient> = http;
    let mut node = opts.node.clone();
    if node.data_dir.is_none() {
        node.data_dir = Some(opts.data_dir.join("kubelet"));
    }
    let agent = system::start_node_agent(&node, client, opts.network, Some(ca_pem)).await?;
    println!("skiff node {} joined {}", opts.node.name, opts.server);
    stop_signal().await?;
    tracing::info!("interrupted; stopping the node");
    agent.stop();
    Ok(())
}

struct NodeOptions {
    network: skiff::system::NodeAgentNetwork,
    server: String,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    ca_cert_hash: Option<String>,
    data_dir: PathBuf,
    node: skiff::config::NodeConfig,
}

async fn run_bench(
    pods: usize,
    concurrency: usize,
    server: Option<String>,
) -> Result<(), CliError> {
    match server {
        Some(url) => println!("{}", bench::run(&url, pods, concurrency).await?),
        None => {
            let dir = tempfile::tempdir()?;
            let mut cfg = Config::load(None)?;
            cfg.cluster.data_dir = dir.path().to_path_buf();
            cfg.cluster.manifests_dir = None;
            cfg.gateway.listen = "127.0.0.1:0".into();
            // The benchmark's clients measure the API and the store, not TLS handshakes.
            cfg.gateway.insecure_http = true;
            // Measure the API and the store alone: a scheduler with no nodes would add a
            // status write per pod to the load.
            cfg.scheduler.enabled = false;
            cfg.controllers.enabled = vec![];
            cfg.nodes = vec![];
            let sys = system::start(&cfg).await?;
            let report = bench::run(&sys.url(), pods, concurrency).await;
            sys.shutdown().await;
            println!("{}", report?);
        }
    }
    Ok(())
}

async fn run_token(kubeconfig: Option<PathBuf>, action: TokenAction) -> Result<(), CliError> {
    use skiff::token;
    let path = match kubeconfig.or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from)) {
        Some(p) => p,
        None => skiff::config::Config::load(None)?
            .cluster
            .data_dir
            .join("kubeconfig"),
    };
    let client = token::client_from_kubeconfig(&path)?;
    let now = chrono::Utc::now();
    match action {
        TokenAction::Create {
            ttl,
            description,
            usages,
            groups,
        } => {
            let ttl = token::parse_duration(&ttl)?;
            let t = token::create(&client, ttl, &description, &usages, &groups, now).await?;
            println!("{t}");
        }
        TokenAction::List => print!("{}", token::list(&client, now).await?),
        TokenAction::Delete { tokens } => {
            for t in tokens {
                let id = token::delete(&client, &t).await?;
                println!("bootstrap token \"{id}\" deleted");
            }
        }
    }
    Ok(())
}

async fn build_images(busybox: PathBuf) -> Result<(), CliError> {
    use skiff_actors::kubelet::runtime::{docker::DockerRuntime, images};
    let runtime = DockerRuntime::connect()
        .await
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    images::ensure_pause_image(runtime.docker())
        .await
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    println!("{} ready", images::PAUSE_IMAGE);
    // Always built (the engine's cache makes an unchanged one cheap), so an image left by
    // an older skiff gets what the tests now expect of it.
    images::build_busybox_image(runtime.docker(), &busybox)
        .await
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    println!("{} ready", images::BUSYBOX_IMAGE);
    Ok(())
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = actix_rt::System::new().block_on(async move {
        match cli.command {
            Command::Up {
                config,
                data_dir,
                insecure_http,
                datastore,
            } => up(config, data_dir, insecure_http, datastore, false).await,
            Command::Server {
                config,
                data_dir,
                insecure_http,
                datastore,
            } => up(config, data_dir, insecure_http, datastore, true).await,
            Command::Node {
                server,
                token,
                ca_file,
                ca_cert_hash,
                name,
                data_dir,
                runtime,
                address,
                heartbeat_seconds,
                labels,
                cluster_cidr,
                network_backend,
                service_cidr,
                server_port,
            } => {
                let backend: skiff_actors::podnet::Backend =
                    network_backend.parse().map_err(CliError::Node)?;
                let pod_range = match cluster_cidr.trim() {
                    "" => None,
                    c => Some((
                        c.parse::<ipnet::Ipv4Net>().map_err(|_| {
                            CliError::Node(format!("--cluster-cidr {c:?} is not an IPv4 a.b.c.d/n"))
                        })?,
                        backend,
                    )),
                };
                let node = skiff::config::NodeConfig {
                    name,
                    runtime,
                    address: Some(address),
                    heartbeat_seconds,
                    labels: labels.into_iter().collect(),
                    server_port,
                    ..Default::default()
                };
                run_node(NodeOptions {
                    network: skiff::system::NodeAgentNetwork {
                        pod_range,
                        service_cidr: Some(service_cidr.trim().to_string())
                            .filter(|c| !c.is_empty()),
                    },
                    server,
                    token,
                    ca_file,
                    ca_cert_hash,
                    data_dir,
                    node,
                })
                .await
            }
            Command::Bench {
                pods,
                concurrency,
                server,
            } => run_bench(pods, concurrency, server).await,
            Command::Images { busybox } => build_images(busybox).await,
            Command::Token { kubeconfig, action } => run_token(kubeconfig, action).await,
            Command::Sim {
                seeds,
                seed,
                steps,
                nodes,
                rogue_replication,
            } => run_sim(seed, seeds, steps, nodes, rogue_replication).await,
            Command::BenchHollow { nodes } => {
                print!("{}", skiff::bench_hollow::run(nodes).await?);
                Ok(())
            }
            Command::BenchRules {
                services,
                endpoints,
            } => {
                print!("{}", skiff::bench_rules::run(services, endpoints)?);
                Ok(())
            }
            Command::BenchStartup { pods } => {
                print!("{}", skiff::bench_startup::run(pods).await?);
                Ok(())
            }
            Command::BenchScheduler {
                nodes,
                pods,
                workload,
            } => {
                let shape = if workload {
                    skiff::bench_scheduler::Shape::Workload
                } else {
                    skiff::bench_scheduler::Shape::Plain
                };
                let report = skiff::bench_scheduler::run(&nodes, pods, shape).await?;
                print!("{report}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("skiff: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates an arena of its own (up to eight per core), and
/// each keeps the pages it once used: with a dozen mostly idle threads that is several
/// MiB of resident memory for nothing. Two arenas serve skiff's threads as fast.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Ctrl-C or SIGTERM (what `kill`, systemd and Docker send): both stop the process
/// cleanly, so what it put in the kernel goes with it.
async fn stop_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
