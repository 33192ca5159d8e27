//! The `host` binary: parses the command line, sets up logging, calls the library, and maps
//! the outcome to an exit code. Every mode is one call into `augur::commands` or
//! `augur::offline`; nothing here decides anything.

use augur::commands::{self, ClusterPolicies, InvalidInput, LeaseOptions, RunOptions, StressArgs, invalid};
use augur::config::Baseline;
use augur::offline::{anomaly, backtest, plot, replay};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Augur: forecasts Kubernetes workloads and remediates ahead of trouble.
#[derive(Debug, Parser)]
#[command(name = "host", version, about, after_help = "Exit status: 0 done; 1 failed (the message says why); 2 usage error or invalid input (a policy with problems, a flag out of range).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the host's own log lines (stderr) are written: `text` for a person (coloured only
    /// on a terminal), `json` for a log pipeline (one object a line). The level is set by
    /// RUST_LOG (default `warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where a policy's plugins and models given by name (`plugin: risk-cpu`, `model: lstm`) are
/// looked up: these folders first, in order, then the shipped sets beside the binary.
#[derive(Debug, clap::Args)]
struct SearchPath {
    /// A folder of plugins (`NAME.wasm`) searched before the shipped ones; repeat for several.
    #[arg(long = "plugin-dir", env = "AUGUR_PLUGIN_DIR", value_delimiter = ':')]
    plugin_dirs: Vec<PathBuf>,
    /// A folder of models (`NAME/model.onnx` with its card) searched before the shipped ones;
    /// repeat for several.
    #[arg(long = "model-dir", env = "AUGUR_MODEL_DIR", value_delimiter = ':')]
    model_dirs: Vec<PathBuf>,
}

impl SearchPath {
    fn catalog(self) -> augur::config::Catalog {
        augur::config::Catalog::with(self.plugin_dirs, self.model_dirs)
    }
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Report the world a component implements, its imports and exports, and whether it loads.
    Check {
        /// The plugin component, e.g. `plugins/dist/scale.wasm`.
        file: PathBuf,
    },
    /// Scaffold a plugin crate that builds on its own, outside this repository (its own
    /// Cargo.toml, this host's WIT under wit/, the SDK under sdk/, a sample input).
    New {
        /// The plugin's name: the crate's, the .wasm's and the one a policy gives.
        name: String,
        /// The world it implements.
        #[arg(long, value_enum)]
        world: WorldArg,
        /// The folder to create (it must not exist or be empty; default: ./NAME).
        dir: Option<PathBuf>,
    },
    /// Call a plugin once on a sample input (JSON: settings and a forecast, or settings, a
    /// risk, a trigger and a workload) and print what it returns, as JSON.
    Run {
        /// The plugin component.
        file: PathBuf,
        /// The sample input, e.g. samples/forecast.json of a crate made by `host plugin new`.
        #[arg(long)]
        input: PathBuf,
    },
}

