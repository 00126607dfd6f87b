//! `civitas`: one binary that runs a whole digital-government platform.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use civitas::demo::Seeded;
use civitas_core::config::{Config, Layers, LogFormat, Resolved, Source};
use clap::{Args, Parser, Subcommand};

type Entry = (&'static str, String, Source);

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "civitas",
    version,
    about = "Civitas: a digital-government platform in one program."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes; each overrides the configuration file and `CIVITAS_*`.
#[derive(Args)]
struct Global {
    /// Configuration file (TOML). Default: ./civitas.toml when it exists, or $CIVITAS_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data folder for the SQLite database and files.
    #[arg(long = "data", global = true, value_name = "DIR")]
    data: Option<String>,
    /// Database URL: postgres://user:password@host/db, or sqlite:PATH. Default: SQLite in the data folder.
    #[arg(long, global = true, value_name = "URL")]
    database: Option<String>,
    /// Address to listen on, such as 127.0.0.1:8080.
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter, such as info or civitas=debug.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Build (once) and serve a demo country; prints the address to open.
    Demo(DemoArgs),
    /// Serve Civitas on the configured database.
    Serve(ServeArgs),
    /// Build the demo country in the database without serving.
    Seed(DemoArgs),
    /// Apply pending database migrations and report what was applied.
    Migrate,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a benchmark and print its figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Verify and audit a ledger, offline or from a running instance.
    #[command(subcommand)]
    Ledger(civitas::ledger_cli::LedgerCommand),
    /// Manage the OpenID Connect provider: clients and signing keys.
    #[command(subcommand)]
    Oidc(civitas::oidc_cli::OidcCommand),
    /// The exchange's directory and access rights.
    #[command(subcommand)]
    Exchange(civitas::exchange_cli::ExchangeCommand),
    /// Notify's sending services, API keys, guest lists and templates.
    #[command(subcommand)]
    Notify(civitas::notify_cli::NotifyCommand),
}

#[derive(Args)]
struct DemoArgs {
    /// How many people the demo country has.
    #[arg(long, value_name = "N")]
    citizens: Option<u64>,
    /// Seed of the generator: the same seed gives the same country.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Reference date of the demo country (YYYY-MM-DD). Default: today in Taiwan.
    #[arg(long, value_name = "DATE")]
    as_of: Option<String>,
    /// Delete the demo database and build it again.
    #[arg(long)]
    fresh: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// What to serve: `all` (the whole platform, the default) or `gateway` (only the exchange
    /// gateway of `exchange.gateway_member`, configured from the directory).
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check the configuration and print the effective values (secrets masked) with their sources.
    Check,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time to ready, idle memory, and the time to seed a large demo country.
    Startup(civitas::bench::StartupArgs),
    /// Durable appends/s, time to a checkpoint, and inclusion proofs/s.
    Ledger(civitas::bench::LedgerArgs),
    /// Password sign-ins/s against the argon2id floor.
    Identity(civitas::bench_identity::IdentityArgs),
    /// Requests/s and added latency through the exchange's gateway against calling the
    /// provider directly; the gateway's memory; a large body streamed through it.
    Exchange(civitas::bench_exchange::ExchangeArgs),
    /// Consent decisions/s and their latency with a million consent records; MyData releases
    /// against the same registry read without consent checks or logging.
    Consent(civitas::bench_consent::ConsentArgs),
    /// Notify e-mails accepted/s through the v2 API against a bare endpoint with the same
    /// authentication and JSON checks; e-mails delivered/s into a local SMTP server.
    Notify(civitas::bench_notify::NotifyArgs),
    /// "A baby is born" applications/s through the API against the same submission written
    /// straight to the database; the caseworker's queue page with 100,000 open cases.
    Services(civitas::bench_services::ServicesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("civitas: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(global: &Global, demo: Option<&DemoArgs>, role: Option<String>) -> Result<Resolved> {
    let file_path = global
        .config
        .clone()
        .or_else(|| std::env::var_os("CIVITAS_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let p = PathBuf::from("civitas.toml");
            p.exists().then_some(p)
        });
    let file = match file_path {
        Some(p) => {
            let text = std::fs::read_to_string(&p).map_err(|e| {
                anyhow::anyhow!("cannot read configuration file {}: {e}", p.display())
            })?;
            Some((p, text))
        }
        None => None,
    };
    let mut flags: Vec<(&'static str, String, &'static str)> = Vec::new();
    let mut flag = |key, value: &Option<String>, name| {
        if let Some(v) = value {
            flags.push((key, v.clone(), name));
        }
    };
    flag("data_dir", &global.data, "--data");
    flag("database", &global.database, "--database");
    flag("listen", &global.listen, "--listen");
    flag("log_format", &global.log_format, "--log-format");
    flag("log_level", &global.log_level, "--log-level");
    flag("role", &role, "--role");
    if let Some(d) = demo {
        flag(
            "demo.citizens",
            &d.citizens.map(|n| n.to_string()),
            "--citizens",
        );
        flag("demo.seed", &d.seed.map(|n| n.to_string()), "--seed");
        flag("demo.as_of", &d.as_of, "--as-of");
    }
    let layers = Layers {
        file,
        env: std::env::vars().collect(),
        flags,
    };
    Ok(layers.resolve()?)
}

/// An operator's command says what it did on standard output; its logs show only warnings
/// and errors unless a log level was configured.
fn quiet(mut config: Config, entries: &[Entry]) -> Config {
    if entries
        .iter()
        .any(|(k, _, s)| *k == "log_level" && *s == civitas_core::config::Source::Default)
    {
        config.log_level = "warn".into();
    }
    config
}

fn init_logging(config: &Config) {
    // PostgreSQL notices ("relation already exists, skipping") are not worth an operator's
    // attention unless asked for.
    let directives = if config.log_level.contains("sqlx") {
        config.log_level.clone()
    } else {
        format!("{},sqlx=warn", config.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(cli: Cli) -> Result<()> {
    let demo_args = match &cli.command {
        Command::Demo(a) | Command::Seed(a) => Some(a),
        _ => None,
    };
    let role = match &cli.command {
        Command::Serve(a) => a.role.clone(),
        _ => None,
    };
    let resolved = load_config(&cli.global, demo_args, role)?;
    let config = resolved.config.clone();
    if matches!(cli.command, Command::Bench(_)) {
        // Warnings and errors of the servers a benchmark runs, or what --log-level asks.
        init_logging(&quiet(config.clone(), &resolved.entries));
    }
    // Made only by the commands that need one (a benchmark makes its own).
    let workers = config.workers;
    let rt = || civitas::runtime(workers).context("cannot start the async runtime");
    match cli.command {
        Command::Config(ConfigCommand::Check) => config_check(&resolved),
        Command::Bench(BenchCommand::Startup(args)) => civitas::bench::startup(&args),
        Command::Bench(BenchCommand::Ledger(args)) => civitas::bench::ledger(&args),
        Command::Bench(BenchCommand::Identity(args)) => civitas::bench_identity::identity(&args),
        Command::Bench(BenchCommand::Exchange(args)) => civitas::bench_exchange::exchange(&args),
        Command::Bench(BenchCommand::Consent(args)) => civitas::bench_consent::consent(&args),
        Command::Bench(BenchCommand::Notify(args)) => civitas::bench_notify::notify(&args),
        Command::Bench(BenchCommand::Services(args)) => civitas::bench_services::services(&args),
        Command::Demo(args) => {
            init_logging(&config);
            rt()?.block_on(demo(config, &resolved.entries, args.fresh))
        }
        Command::Seed(args) => {
            init_logging(&config);
            rt()?.block_on(seed(config, &resolved.entries, args.fresh))
        }
        Command::Serve(_) => {
            init_logging(&config);
            rt()?.block_on(serve(config, &resolved.entries))
        }
        Command::Migrate => {
            init_logging(&config);
            rt()?.block_on(migrate(config))
        }
        Command::Ledger(cmd) => {
            init_logging(&config);
            rt()?.block_on(civitas::ledger_cli::run(cmd, &config))
        }
        Command::Oidc(cmd) => {
            init_logging(&quiet(config.clone(), &resolved.entries));
            rt()?.block_on(civitas::oidc_cli::run(cmd, &config))
        }
        Command::Exchange(cmd) => {
            init_logging(&quiet(config.clone(), &resolved.entries));
            rt()?.block_on(civitas::exchange_cli::run(cmd, &config))
        }
        Command::Notify(cmd) => {
            init_logging(&quiet(config.clone(), &resolved.entries));
            rt()?.block_on(civitas::notify_cli::run(cmd, &config))
        }
    }
}

fn describe(seeded: &Seeded) -> String {
    match seeded {
        Seeded::Reused(s) => format!(
            "Using the demo country already in the database: {} people, seed {}, as of {} (--fresh rebuilds it).",
            s.people, s.seed, s.as_of
        ),
        Seeded::Built(s, secs) => format!(
            "Built the demo country in {secs:.1} s: {} people in {} households, {} businesses, {} agencies (seed {}, as of {}).",
            s.people, s.households, s.businesses, s.agencies, s.seed, s.as_of
        ),
    }
}

async fn demo(mut config: Config, entries: &[Entry], fresh: bool) -> Result<()> {
    // SIGTERM and Ctrl-C are heard from the start (see `shutdown_signal`).
    let stop = civitas::shutdown_signal();
    // The demo keeps its messages (registration codes) in the development mail sink unless
    // the configuration says otherwise.
    if entries.iter().any(|(k, _, s)| {
        *k == "identity.dev_mail_sink" && *s == civitas_core::config::Source::Default
    }) {
        config.dev_mail_sink = true;
    }
    // Bind first: a taken port should fail before minutes of seeding.
    let listener = bind(&mut config).await?;
    let (running, seeded) = civitas::demo::prepare(&config, entries, fresh, false).await?;
    println!("{}", describe(&seeded));
    println!(
        "Demo sign-ins: staff like caseworker.1@hro.gov.example, and featured citizens by identification number, all with the password {}. Codes sent to citizens are kept in the development mail sink: /dev/mail.",
        civitas::demo::DEMO_PASSWORD
    );
    announce(&config, &running.db);
    civitas::serve(listener, running, config, stop).await
}

async fn seed(config: Config, entries: &[Entry], fresh: bool) -> Result<()> {
    let (running, seeded) = civitas::demo::prepare(&config, entries, fresh, false).await?;
    println!("{}", describe(&seeded));
    // Let the last events reach a published checkpoint before the process ends.
    if let Ok(size) = running.ledger.checkpoint().await.map(|c| c.size) {
        let _ = running.ledger.wait_for_checkpoint(size.max(1) - 1).await;
    }
    running.db.close().await;
    Ok(())
}

async fn serve(mut config: Config, entries: &[Entry]) -> Result<()> {
    // SIGTERM and Ctrl-C are heard from the start (see `shutdown_signal`).
    let stop = civitas::shutdown_signal();
    let listener = bind(&mut config).await?;
    if let Some(settings) = config.exchange_gateway.as_mut() {
        let peers = civitas::bind(settings.listen).await?;
        settings.listen = peers.local_addr()?;
        let said = format!(
            "Civitas gateway of {} takes calls from other gateways at https://{}",
            settings.member, settings.listen
        );
        let running = civitas::start(&config, entries).await?;
        println!("{said}");
        announce(&config, &running.db);
        return civitas::serve_gateway(listener, peers, running, config, stop).await;
    }
    let running = civitas::start(&config, entries).await?;
    announce(&config, &running.db);
    civitas::serve(listener, running, config, stop).await
}

/// Binds the listening socket. Given port 0, the process takes the port the system chose as
/// its own, so its address (the issuer, the origin forms must come from) is the real one.
async fn bind(config: &mut Config) -> Result<tokio::net::TcpListener> {
    let listener = civitas::bind(config.listen).await?;
    if config.listen.port() == 0 {
        config.listen = listener.local_addr()?;
    }
    Ok(listener)
}

fn announce(config: &Config, db: &civitas_store::Db) {
    let url = config.base_url();
    println!(
        "Civitas is running on {} at {url}/  (Ctrl+C stops it)",
        db.engine().name()
    );
    tracing::info!(url = %url, database = db.engine().name(), "listening");
}

async fn migrate(config: Config) -> Result<()> {
    let db = civitas::open_database(&config).await?;
    let applied = civitas_store::migrate(&db, civitas::COMPONENTS).await?;
    if applied.is_empty() {
        println!("The {} database schema is up to date.", db.engine().name());
    }
    for (component, version, name) in &applied {
        println!("applied {component} v{version}: {name}");
    }
    if !applied.is_empty() {
        let (ledger, _) = civitas::open_ledger(&db, &config).await?;
        civitas::record_migrations(&ledger, civitas::OPERATOR_CLI, &applied).await?;
    }
    db.close().await;
    Ok(())
}

fn config_check(resolved: &Resolved) -> Result<()> {
    let config = &resolved.config;
    if config.database.is_none() {
        check_data_dir(&config.data_dir)?;
    }
    // Free the port again at once: this only checks that `serve` could take it.
    std::net::TcpListener::bind(config.listen).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "port {} on {} is already in use by another program; choose another with --listen",
            config.listen.port(),
            config.listen.ip()
        ),
        _ => anyhow::anyhow!("cannot listen on {}: {e}", config.listen),
    })?;
    let width = resolved
        .entries
        .iter()
        .map(|(k, _, _)| k.len())
        .max()
        .unwrap_or(0);
    for (key, value, source) in &resolved.entries {
        let shown = if value.is_empty() {
            "(unset)"
        } else {
            value.as_str()
        };
        println!("{key:<width$}  {shown}    [{source}]");
    }
    println!("The configuration is valid.");
    Ok(())
}

/// Checks, without creating anything, that the data folder exists and is writable, or that
/// the nearest existing parent is writable so it can be created.
fn check_data_dir(dir: &std::path::Path) -> Result<()> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p.to_path_buf(),
            _ => {
                probe = PathBuf::from(".");
                break;
            }
        }
    }
    if !probe.is_dir() {
        anyhow::bail!(
            "the data folder {} cannot be created: {} is not a folder",
            dir.display(),
            probe.display()
        );
    }
    let test = probe.join(format!(".civitas-check-{}", std::process::id()));
    std::fs::write(&test, b"")
        .map_err(|e| anyhow::anyhow!("the data folder {} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(test);
    Ok(())
}
