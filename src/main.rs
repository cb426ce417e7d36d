//! The `flowctl` command line: parses arguments, installs the signal policy once, calls the
//! library, maps the result to an exit code. No logic lives here.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use flowctl::duration;
use flowctl::engine::{Deadlines, Engine, EngineKind, DEFAULT_DOCKER_BIN};
use flowctl::gc::{self, GcOptions};
use flowctl::location::LocationSetting;
use flowctl::logs::use_color;
use flowctl::owner::Liveness;
use flowctl::plan::{self, Naming};
use flowctl::reaper;
use flowctl::run::teardown::{install_signal_policy, EXIT_INTERRUPTED};
use flowctl::run::{self, PullPolicy, RunOptions, RunOutcome};
use flowctl::standalone::{self, Expectation, StandaloneOptions};
use flowctl::status_client;
use flowctl::translate::{self, Target, TranslateOptions, DEFAULT_CONTROL_PLANE_IMAGE};

/// The file descriptors tables are printed on: `flowctl run`'s on stderr, `status`'s on stdout.
const STDOUT: i32 = 1;
const STDERR: i32 = 2;

/// Run data pipelines as real containers.
#[derive(Debug, Parser)]
#[command(name = "flowctl", version)]
struct Cli {
    /// Container CLI to drive (`docker`, `podman`, or a path).
    #[arg(long, global = true, env = "FLOWCTL_DOCKER_BIN", default_value = DEFAULT_DOCKER_BIN)]
    docker_bin: PathBuf,
    /// How long one container CLI call may take before flowctl stops it and reports the
    /// engine as not answering (`stop` also gets the containers' grace period).
    #[arg(long, global = true, env = "FLOWCTL_ENGINE_TIMEOUT", default_value = "60s",
          value_name = "DURATION", value_parser = positive_duration)]
    engine_timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a pipeline, supervise it, and remove everything on exit.
    Run(RunArgs),
    /// Check a pipeline file without touching the container engine.
    Validate {
        /// The pipeline file.
        pipeline: PathBuf,
        #[command(flatten)]
        naming: NamingArgs,
    },
    /// Write a commented starter pipeline (upstream's style: `NAME@VERSION` + `config:`).
    Init {
        /// Which starter pipeline (default: the first; an unknown name lists them).
        #[arg(long, value_name = "NAME", default_value = "datalake")]
        preset: String,
        /// Where to write it (never overwritten); `-` for stdout.
        #[arg(short, long, value_name = "FILE", default_value = "pipeline.yaml")]
        output: PathBuf,
    },
    /// Show the status of running pipelines (asks each run's control plane).
    Status {
        /// Only the run started with this --project.
        #[arg(long, env = "FLOWCTL_PROJECT", value_name = "NAME")]
        project: Option<String>,
        /// Every column in full, even when the table is wider than the terminal.
        #[arg(long)]
        wide: bool,
    },
    /// Write the pipeline as a Docker Compose file or Kubernetes manifests.
    Translate(TranslateArgs),
    /// Serve the control plane alone, for a pipeline run by Compose or Kubernetes.
    ControlPlane(ControlPlaneArgs),
    /// Remove containers and networks left by flowctl runs that are no longer alive.
    Gc {
        /// Also remove the resources of runs that are still alive.
        #[arg(long)]
        all: bool,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Internal: the reaper `flowctl run` starts (see src/reaper.rs).
    #[command(name = "__reap", hide = true)]
    Reap {
        #[arg(long)]
        run_id: String,
        /// What `flowctl run` detected the engine as (`docker` or `podman`).
        #[arg(long, value_parser = engine_kind, required_unless_present = "processes")]
        engine_kind: Option<EngineKind>,
        /// The run is on a Swarm: its services go too.
        #[arg(long)]
        swarm: bool,
        /// The run's components are processes (`driver: process`): stop those of its record.
        #[arg(long, conflicts_with_all = ["engine_kind", "swarm"])]
        processes: bool,
    },
}