/// `--world` of `host plugin new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorldArg {
    Risk,
    Remediation,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control loop: collect, forecast, assess, plan, guard, execute, audit.
    Run {
        /// A policy file, or a folder of them; repeat for several.
        #[arg(long = "policy", required_unless_present = "cluster_policies")]
        policies: Vec<PathBuf>,
        /// On a cluster: also run the AugurPolicy resources (`host crd` prints their CRD),
        /// hot-swapped as they change, their status kept up to date.
        #[arg(long, conflicts_with = "simulate")]
        cluster_policies: bool,
        /// With --cluster-policies: only this namespace's AugurPolicies (default: every namespace).
        #[arg(long, requires = "cluster_policies")]
        policy_namespace: Option<String>,
        /// With --cluster-policies: the folder an AugurPolicy's relative paths (plugins,
        /// models) resolve against, as a file's resolve against its folder.
        #[arg(long, default_value = "policies")]
        policy_base: PathBuf,
        /// With --cluster-policies: the folder of the audit logs of AugurPolicies that name none.
        #[arg(long, default_value = "var")]
        audit_dir: PathBuf,
        /// Run on the built-in simulated cluster (no Kubernetes, no Prometheus).
        #[arg(long)]
        simulate: bool,
        /// Simulated seconds per real second (with --simulate).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Stop after this much (simulated) time, e.g. `6h`, and exit 0.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        run_for: Option<Duration>,
        /// Write the audit log here instead of the policies' own paths.
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Validate and record every action, change nothing, whatever the policies say.
        #[arg(long)]
        dry_run: bool,
        /// A CSV file whose column drives the simulated load (default: the built-in NASA slice).
        #[arg(long, requires = "trace_column")]
        trace: Option<PathBuf>,
        /// The column of --trace to use.
        #[arg(long)]
        trace_column: Option<String>,
        /// Print only the final summary.
        #[arg(long, short)]
        quiet: bool,
        /// On a cluster: act without competing for the leader Lease (run one replica only).
        #[arg(long, conflicts_with = "simulate")]
        no_leader_election: bool,
        /// The namespace of the leader Lease `augur` (default: the pod's own, else `augur`).
        #[arg(long)]
        lease_namespace: Option<String>,
        /// This replica's name in the Lease and in Events (default: $POD_NAME, else the host name).
        #[arg(long)]
        identity: Option<String>,
        /// The kubeconfig (default: $KUBECONFIG, ~/.kube/config, or the pod's service account).
        #[arg(long, conflicts_with = "simulate")]
        kubeconfig: Option<PathBuf>,
        /// Serve Augur's own /metrics (OpenMetrics), /healthz and /readyz here, e.g. `0.0.0.0:9464`.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
        /// How many series /metrics carries per policy: `summary` (the budget: each forecast's
        /// peak per band; counters from their first increment) or `full` (also every forecast
        /// step, the skill gate's ratios, and every counter at 0 from the start).
        #[arg(long, default_value = "summary", value_parser = ["summary", "full"], requires = "metrics_addr")]
        metrics_detail: String,
        /// With --simulate: serve the simulated cluster's metrics (cAdvisor and kube-state-metrics
        /// style) at http://ADDR/metrics, for a real Prometheus to scrape.
        #[arg(long, requires = "simulate")]
        expose_sim: Option<std::net::SocketAddr>,
        /// With --simulate: read the metrics through the policies' Prometheus (which scrapes
        /// --expose-sim) instead of from the simulator directly.
        #[arg(long, requires = "simulate")]
        sim_via_prometheus: bool,
        /// Do not reload policy and plugin files when they change (SIGHUP then does nothing).
        #[arg(long)]
        no_watch: bool,
        #[command(flatten)]
        search: SearchPath,
    },
    /// Print the AugurPolicy CRD (generated from the policy's types) as YAML, for
    /// `kubectl apply -f -`.
    Crd,
    /// Load a pod (the prototype's stress_pod.py): exec a script in the first running pod that
    /// matches, which holds memory in /dev/shm and busy-loops a CPU.
    Stress {
        #[arg(long, short, default_value = "default")]
        namespace: String,
        /// Label selector of the pod to stress.
        #[arg(long, short = 'l', default_value = "app=nginx")]
        selector: String,
        /// How long to busy-loop, e.g. `300s` or `5m`.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        seconds: Duration,
        /// Memory to hold in /dev/shm, as a Kubernetes quantity (`256Mi`, `1Gi`).
        #[arg(long, default_value = "256Mi")]
        memory: String,
        /// The container to exec in (default: the pod's first).
        #[arg(long, short)]
        container: Option<String>,
        /// The kubeconfig (default: $KUBECONFIG or ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Check policy files, their plugins and their forecasters without touching a cluster.
    Validate {
        #[arg(long = "policy", required = true)]
        policies: Vec<PathBuf>,
        #[command(flatten)]
        search: SearchPath,
    },
    /// Rolling-origin evaluation of a model or baseline on a CSV series: per horizon step
    /// MAE, RMSE, MASE, pinball loss and p10-p90 coverage, over the held-out tail.
    Backtest {
        /// The CSV file (`,` or `;` separated, with a header line).
        #[arg(long)]
        series: PathBuf,
        /// The column to forecast.
        #[arg(long)]
        column: String,
        /// An ONNX model (its card model.yaml beside it). With neither this nor --baseline:
        /// the shipped default model (models/default.yaml).
        #[arg(long, conflicts_with = "baseline")]
        model: Option<PathBuf>,
        /// A statistical forecaster: last, seasonal-naive, holt-winters, linear (or holt-damped).
        #[arg(long)]
        baseline: Option<String>,
        /// The series' step, when it has no time column (e.g. `1m`, `5m`).
        #[arg(long, value_parser = humantime::parse_duration)]
        step: Option<Duration>,
        /// A column that is non-zero where the point is not real data (e.g. `server_outage`).
        #[arg(long)]
        mask: Option<String>,
        /// Share of the series held out: forecast origins lie in this tail.
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        /// Points ahead (default: the model's horizon, else 15).
        #[arg(long)]
        horizon: Option<usize>,
        /// Points of history for the non-seasonal forecasters (default: the model's window, else 60).
        #[arg(long)]
        window: Option<usize>,
        /// The season (default `1d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        season: Option<Duration>,
        /// Score every N-th origin.
        #[arg(long, default_value_t = 1)]
        every: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Score the model (or --baseline) and every simple baseline (last value, seasonal
        /// naive, Holt-Winters) on the same origins, side by side per step, with the ratio to
        /// the best baseline.
        #[arg(long)]
        compare: bool,
        /// Score the skill gate over the model (or --baseline) and the simple baselines, as
        /// `host run` serves it: at each origin the forecaster with the best recent skill.
        #[arg(long, conflicts_with = "compare")]
        gate: bool,
        /// Score the forecaster's own p10-p90 interval instead of the one calibrated online
        /// per step (as `host run` issues it).
        #[arg(long)]
        uncalibrated: bool,
    },
    /// Replay a trace on the simulator as fast as it runs: the policy against a model of the
    /// Kubernetes HPA v2 and an oracle that knows the future (the lower bound). Reports
    /// overload minutes, replica-minutes, peak replicas and actions for each.
    Replay {
        #[arg(long)]
        policy: PathBuf,
        /// A CSV file (`,` or `;` separated, with a header line).
        #[arg(long)]
        trace: PathBuf,
        /// The column that drives the CPU demand (a request rate or a CPU usage).
        #[arg(long)]
        column: String,
        /// The trace's step, when it has no time column (e.g. `5m`).
        #[arg(long, value_parser = humantime::parse_duration)]
        step: Option<Duration>,
        /// The trace is scaled so that its peak needs this share of the guard's max_replicas.
        #[arg(long, default_value_t = 0.8)]
        peak: f64,
        /// CPU one pod serves, cores.
        #[arg(long, default_value_t = 0.5)]
        capacity_per_pod: f64,
        /// The HPA's CPU averageUtilization target, as a fraction.
        #[arg(long, default_value_t = 0.8)]
        hpa_target: f64,
        /// Time from a pod's creation to ready (every controller; Augur measures it from the pods).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        startup: Duration,
        /// How often metrics-server scrapes the pods (its `--metric-resolution`): the HPA and
        /// the EHPA read the mean of the last such window, as on a cluster. `0s`: no lag.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        metrics_resolution: Duration,
        /// Print one JSON object `{augur, hpa, ehpa, oracle}` instead of the table.
        #[arg(long)]
        json: bool,
        /// Draw demand, ready capacity and replicas over time for the four into this PNG: the
        /// whole trace, and a window (`--from`/`--to`, or the day around the worst overload).
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Write every controller's minute-by-minute demand, ready capacity and replicas to
        /// this CSV (`minute,controller,demand,capacity,replicas`), to study where each one
        /// overloads or over-provisions.
        #[arg(long)]
        timeline: Option<PathBuf>,
        /// Start of the plot's window, hours into the replay.
        #[arg(long)]
        from: Option<f64>,
        /// End of the plot's window, hours into the replay.
        #[arg(long)]
        to: Option<f64>,
    },
    /// The offline anomaly pass: flag anomalies by MAD on the policy forecaster's residuals
    /// (and by plain MAD, as the prototype did), show what the policy's plan would have done
    /// for each (dry-run), and draw the series, the forecast and the anomalies.
    Anomalies {
        /// A CSV file (`,` or `;` separated, with a header line).
        #[arg(long)]
        series: PathBuf,
        #[arg(long)]
        column: String,
        /// The policy whose forecaster and plan are used.
        #[arg(long, default_value = "policies/nginx.yaml")]
        policy: PathBuf,
        /// The policy metric the series stands for (default: the first risk rule's).
        #[arg(long)]
        metric: Option<String>,
        /// The series' step, when it has no time column (e.g. `5m`).
        #[arg(long, value_parser = humantime::parse_duration)]
        step: Option<Duration>,
        #[command(flatten)]
        detector: DetectorArgs,
        /// Write the chart here.
        #[arg(long, default_value = "anomalies.png")]
        plot: PathBuf,
        /// Print one JSON object instead of the text.
        #[arg(long)]
        json: bool,
    },
    /// Score the anomaly detectors on a labelled NAB corpus (standard, reward-low-FP and
    /// reward-low-FN profiles), as a Markdown table.
    Nab {
        /// The NAB folder holding data/ and labels/combined_windows.json.
        #[arg(long)]
        corpus: PathBuf,
        /// The policy whose forecaster computes the residuals.
        #[arg(long, default_value = "policies/nginx.yaml")]
        policy: PathBuf,
        #[command(flatten)]
        detector: DetectorArgs,
    },
}

/// The anomaly detectors' knobs, shared by `anomalies` and `nab`.
#[derive(Debug, clap::Args)]
struct DetectorArgs {
    /// Flag points whose robust z-score is at least this.
    #[arg(long, default_value_t = anomaly::DEFAULT_THRESHOLD)]
    threshold: f64,
    /// Past points each score is computed against.
    #[arg(long, default_value_t = anomaly::DEFAULT_WINDOW)]
    window: usize,
    /// Points after a flag that are not flagged again unless the score escalates.
    #[arg(long, default_value_t = anomaly::DEFAULT_QUIET)]
    quiet: usize,
}

/// glibc's malloc, sized for a long-running host on a small node: two arenas (one per core it
/// is meant to use; by default up to eight per core, each keeping what its threads freed) and
/// freed memory above 1 MiB at the heap's top given back (by default the threshold grows with
/// the largest block ever freed). Measured with 1,000 workloads for 2 h: peak RSS 290 -> 177 MiB,
/// CPU within the noise. Set before any thread starts; `MALLOC_*` variables still override.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str, param: libc::c_int, value: libc::c_int| {
            if std::env::var_os(name).is_none() {
                // SAFETY: mallopt only changes the allocator's parameters; no thread runs yet.
                unsafe { libc::mallopt(param, value) };
            }
        };
        set("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2);
        set("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.is::<InvalidInput>() { 2 } else { 1 })
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Plugin { command: PluginCommand::Check { file } } => {
            print!("{}", commands::plugin_check(&file)?);
            Ok(())
        }
        Command::Plugin { command: PluginCommand::New { name, world, dir } } => {
            let world = match world {
                WorldArg::Risk => augur::plugins::World::Risk,
                WorldArg::Remediation => augur::plugins::World::Remediation,
            };
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let made = commands::plugin_new(&name, world, &dir)?;
            println!("created {} ({} files): a plugin of the world {}", made.dir.display(), made.files.len(), world.wit_name());
            println!("  cd {} && cargo build --target wasm32-wasip2 --release", made.dir.display());
            println!("  host plugin run {} --input {}", made.component.display(), made.sample.display());
            Ok(())
        }
        Command::Plugin { command: PluginCommand::Run { file, input } } => {
            println!("{}", serde_json::to_string_pretty(&commands::plugin_run(&file, &input)?)?);
            Ok(())
        }
        Command::Validate { policies, search } => {
            for line in commands::validate(&commands::expand_policy_args(&policies)?, &search.catalog())? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Backtest { series, column, model, baseline, step, mask, holdout, horizon, window, season, every, json, compare, uncalibrated, gate } => {
            let subject = match (model, baseline) {
                (Some(model), _) => backtest::Subject::Model(model),
                (None, Some(name)) => backtest::Subject::Baseline(
                    Baseline::parse(&name).ok_or_else(|| invalid(format!("--baseline `{name}` is not a built-in forecaster; fix: use one of last, seasonal-naive, holt-winters, linear, holt-damped")))?,
                ),
                (None, None) => backtest::Subject::Model(backtest::default_model()?),
            };
            let step = step.map(|s| s.as_secs() as u32);
            let options = backtest::Options { series, column, subject, step, mask, holdout, horizon, window, season, every, uncalibrated, gate };
            if compare {
                let comparison = backtest::compare(&options)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&comparison)?);
                } else {
                    print!("{}", comparison.table());
                }
                return Ok(());
            }
            let report = backtest::run(&options)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Replay { policy, trace, column, step, peak, capacity_per_pod, hpa_target, startup, metrics_resolution, json, plot, timeline, from, to } => {
            let options = replay::Options { step, peak, capacity_per_pod, hpa_target, startup, metrics_resolution, ..replay::Options::new(policy, trace, column) };
            let window = plot::Window::new(from, to)?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let report = runtime.block_on(replay::run(&options))?;
            if let Some(path) = &plot {
                plot::replay(path, &report, window)?;
            }
            if let Some(path) = &timeline {
                std::fs::write(path, report.timeline_csv()).with_context(|| format!("cannot write {}", path.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
                if let Some(path) = &plot {
                    println!("\nplot: {}", path.display());
                }
            }
            Ok(())
        }
        Command::Anomalies { series, column, policy, metric, step, detector: DetectorArgs { threshold, window, quiet }, plot, json } => {
            let options = anomaly::Options { metric, step, threshold, window, quiet, plot: Some(plot.clone()), ..anomaly::Options::new(series, column, policy) };
            let report = anomaly::run(&options)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
                println!("\nplot: {}", plot.display());
            }
            Ok(())
        }
        Command::Nab { corpus, policy, detector: DetectorArgs { threshold, window, quiet } } => {
            print!("{}", anomaly::nab_table(&corpus, &policy, window, threshold, quiet)?);
            Ok(())
        }
        Command::Stress { namespace, selector, seconds, memory, container, kubeconfig } => {
            let args = StressArgs { namespace, selector, duration: seconds, memory, container, kubeconfig };
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            println!("{}", runtime.block_on(commands::stress(args))?);
            Ok(())
        }
        Command::Crd => {
            print!("{}", augur::cluster::policies::crd_yaml());
            Ok(())
        }
        Command::Run { policies, cluster_policies, policy_namespace, policy_base, audit_dir, simulate, speed, run_for, audit_log, dry_run, trace, trace_column, quiet, no_leader_election, lease_namespace, identity, kubeconfig, metrics_addr, metrics_detail, expose_sim, sim_via_prometheus, no_watch, search } => {
            let leader_election = (!simulate && !no_leader_election).then(|| LeaseOptions::in_namespace(lease_namespace));
            let placement = augur::cluster::Placement { base: std::path::absolute(&policy_base)?, audit_dir: std::path::absolute(&audit_dir)? };
            let options = RunOptions {
                cluster_policies: cluster_policies.then(|| ClusterPolicies { namespace: policy_namespace, placement }),
                watch: (!no_watch).then(|| policies.clone()),
                policies: commands::expand_policy_args(&policies)?,
                simulate,
                speed,
                run_for,
                audit_log,
                dry_run,
                trace: trace.zip(trace_column),
                echo: !quiet,
                leader_election,
                identity,
                kubeconfig,
                metrics_addr,
                metrics_detail: if metrics_detail == "full" { augur::telemetry::Detail::Full } else { augur::telemetry::Detail::Summary },
                expose_sim,
                sim_via_prometheus,
                catalog: search.catalog(),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(commands::run(options)).map(|_| ())
        }
    }
}