#[derive(Debug, Args)]
struct TranslateArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// `compose` or `kubernetes`.
    #[arg(long, value_name = "TARGET")]
    to: Target,
    /// Output file; for kubernetes a folder (one file per component) unless it ends in .yaml.
    /// Without it, stdout (refused on a terminal: the output holds env values).
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    #[command(flatten)]
    naming: NamingArgs,
    /// Image that runs `flowctl control-plane` in the translated pipeline.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_CONTROL_PLANE_IMAGE)]
    control_plane_image: String,
    /// Leave the control plane out; components get ENABLE_FLOWCTL=false.
    #[arg(long)]
    no_control_plane: bool,
    /// Heartbeat interval given to components (FLOWCTL_HEARTBEAT_INTERVAL).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    heartbeat_interval: Duration,
}

#[derive(Debug, Args)]
struct ControlPlaneArgs {
    /// Address to serve gRPC on.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// Heartbeat interval the components use; silence for 3 intervals is unhealthy.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    heartbeat_interval: Duration,
    /// A pipeline component to expect, as ID=ROLE (source, processor or sink); repeatable.
    #[arg(long, value_name = "ID=ROLE")]
    expect: Vec<Expectation>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    #[command(flatten)]
    naming: NamingArgs,
    /// Run on the Docker Swarm the engine manages (DOCKER_HOST names a manager): one
    /// service per component on an overlay network, spread over the nodes.
    #[arg(long)]
    swarm: bool,
    /// Plain log prefixes and progress lines (also when NO_COLOR is set or not on a terminal).
    #[arg(long)]
    no_color: bool,
    /// Control plane port on the pipeline network's gateway (default 8080; for a
    /// `driver: process` file, on 127.0.0.1, default the port its FLOWCTL_ENDPOINT pins, else
    /// any free one); 0 picks a free port.
    #[arg(long)]
    control_plane_port: Option<u16>,
    /// Heartbeat interval given to components (FLOWCTL_HEARTBEAT_INTERVAL), e.g. 10s or 500ms.
    /// A component silent for 3 intervals is reported unhealthy.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    heartbeat_interval: Duration,
    /// Also print the status table every INTERVAL (e.g. 30s). It is always printed once all
    /// components are up, and whenever flowctl receives SIGUSR1.
    #[arg(long, value_name = "INTERVAL", value_parser = positive_duration)]
    status_interval: Option<Duration>,
    /// Do not verify the declared gRPC streams after start-up.
    #[arg(long)]
    no_verify: bool,
    /// Status tables with every column in full, even when wider than the terminal.
    #[arg(long)]
    wide: bool,
    /// Where flowctl runs relative to the engine: auto (detect), host, container[:ID] (in a
    /// container of the same engine, its socket mounted) or remote[:IP] (DOCKER_HOST tcp:// or
    /// ssh://; IP: where its published ports are reached).
    #[arg(
        long,
        env = "FLOWCTL_ENGINE_LOCATION",
        default_value = "auto",
        value_name = "WHERE"
    )]
    engine_location: LocationSetting,
    /// Image that runs `flowctl control-plane` when the control plane cannot run inside
    /// flowctl (a remote engine).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_CONTROL_PLANE_IMAGE)]
    control_plane_image: String,
    /// Write each component's whole output (every restart included) to DIR/<id>.log.
    #[arg(long, value_name = "DIR")]
    logs_dir: Option<PathBuf>,
    /// Write a JSON record of the run to FILE, whatever ends it.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// How long stream verification waits for each stream's first message.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = positive_duration)]
    verify_timeout: Duration,
    /// When to pull images before anything is created, as Compose: missing (those not present
    /// locally), always (every image), never (a missing image is an error).
    #[arg(
        long,
        env = "FLOWCTL_PULL",
        default_value = "missing",
        value_name = "POLICY"
    )]
    pull: PullPolicy,
    /// How long one image pull may take before flowctl stops it (pulls have their own deadline,
    /// longer than --engine-timeout's).
    #[arg(long, env = "FLOWCTL_PULL_TIMEOUT", default_value = "15m", value_name = "DURATION",
          value_parser = positive_duration)]
    pull_timeout: Duration,
}

#[derive(Debug, Args)]
struct NamingArgs {
    /// Prefix container names with NAME- and use the network NAME-bridge, so several copies
    /// of a pipeline can run at once.
    #[arg(long, env = "FLOWCTL_PROJECT", value_name = "NAME")]
    project: Option<String>,
    /// Use the pipeline's metadata.name as the project (when --project is not given).
    #[arg(long)]
    prefix: bool,
    /// Network name (default: flowctl-bridge, or NAME-bridge with a project).
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// Where component references (`type: NAME@VERSION`) find their images: HOST[/ORG]
    /// (default docker.io/withobsrvr), e.g. 127.0.0.1:5000/withobsrvr.
    #[arg(long, env = "FLOWCTL_REGISTRY", value_name = "HOST[/ORG]")]
    registry: Option<String>,
}

impl From<NamingArgs> for Naming {
    fn from(args: NamingArgs) -> Naming {
        Naming {
            project: args.project,
            network: args.network,
            project_from_name: args.prefix,
            registry: args.registry,
        }
    }
}

/// A duration such as `10s` or `500ms`, greater than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration::parse(text)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

fn engine_kind(text: &str) -> Result<EngineKind, String> {
    EngineKind::from_name(text).ok_or_else(|| format!("`{text}` is not docker or podman"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    flowctl::diagnostics::install();
    let deadlines = Deadlines {
        call: cli.engine_timeout,
        ..Deadlines::default()
    };
    let result = match cli.command {
        Command::Run(args) => install_signal_policy().and_then(|signals| {
            let options = RunOptions {
                pipeline: args.pipeline,
                naming: args.naming.into(),
                docker_bin: cli.docker_bin,
                deadlines: Deadlines {
                    pull: args.pull_timeout,
                    ..deadlines
                },
                location: args.engine_location,
                control_plane_image: args.control_plane_image,
                logs_dir: args.logs_dir,
                summary: args.summary,
                color: use_color(args.no_color, std::io::stderr().is_terminal()),
                control_plane_port: args.control_plane_port,
                heartbeat_interval: args.heartbeat_interval,
                status_interval: args.status_interval,
                table_width: flowctl::status_client::table_width(args.wide, STDERR),
                verify: !args.no_verify,
                verify_timeout: args.verify_timeout,
                pull: args.pull,
                progress_in_place: std::io::stderr().is_terminal()
                    && std::env::var("TERM").map_or(true, |term| term != "dumb"),
                swarm: args.swarm,
            };
            run::run(&options, signals).map(|outcome| match outcome {
                RunOutcome::Completed => ExitCode::SUCCESS,
                RunOutcome::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
            })
        }),
        Command::Validate { pipeline, naming } => {
            plan::load(&pipeline, &naming.into()).map(|plan| {
                for note in &plan.notes {
                    eprintln!("note: {note}");
                }
                let order: Vec<&str> = plan.components.iter().map(|c| c.id.as_str()).collect();
                println!(
                    "{}: pipeline {} is valid: {} component(s), start order {}",
                    pipeline.display(),
                    plan.pipeline,
                    plan.components.len(),
                    order.join(" → ")
                );
                ExitCode::SUCCESS
            })
        }
        Command::Init { preset, output } => flowctl::init::preset(&preset)
            .and_then(|preset| flowctl::init::write(preset, &output))
            .map(|()| ExitCode::SUCCESS),
        Command::Status { project, wide } => {
            let width = flowctl::status_client::table_width(wide, STDOUT);
            // Process runs (`driver: process`) have no project and need no engine.
            let processes = match project {
                None => status_client::show_processes(width),
                Some(_) => Ok(String::new()),
            };
            processes.and_then(|processes| {
                match Engine::detect(&cli.docker_bin, deadlines) {
                    Ok(engine) => {
                        let containers = status_client::show(&engine, project.as_deref(), width)?;
                        if processes.is_empty() {
                            print!("{containers}");
                        } else if containers.starts_with("no flowctl pipeline") {
                            print!("{processes}");
                        } else {
                            print!("{processes}\n{containers}");
                        }
                    }
                    Err(_) if !processes.is_empty() => print!("{processes}"),
                    Err(e) => return Err(e.into()),
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Translate(args) => translate::translate_file(
            &args.pipeline,
            &args.naming.into(),
            args.to,
            &TranslateOptions {
                control_plane_image: (!args.no_control_plane).then_some(args.control_plane_image),
                heartbeat_interval: args.heartbeat_interval,
                ..TranslateOptions::default()
            },
            args.output.as_deref(),
            std::io::stdout().is_terminal(),
        )
        .map(|written| {
            for path in written {
                eprintln!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }),
        Command::ControlPlane(args) => serve_control_plane(StandaloneOptions {
            listen: args.listen,
            heartbeat_interval: args.heartbeat_interval,
            expected: args.expect,
        }),
        Command::Gc { all, dry_run } => {
            let options = GcOptions {
                all,
                dry_run,
                job_orphans_only: false,
            };
            gc_processes(options).and_then(|processes_ok| {
                match Engine::detect(&cli.docker_bin, deadlines) {
                    Ok(engine) => gc(&engine, options).map(|code| match processes_ok {
                        true => code,
                        false => ExitCode::FAILURE,
                    }),
                    // Process runs need no engine: without one, they are all there is.
                    Err(e) => {
                        eprintln!(
                            "warning: no container engine ({e}): only process runs were checked"
                        );
                        Ok(if processes_ok {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        })
                    }
                }
            })
        }
        Command::Reap {
            run_id,
            engine_kind,
            swarm,
            processes: _,
        } => {
            let engine = engine_kind.map(|kind| Engine::known(cli.docker_bin, kind, deadlines));
            let target = match &engine {
                Some(engine) => reaper::Target::Engine { engine, swarm },
                None => reaper::Target::Processes,
            };
            Ok(match reaper::watch(&run_id, target) {
                true => ExitCode::SUCCESS,
                false => ExitCode::FAILURE,
            })
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `flowctl control-plane`: serves until SIGINT or SIGTERM, printing registrations and health
/// changes to stdout.
fn serve_control_plane(options: StandaloneOptions) -> anyhow::Result<ExitCode> {
    let signals = install_signal_policy()?;
    standalone::serve(&options, signals.interrupted(), |line| println!("{line}"))?;
    Ok(ExitCode::SUCCESS)
}

/// `flowctl gc` of process runs' records; `false` if something would not stop.
fn gc_processes(options: GcOptions) -> anyhow::Result<bool> {
    let report = gc::gc_processes(options)?;
    let verb = if options.dry_run {
        "would stop"
    } else {
        "stopped"
    };
    for (record, components) in &report.removed {
        println!(
            "{verb} process run {} (pipeline {}): processes of [{}]",
            record.run_id,
            record.pipeline,
            components.join(", ")
        );
    }
    for record in &report.kept {
        println!(
            "kept process run {} (pipeline {}): its flowctl (pid {}) is running",
            record.run_id, record.pipeline, record.owner_pid
        );
    }
    for error in &report.errors {
        eprintln!("error: {error}");
    }
    Ok(report.errors.is_empty())
}

fn gc(engine: &Engine, options: GcOptions) -> anyhow::Result<ExitCode> {
    let report = gc::gc(engine, options)?;
    let verb = if options.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for run in &report.removed {
        let services = if run.services.is_empty() {
            String::new()
        } else {
            format!(", services [{}]", run.services.join(", "))
        };
        println!(
            "{verb} run {} (pipeline {}): containers [{}], networks [{}]{services}",
            run.run_id,
            run.pipeline,
            run.containers.join(", "),
            run.networks.join(", ")
        );
    }
    for run in &report.kept {
        let why = match (&run.liveness, &run.owner) {
            (Liveness::Alive, Some(owner)) => format!("its flowctl (pid {}) is running", owner.pid),
            (Liveness::Unknown(why), _) => format!("owner unknown: {why}; --all removes it"),
            _ => "owner alive".to_string(),
        };
        println!("kept run {} (pipeline {}): {why}", run.run_id, run.pipeline);
    }
    if report.removed.is_empty() && report.kept.is_empty() {
        println!("nothing to remove");
    }
    for error in &report.errors {
        eprintln!("error: {error}");
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
